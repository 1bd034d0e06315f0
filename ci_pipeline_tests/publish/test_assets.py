"""Publish assets via dagster.materialize: sink tables downstream of their inputs, metadata, exports, capacity."""

from __future__ import annotations

import sqlite3
from types import SimpleNamespace

import dagster as dg
import pandas as pd

from ci_pipeline import outputs
from ci_pipeline.config import load_config
from ci_pipeline.config.publish import PublishConfig
from ci_pipeline.config.unify import UnifyConfig
from ci_pipeline.dataverse import prepare
from ci_pipeline.dataverse.sqlite import SqliteSink
from ci_pipeline.defs import available_tables, publish
from ci_pipeline.defs.resources import DataverseSinkResource, SqliteSinkResource, shared_resources, sink_resource
from ci_pipeline.export import query
from ci_pipeline.lake import Lake

CONFIG = """
name: contoso
sources:
  crm:
    owner: me
    tables:
      contacts: {format: csv, path: c.csv, primary_key: id}
publish:
  exports:
    - name: warehouse
      rows_per_part: 2
"""


def load(tmp_path):
    (tmp_path / "ci_pipeline.yaml").write_text(CONFIG)
    config = load_config(tmp_path / "ci_pipeline.yaml")
    # The unify section's own settings do not matter here: only that unification is configured.
    return config.model_copy(update={"unify": UnifyConfig.model_construct()})


def upstream_assets(customers: list[str]):
    @dg.asset(key=["unify", "customer_profile"])
    def customer_profile() -> pd.DataFrame:
        return pd.DataFrame({"CustomerId": customers, "FullName": [f"N {c}" for c in customers]})

    @dg.asset(key=["unify", "alternate_key"])
    def alternate_key() -> pd.DataFrame:
        content = pd.DataFrame(
            {
                "DataSourceName": "crm",
                "EntityName": "contacts",
                "AlternateValue": [f"k-{c}" for c in customers],
                "KeyRing": "[]",
                "CustomerId": customers,
            }
        )
        return outputs.build("AlternateKey", content)

    return [customer_profile, alternate_key]


def run(config, customers):
    defs = publish.build(config, available_tables(config))
    assets = [*upstream_assets(customers), *defs.assets]
    result = dg.materialize(assets, resources=shared_resources(config))
    assert result.success
    return {
        e.asset_key.to_user_string(): e.materialization.metadata
        for e in result.get_asset_materialization_events()
        if e.asset_key.path[0] == "publish"
    }


def test_available_tables_follow_the_configured_sections():
    bare = SimpleNamespace(
        unify=None,
        activities=SimpleNamespace(tables={}),
        measures=SimpleNamespace(attributes={}),
        predictions=None,
        enrich=SimpleNamespace(enrichments={}),
        segments=SimpleNamespace(definitions={}),
    )
    assert available_tables(bare) == {}
    full = SimpleNamespace(
        unify=object(),
        activities=SimpleNamespace(tables={"orders": 1}),
        measures=SimpleNamespace(attributes={"ltv": 1}),
        predictions=object(),
        enrich=SimpleNamespace(enrichments={"brands": 1}),
        segments=SimpleNamespace(definitions={"vip": 1}),
    )
    assert set(available_tables(full)) == {
        "CustomerProfile",
        "AlternateKey",
        "UnifiedActivity",
        "CustomerMeasure",
        "Enrichment",
        "Prediction",
        "SegmentMembership",
    }
    assert available_tables(full)["UnifiedActivity"] == dg.AssetKey(["activities", "unified_activity"])


def test_publish_assets_fill_the_sink_export_and_report(tmp_path):
    config = load(tmp_path)
    defs = publish.build(config, available_tables(config))
    keys = {a.key for a in defs.assets}
    assert publish.sink_asset_key("CustomerProfile") in keys and publish.CAPACITY_KEY in keys
    assert publish.export_asset_keys(config) == [dg.AssetKey(["publish", "export_warehouse"])]
    graph = dg.Definitions(
        assets=[*upstream_assets(["C1"]), *defs.assets], resources=shared_resources(config)
    ).resolve_asset_graph()
    assert graph.get(publish.sink_asset_key("AlternateKey")).parent_keys == {dg.AssetKey(["unify", "alternate_key"])}
    # Each produced table's data files are written as soon as the table is made; the export writes the metadata.
    ahead = publish.export_table_asset_key("warehouse", "AlternateKey")
    assert ahead == dg.AssetKey(["publish", "alternate_key_to_warehouse"])
    assert graph.get(ahead).parent_keys == {dg.AssetKey(["unify", "alternate_key"])}
    assert graph.get(dg.AssetKey(["publish", "export_warehouse"])).parent_keys == {
        ahead,
        publish.export_table_asset_key("warehouse", "CustomerProfile"),
    }

    first = run(config, ["C1", "C2", "C3"])
    profile = first["publish/sink_customer_profile"]
    assert profile["rows_upserted"].value == 3 and profile["rows_deleted"].value == 0
    assert first["publish/sink_enrichment"]["rows"].value == 0
    assert first["publish/sink_capacity"]["profiles"].value == 3
    assert first["publish/export_warehouse"]["rows"].value == 6
    assert first["publish/export_warehouse"]["tables_written_earlier"].value == 2
    assert first["publish/alternate_key_to_warehouse"]["dagster/row_count"].value == 3
    assert first["publish/alternate_key_to_warehouse"]["files"].value == 2
    sink_file = tmp_path / "sink.sqlite"
    tables = {r[0] for r in sqlite3.connect(sink_file).execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert len(tables) == 7 and "msdynci_segmentmembership" in tables

    second = run(config, ["C1", "C3"])
    assert second["publish/sink_customer_profile"]["rows_deleted"].value == 1
    assert second["publish/sink_customer_profile"]["rows_unchanged"].value == 2
    with SqliteSink(sink_file) as sink:
        assert sorted(sink.read("msdynci_alternatekey")["msdynci_customerid"]) == ["C1", "C3"]
    lake = config_lake(config)
    assert query(lake, "SELECT count(*) AS n FROM AlternateKey", ["warehouse"])["n"].iloc[0] == 2
    snapshot = second["publish/export_warehouse"]["snapshot"].value
    assert len(snapshot.split("/")) == 4


def config_lake(config):
    from ci_pipeline.lake import Lake

    return Lake.from_config(config.lake, config.base_dir)


def test_the_sink_resource_follows_publish_sink_kind(tmp_path):
    config = load(tmp_path)
    sqlite = sink_resource(config)
    assert isinstance(sqlite, SqliteSinkResource) and sqlite.kind == "sqlite"
    with sqlite.open(Lake.local(tmp_path / "lake"), run_id="r1") as sink:
        sink.publish(prepare("Prediction", None))
        assert "msdynci_prediction" in sink.usage()
    assert (tmp_path / "sink.sqlite").exists()

    dataverse = {"kind": "dataverse", "dataverse": {"url": "https://contoso.crm.dynamics.com"}}
    remote = config.model_copy(update={"publish": PublishConfig.model_validate({"sink": dataverse})})
    chosen = sink_resource(remote)
    assert isinstance(chosen, DataverseSinkResource) and chosen.kind == "dataverse"
    assert shared_resources(remote)["sink"] is not None

    nowhere = config.model_copy(update={"publish": PublishConfig.model_validate({"sink": {"kind": "none"}})})
    assert sink_resource(nowhere) is None and "sink" not in shared_resources(nowhere)
    assert publish.build(nowhere, available_tables(nowhere)).assets == []
