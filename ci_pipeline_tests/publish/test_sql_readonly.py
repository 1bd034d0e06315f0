"""`ci-pipeline sql` is read-only over the lake: every lake table is queryable, nothing else can be read, nothing
can be written, no extension loaded, no setting changed; on a local folder and on Azurite."""

from __future__ import annotations

import logging
import os
from datetime import UTC, datetime

import duckdb
import pandas as pd
import pytest
import yaml

from ci_pipeline.cli import main
from ci_pipeline.errors import UserError
from ci_pipeline.export import connect, query, write_export
from ci_pipeline.lake import Lake

T0 = datetime(2026, 6, 30, 12, 5, tzinfo=UTC)


def fill(lake: Lake) -> None:
    """Two asset tables, a damaged one, a file that is no table, and one CSV export."""
    lake.write_parquet("ci_pipeline/unify/customer_profile.parquet", pd.DataFrame({"CustomerId": ["C1", "C2"]}))
    lake.write_parquet("ci_pipeline/crm/contacts.parquet", pd.DataFrame({"contact_id": ["a", "b", "c"]}))
    lake.write_bytes("ci_pipeline/unify/damaged.parquet", b"not parquet")
    lake.write_bytes("ci_pipeline/notes.txt", b"not a table")
    write_export(lake, "wh", {"CustomerProfile": pd.DataFrame({"CustomerId": ["C1"]})}, T0)


@pytest.fixture
def lake(tmp_path) -> Lake:
    found = Lake.local(tmp_path / "lake")
    fill(found)
    return found


def test_every_lake_table_is_a_view_next_to_the_exports(lake, caplog):
    with caplog.at_level(logging.WARNING):
        views = "SELECT schema_name, view_name FROM duckdb_views() WHERE NOT internal ORDER BY 1, 2"
        tables = query(lake, views, ["wh"])
    assert [tuple(r) for r in tables.itertuples(index=False)] == [
        ("lake", "crm__contacts"),
        ("lake", "unify__customer_profile"),
        ("main", "CustomerProfile"),
        ("wh", "CustomerProfile"),
    ]
    assert "ci_pipeline/unify/damaged.parquet is left out" in caplog.text
    n = query(lake, "SELECT count(*) AS n FROM lake.crm__contacts JOIN lake.unify__customer_profile ON true", [])
    assert n["n"].iloc[0] == 6
    assert query(lake, "SELECT count(*) AS n FROM wh.CustomerProfile", ["wh"])["n"].iloc[0] == 1


def sql_error(lake: Lake, sql: str) -> str:
    with pytest.raises(UserError) as failed:
        query(lake, sql, ["wh"])
    return str(failed.value)


def test_an_error_keeps_duckdbs_hint_and_names_the_columns_of_the_tables_read(lake):
    column = sql_error(lake, "SELECT Customerid_ FROM CustomerProfile JOIN lake.crm__contacts ON true")
    assert 'Candidate bindings: "CustomerId"' in column
    assert "CustomerProfile has the columns CustomerId; lake.crm__contacts has the columns contact_id" in column
    assert "the views are" not in column
    # A near miss of a table is named, without every view.
    table = sql_error(lake, "SELECT count(*) FROM CustomerProfiles")
    assert table.endswith("does not exist! Did you mean CustomerProfile?")
    assert sql_error(lake, "SELECT 1 FROM lake.crm__contact").endswith("Did you mean lake.crm__contacts?")
    # A name like no view: DuckDB's guess (a system table) is no help, the views are.
    unknown = sql_error(lake, "SELECT 1 FROM Qwertyuiop")
    assert (
        "Did you mean" not in unknown
        and "the views are lake.crm__contacts, lake.unify__customer_profile, CustomerProfile" in unknown
    )
    # Errors of another kind are DuckDB's first line alone.
    assert sql_error(lake, "SELECT CAST('a' AS INT)") == "sql: Conversion Error: Could not convert string 'a' to INT32"


@pytest.mark.parametrize(
    ("sql", "kind"),
    [
        ("COPY (SELECT 1) TO '{outside}/copied.csv'", "COPY"),
        ("COPY (SELECT 1) TO '{lake}/ci_pipeline/copied.csv'", "COPY"),
        ("COPY lake.crm__contacts TO '{lake}/ci_pipeline/crm/contacts.parquet'", "COPY"),
        ("EXPORT DATABASE '{lake}/dump'", "EXPORT"),
        ("ATTACH '{lake}/attached.db'", "ATTACH"),
        ("INSTALL httpfs", "LOAD"),
        ("LOAD httpfs", "LOAD"),
        ("SET enable_external_access = true", "SET"),
        ("CREATE TABLE t AS SELECT 1", "CREATE"),
    ],
)
def test_only_a_select_runs(lake, tmp_path, sql, kind):
    before = sorted(lake.find())
    with pytest.raises(UserError, match=f"only SELECT queries run: the lake is read-only here .*a {kind} statement"):
        query(lake, sql.format(outside=tmp_path, lake=lake.root), ["wh"])
    assert sorted(lake.find()) == before and not (tmp_path / "copied.csv").exists()


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT * FROM read_csv('/etc/hostname')",
        "SELECT * FROM read_text('{lake}/ci_pipeline/notes.txt')",
        "SELECT * FROM read_text('{lake}/exports/wh/model.json')",
        "SELECT * FROM read_parquet('{lake}/../outside.parquet')",
        "SELECT * FROM glob('{lake}/*')",
        "SELECT * FROM 'https://example.com/data.csv'",
    ],
)
def test_no_file_but_the_lake_tables_can_be_read(lake, tmp_path, sql):
    pd.DataFrame({"secret": ["x"]}).to_parquet(tmp_path / "outside.parquet")
    with pytest.raises(UserError, match="Permission Error: .*only the lake's tables can be read, through the views"):
        query(lake, sql.format(lake=lake.root), ["wh"])


def test_duckdb_itself_refuses_writes_reads_extensions_and_settings(lake, tmp_path):
    # The connection, without the SELECT-only check in front: DuckDB's own settings hold on their own.
    con = connect(lake, ["wh"])
    refused = [
        f"COPY (SELECT 1) TO '{tmp_path}/copied.csv'",
        f"COPY (SELECT 1) TO '{lake.root}/ci_pipeline/copied.csv'",
        f"ATTACH '{lake.root}/attached.db'",
        "SELECT * FROM read_csv('/etc/hostname')",
        f"SELECT * FROM read_text('{lake.root}/ci_pipeline/notes.txt')",
        "LOAD httpfs",
        "INSTALL httpfs",
    ]
    for sql in refused:
        with pytest.raises(duckdb.PermissionException):
            con.execute(sql)
    for setting in ("enable_external_access = true", "allowed_directories = ['/']", "lock_configuration = false"):
        with pytest.raises(duckdb.InvalidInputException, match="configuration has been locked"):
            con.execute(f"SET {setting}")
    assert con.execute("SELECT count(*) FROM lake.unify__customer_profile").fetchone() == (2,)
    assert not (tmp_path / "copied.csv").exists() and not lake.exists("ci_pipeline/copied.csv")


def test_more_than_one_statement_is_refused(lake):
    with pytest.raises(UserError, match="one query at a time"):
        query(lake, "SELECT 1; COPY (SELECT 1) TO 'x.csv'", ["wh"])


def test_an_export_named_lake_is_a_clear_error(tmp_path):
    lake = Lake.local(tmp_path)
    write_export(lake, "lake", {"CustomerProfile": pd.DataFrame({"CustomerId": ["C1"]})}, T0)
    with pytest.raises(UserError, match="an export named 'lake' would hide the schema"):
        query(lake, "SELECT 1", ["lake"])


def test_cli_queries_lake_tables_without_exports_and_refuses_copy(tmp_path, capsys):
    (tmp_path / "ci_pipeline.yaml").write_text(
        yaml.safe_dump(
            {
                "lake": {"url": "lake"},
                "sources": {
                    "crm": {
                        "owner": "me",
                        "tables": {"contacts": {"format": "csv", "path": "c.csv", "primary_key": "contact_id"}},
                    }
                },
            }
        )
    )
    fill(Lake.local(tmp_path / "lake"))
    config = str(tmp_path / "ci_pipeline.yaml")
    assert main(["--config", config, "sql", "SELECT count(*) AS n FROM lake.crm__contacts", "--format", "csv"]) == 0
    assert capsys.readouterr().out == "n\n3\n"
    assert main(["--config", config, "sql", f"COPY lake.crm__contacts TO '{tmp_path}/out.csv'"]) == 2
    assert "only SELECT queries run" in capsys.readouterr().err and not (tmp_path / "out.csv").exists()
    assert main(["--config", config, "sql", "SELECT * FROM read_csv('/etc/hostname')"]) == 2
    assert "only the lake's tables can be read" in capsys.readouterr().err


@pytest.mark.slow
def test_read_only_sql_on_azurite(azure_container):
    lake = Lake.from_url(f"abfs://{azure_container}/lake", {"connection_string": os.environ["AZURE_TEST_CONNECTION"]})
    fill(lake)
    assert query(lake, "SELECT count(*) AS n FROM lake.crm__contacts", ["wh"])["n"].iloc[0] == 3
    assert query(lake, "SELECT CustomerId FROM CustomerProfile", ["wh"])["CustomerId"].tolist() == ["C1"]
    con = connect(lake, ["wh"])
    with pytest.raises(duckdb.PermissionException):
        con.execute(f"COPY (SELECT 1) TO 'abfs://{lake.root}/ci_pipeline/copied.csv'")
    with pytest.raises(duckdb.PermissionException):
        con.execute(f"SELECT * FROM read_text('abfs://{lake.root}/ci_pipeline/notes.txt')")
    with pytest.raises(duckdb.PermissionException):
        con.execute("SELECT * FROM read_csv('/etc/hostname')")
    assert not lake.exists("ci_pipeline/copied.csv")
    with pytest.raises(UserError, match="only SELECT queries run"):
        query(lake, f"COPY (SELECT 1) TO 'abfs://{lake.root}/ci_pipeline/copied.csv'", ["wh"])


def test_an_output_table_without_an_export_says_where_the_tables_are(lake):
    with pytest.raises(UserError) as caught:
        query(lake, "SELECT count(*) FROM CustomerProfile", [])
    assert "no export is configured (publish.exports): query the lake's tables as lake.<stage>__<table>" in str(
        caught.value
    )
    with pytest.raises(UserError) as caught:
        query(lake, "SELECT count(*) FROM Nope", ["wh"])
    assert "publish.exports" not in str(caught.value)


def test_the_lake_tables_stay_readable_while_an_export_is_not_written_yet(lake):
    # A run that failed before publishing leaves no export: its tables are views of nothing, the lake's are there.
    assert query(lake, "SELECT count(*) AS n FROM lake.crm__contacts", ["wh", "later"])["n"].iloc[0] == 3
    with pytest.raises(UserError) as caught:
        query(lake, "SELECT count(*) FROM later.CustomerProfile", ["wh", "later"])
    assert "export(s) later not written yet (the last run did not publish them): run the pipeline" in str(caught.value)
    # Without a list to say it in, a missing export is still an error of its own.
    with pytest.raises(UserError, match="no export here"):
        connect(lake, ["later"])
