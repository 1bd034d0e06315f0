"""A small project for orchestration tests: two sources and stand-in stage assets with the contract's keys."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pandas as pd
import pytest
import yaml

from ci_pipeline.config import load_config
from ci_pipeline.defs import orchestration
from ci_pipeline.defs.resources import LakeResource, shared_resources
from ci_pipeline.orchestration.refresh import table_fingerprint


def write_project(folder: Path, orchestration_section: dict | None = None, lake: dict | None = None, **paths) -> Path:
    """Write a configuration with sources crm (one CSV file) and shop (a folder of Parquet files)."""
    (folder / "crm").mkdir(parents=True, exist_ok=True)
    (folder / "shop" / "orders").mkdir(parents=True, exist_ok=True)
    config = {
        "name": "orchestration_test",
        "lake": lake or {"url": "lake"},
        "sources": {
            "crm": {
                "owner": "crm-team",
                "tables": {
                    "contacts": {
                        "format": "csv",
                        "path": paths.get("contacts", "crm/contacts.csv"),
                        "primary_key": "id",
                    }
                },
            },
            "shop": {
                "owner": "shop-team",
                "tables": {
                    "orders": {"format": "parquet", "path": paths.get("orders", "shop/orders"), "primary_key": "id"}
                },
            },
        },
    }
    if orchestration_section is not None:
        config["orchestration"] = orchestration_section
    file = folder / "ci_pipeline.yaml"
    file.write_text(yaml.safe_dump(config, sort_keys=False))
    return file


def stage_definitions(config, with_unify: bool = True, with_publish: bool = True) -> dg.Definitions:
    """Stand-ins for the stages' assets, with the keys and groups of the contract between stages."""

    @dg.multi_asset(
        outs={
            "contacts": dg.AssetOut(key=["crm", "contacts"]),
            "corrupt": dg.AssetOut(key=["crm", "contacts_corrupt"]),
        },
        group_name="ingest",
    )
    def crm_contacts(lake: LakeResource):
        # Versioned like the real ingest assets: by the fingerprint of the table's files and settings.
        version = dg.DataVersion(table_fingerprint(lake.get_lake(), config, "crm", "contacts"))
        yield dg.Output(pd.DataFrame({"id": ["1", "2"]}), output_name="contacts", data_version=version)
        yield dg.Output(
            pd.DataFrame({"id": pd.Series([], dtype="string")}), output_name="corrupt", data_version=version
        )

    @dg.asset(key=["shop", "orders"], group_name="ingest")
    def shop_orders(lake: LakeResource):
        version = dg.DataVersion(table_fingerprint(lake.get_lake(), config, "shop", "orders"))
        return dg.Output(pd.DataFrame({"id": ["o1"]}), data_version=version)

    assets = [crm_contacts, shop_orders]
    if with_unify:

        @dg.asset(key=["unify", "match_pairs"], group_name="unify", deps=[["crm", "contacts"], ["shop", "orders"]])
        def match_pairs() -> pd.DataFrame:
            return pd.DataFrame({"a": ["1"], "b": ["o1"]})

        @dg.asset(key=["unify", "customer_profile"], group_name="unify", deps=[["unify", "match_pairs"]])
        def customer_profile() -> pd.DataFrame:
            return pd.DataFrame({"CustomerId": ["c1"]})

        assets += [match_pairs, customer_profile]
        if with_publish:

            @dg.asset(key=["publish", "customer"], group_name="publish", deps=[["unify", "customer_profile"]])
            def published_customer() -> pd.DataFrame:
                return pd.DataFrame({"CustomerId": ["c1"]})

            assets.append(published_customer)
    return dg.Definitions(assets=assets, resources=shared_resources(config))


def build_project(config, **kwargs) -> dg.Definitions:
    return orchestration.build(config, stage_definitions(config, **kwargs))


@pytest.fixture
def project(tmp_path):
    """(folder, config, definitions) for the default project with a nightly refresh in Europe/Amsterdam."""
    file = write_project(tmp_path, {"timezone": "Europe/Amsterdam", "refresh": {"at": "01:00"}})
    config = load_config(file)
    return tmp_path, config, build_project(config)
