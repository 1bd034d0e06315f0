"""Ingestion assets materialised with the real lake IO manager: outputs, metadata, checks and drift."""

from __future__ import annotations

import dagster as dg
import pandas as pd
import pytest

from ci_pipeline.defs import ingest as ingest_defs
from ci_pipeline.defs.resources import shared_resources
from ci_pipeline.errors import UserError
from ci_pipeline_tests.ingest.conftest import checks, materialize, metadata, write_config


def _graph(config):
    defs = dg.Definitions.merge(ingest_defs.build(config), dg.Definitions(resources=shared_resources(config)))
    return defs.resolve_asset_graph()


TABLE = {"t": {"format": "csv", "path": "t.csv", "primary_key": "id", "columns": {"n": "int64"}}}


def test_asset_keys_group_kinds_owners_and_descriptions(tmp_path):
    (tmp_path / "t.csv").write_text("id,n\n1,2\n")
    graph = _graph(write_config(tmp_path, TABLE, owner="team:sales_ops"))
    data, corrupt = dg.AssetKey(["src", "t"]), dg.AssetKey(["src", "t_corrupt"])
    assert set(graph.get_all_asset_keys()) == {data, corrupt}
    node = graph.get(data)
    assert node.group_name == "ingest"
    assert node.owners == ["team:sales_ops"]
    assert {"csv", "pandas"} <= set(node.kinds)
    assert node.description.startswith("One row per t record of src by id")
    assert graph.get(corrupt).description.startswith("One row per src.t input row that was quarantined")
    names = {c.name for c in graph.asset_check_keys}
    assert names == {"rows_balance", "quarantine_severity", "schema_drift"}
    # an owner that is neither an e-mail nor team:name is kept as metadata only
    assert _graph(write_config(tmp_path, TABLE, owner="Sales Ops")).get(data).owners == []


def test_a_table_named_like_another_tables_quarantine_is_refused_by_name(tmp_path):
    # The quarantine of table t is src/t_corrupt: a table of that name would be a second asset with the same key.
    tables = {**TABLE, "t_corrupt": {**TABLE["t"], "path": "t2.csv"}}
    with pytest.raises(UserError, match=r"sources\.src\.tables\.t_corrupt: .*quarantine asset of table t .*rename"):
        ingest_defs.build(write_config(tmp_path, tables))


def test_materialise_stores_data_and_quarantine_with_metadata_and_checks(tmp_path):
    (tmp_path / "t.csv").write_text("id,n\n2,20\n1,10\n3,x\n1,11\n")
    result = materialize(write_config(tmp_path, TABLE))
    assert result.success
    lake = tmp_path / "lake" / "ci_pipeline" / "src"
    data = pd.read_parquet(lake / "t.parquet")
    assert data["id"].tolist() == ["1", "2"] and data["n"].tolist() == [10, 20]
    corrupt = pd.read_parquet(lake / "t_corrupt.parquet")
    assert corrupt["kind"].tolist() == ["malformed_value", "duplicate_key"]
    assert corrupt["raw"].tolist() == ["3,x", "1,11"]
    meta = metadata(result, ["src", "t"])
    assert (meta["rows_read"], meta["rows_accepted"], meta["rows_quarantined"]) == (4, 2, 2)
    profiled = {row.data["column"]: row.data for row in meta["profile"].records}
    assert (profiled["n"]["type"], profiled["n"]["null %"], profiled["n"]["distinct"]) == ("Int64", 0.0, 2)
    assert meta["dagster/row_count"] == 2
    quarantine = metadata(result, ["src", "t_corrupt"])
    assert {row.data["reason"]: row.data["rows"] for row in quarantine["reasons"].records} == {
        "duplicate_key": 1,
        "malformed_value": 1,
    }
    assert (quarantine["quarantined duplicate_key"], quarantine["quarantined malformed_value"]) == (1, 1)
    evaluations = checks(result)
    assert evaluations["rows_balance"].passed
    assert not evaluations["quarantine_severity"].passed
    assert evaluations["quarantine_severity"].severity == dg.AssetCheckSeverity.WARN
    assert evaluations["schema_drift"].passed


def test_error_severity_fails_the_blocking_check(tmp_path):
    (tmp_path / "t.csv").write_text("id,n\n1,10\n1,11\n")
    table = {"t": {**TABLE["t"], "bad_rows": "error"}}
    result = materialize(write_config(tmp_path, table))
    evaluation = checks(result)["quarantine_severity"]
    assert not evaluation.passed and evaluation.severity == dg.AssetCheckSeverity.ERROR
    assert not result.success  # a failed blocking check stops the run before anything downstream


def test_schema_drift_against_the_previous_run(tmp_path):
    (tmp_path / "t.csv").write_text("id,n,old\n1,10,a\n")
    config = write_config(tmp_path, TABLE)
    first = materialize(config)
    assert checks(first)["schema_drift"].passed
    assert "baseline" in metadata(first, ["src", "t"])["drift"]
    (tmp_path / "t.csv").write_text("id,n,new\n1,10,b\n")
    config = write_config(tmp_path, {"t": {**TABLE["t"], "columns": {"n": "double"}}})
    result = materialize(config)
    evaluation = checks(result)["schema_drift"]
    assert not evaluation.passed and evaluation.severity == dg.AssetCheckSeverity.WARN
    drift = metadata(result, ["src", "t"])["drift"]
    assert "src.t: column 'new' appeared (string)" in drift
    assert "src.t: column 'old' disappeared (was string)" in drift
    assert "src.t: column 'n' changed type from Int64 to float64" in drift
    # The check says the changes itself: the run's summary prints its description.
    assert "src.t: column 'new' appeared (string)" in evaluation.description
    assert "src.t: column 'old' disappeared (was string)" in evaluation.description
    assert checks(materialize(config))["schema_drift"].passed  # the new schema is the baseline now


def test_a_failed_read_leaves_the_stored_output_intact(tmp_path):
    (tmp_path / "t.csv").write_text("id,n\n1,10\n")
    config = write_config(tmp_path, TABLE)
    assert materialize(config).success
    (tmp_path / "t.csv").write_bytes("id,n\n1,10\n2,\xe9\n".encode("latin-1"))
    result = materialize(config)
    assert not result.success
    failure = result.get_step_failure_events()[0].event_specific_data.error
    assert "line 3: byte 0xe9 is not valid utf-8" in failure.to_string()
    assert pd.read_parquet(tmp_path / "lake" / "ci_pipeline" / "src" / "t.parquet")["id"].tolist() == ["1"]
