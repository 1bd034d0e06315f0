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
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["profiles"] == 3 and summary["database_gb"] == pytest.approx(0.00045)
    assert "msdynci_alternatekey" in out


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
