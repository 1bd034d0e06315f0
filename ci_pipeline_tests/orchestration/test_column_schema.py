"""Every table asset carries Dagster's native row count and column schema, recorded once by the lake IO manager."""

from __future__ import annotations

import dagster as dg
import yaml

from ci_pipeline.config import load_config
from ci_pipeline.defs import build_definitions


def test_ingest_and_unify_tables_have_a_column_schema_and_row_count(tmp_path):
    (tmp_path / "contacts.csv").write_text(
        "contact_id,first_name,last_name,email,birth_date,score\n"
        "c1,Ann,Lee,ann@x.example,1980-01-02,7\n"
        "c2,Ann,Lee,ann@x.example,1980-01-02,8\n"
        "c3,Bob,Stone,bob@x.example,1975-05-06,\n"
    )
    document = {
        "lake": {"url": "lake"},
        "sources": {
            "crm": {
                "owner": "team:crm",
                "tables": {
                    "contacts": {
                        "format": "csv",
                        "path": "contacts.csv",
                        "primary_key": "contact_id",
                        "columns": {"birth_date": "date", "score": "int64"},
                    }
                },
            }
        },
        "unify": {
            "tables": [
                {
                    "source": "crm",
                    "table": "contacts",
                    "columns": {"first_name": "first_name", "last_name": "last_name", "email": "email"},
                    "dedup": {"rules": [{"name": "same_email", "conditions": [{"field": "email"}]}]},
                }
            ]
        },
        "publish": {"sink": {"kind": "none"}},
    }
    (tmp_path / "ci_pipeline.yaml").write_text(yaml.safe_dump(document))
    defs = build_definitions(load_config(tmp_path / "ci_pipeline.yaml"))
    result = dg.materialize(
        list(defs.assets),
        resources=defs.resources,
        selection=dg.AssetSelection.groups("ingest", "unify"),
    )

    def metadata(key: list[str]) -> dict:
        events = [e for e in result.get_asset_materialization_events() if e.asset_key == dg.AssetKey(key)]
        return events[-1].materialization.metadata

    contacts = metadata(["crm", "contacts"])
    assert contacts["dagster/row_count"].value == 3
    columns = {c.name: c.type for c in contacts["dagster/column_schema"].schema.columns}
    assert list(columns)[:2] == ["contact_id", "first_name"]
    assert columns["birth_date"] == "datetime64[ns]" and columns["score"] == "Int64"
    assert columns["first_name"] == "string"

    profile = metadata(["unify", "customer_profile"])
    assert profile["dagster/row_count"].value == 2
    profile_columns = [c.name for c in profile["dagster/column_schema"].schema.columns]
    assert profile_columns[0] == "CustomerId" and "Email" in profile_columns
    # Every table the run stored has both entries, the quarantine table (no rows) included.
    for event in result.get_asset_materialization_events():
        stored = event.materialization.metadata
        assert {"dagster/row_count", "dagster/column_schema"} <= set(stored), event.asset_key
