"""`ci-pipeline sink show|capacity` and `ci-pipeline sql` over a published project."""

from __future__ import annotations

import json

import pytest

from ci_pipeline.cli import main
from ci_pipeline_tests.publish.test_assets import load, run


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("published")
    config = load(tmp_path)
    run(config, ["C1", "C2", "C3"])
    # The CLI loads the file itself; unification is switched on by the stand-in assets only, which is enough here.
    return str(tmp_path / "ci_pipeline.yaml")


def test_sink_show_filters_by_customer(published, capsys):
    assert main(["--config", published, "sink", "show", "AlternateKey", "--customer", "C2", "--format", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["msdynci_alternatevalue"] for r in rows] == ["k-C2"]
    assert main(["--config", published, "sink", "show", "msdynci_customerprofile"]) == 0
    out = capsys.readouterr().out
    assert "msdynci_fullname" in out and "(3 rows from msdynci_customerprofile" in out


def test_sink_capacity_prints_entitlement_and_usage(published, capsys):
    assert main(["--config", published, "sink", "capacity"]) == 0
    out = capsys.readouterr().out
    assert "msdynci_alternatekey" in out and out.splitlines()[-2].startswith("3 customer profiles entitle 0.000 GB")
    assert "% of the database entitlement." in out and "{" not in out
    assert main(["--config", published, "sink", "capacity", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["profiles"] == 3 and summary["database_gb"] == pytest.approx(0.00045)
    assert summary["tables"]["msdynci_alternatekey"]["rows"] == 3


def test_sink_show_chooses_columns_and_fits_the_terminal(published, capsys, monkeypatch):
    args = ["--config", published, "sink", "show", "CustomerProfile"]
    assert main([*args, "--columns", "fullname,MSDYNCI_CUSTOMERID", "--format", "csv"]) == 0
    header, *rows = capsys.readouterr().out.splitlines()
    assert header == "msdynci_fullname,msdynci_customerid" and sorted(rows) == ["N C1,C1", "N C2,C2", "N C3,C3"]
    assert main([*args, "--columns", "fullname,nope"]) == 2
    err = capsys.readouterr().err
    assert "--columns fullname,nope: no column nope; the columns are" in err and "msdynci_customerid" in err
    monkeypatch.setenv("COLUMNS", "50")
    assert main(args) == 0
    lines = capsys.readouterr().out.splitlines()
    assert max(len(line) for line in lines[:-1]) <= 50 and "(3 rows from msdynci_customerprofile" in lines[-1]


def test_sql_formats_and_errors(published, capsys):
    assert (
        main(["--config", published, "sql", "SELECT CustomerId FROM CustomerProfile ORDER BY 1", "--format", "csv"])
        == 0
    )
    assert capsys.readouterr().out == "CustomerId\nC1\nC2\nC3\n"
    assert (
        main(["--config", published, "sql", "SELECT count(*) AS n FROM warehouse.AlternateKey", "--format", "json"])
        == 0
    )
    assert json.loads(capsys.readouterr().out) == [{"n": 3}]
    # DuckDB sums integers as 128-bit integers; they print as whole numbers, not 6.0.
    query = "SELECT sum(length(CustomerId)) AS s, sum(NULL::INT) AS empty FROM CustomerProfile"
    assert main(["--config", published, "sql", query, "--format", "csv"]) == 0
    assert capsys.readouterr().out == "s,empty\n6,\n"
    assert main(["--config", published, "sql", "SELECT sum(length(CustomerId)) AS s FROM CustomerProfile"]) == 0
    assert capsys.readouterr().out.split() == ["s", "6"]
    # A cell cut to fit says so, and how to see it whole.
    assert main(["--config", published, "sql", "SELECT repeat('x', 60) AS long FROM CustomerProfile LIMIT 1"]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == (
        "(cells longer than 40 characters are cut; --format csv or json prints them whole)"
    )
    assert main(["--config", published, "sql", "SELECT * FROM Missing"]) == 2
    assert "the views are" in capsys.readouterr().err
    assert main(["--config", published, "sink", "show", "Nope"]) == 2
    assert "unknown table" in capsys.readouterr().err


def test_bench_publish_prints_one_json_line_of_figures(capsys):
    assert main(["bench", "publish", "--people", "300", "--concurrency", "2"]) == 0
    figures = json.loads(capsys.readouterr().out.strip())
    assert figures["alternate_keys"] == 600 and figures["webapi_rows"] == 300
    assert figures["webapi_requests"] >= 3 and figures["sqlite_rows_per_second"] > 0


def test_sql_export_option_and_unknown_export(published, capsys):
    assert (
        main(["--config", published, "sql", "SELECT count(*) AS n FROM CustomerProfile", "--export", "warehouse"]) == 0
    )
    assert "3" in capsys.readouterr().out
    assert main(["--config", published, "sql", "SELECT 1", "--export", "nope"]) == 2
    assert "no such export; configured: warehouse" in capsys.readouterr().err
