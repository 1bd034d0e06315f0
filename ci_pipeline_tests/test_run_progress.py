"""`ci-pipeline run` prints each asset as its step starts and as it is materialised, before the summary."""

from __future__ import annotations

import re

import pytest

from ci_pipeline.cli import main
from ci_pipeline_tests.publish.test_end_to_end import CONFIG, CONTACTS, CUSTOMERS

START = re.compile(r"^\[\d\d:\d\d:\d\d\] start (.+)$")
DONE = re.compile(r"^\[\d\d:\d\d:\d\d\] done  (\S+)(?: ([\d,]+) rows)? (\d+\.\d) s$")


@pytest.mark.slow
def test_run_prints_every_asset_when_it_starts_and_ends_with_rows_and_seconds(tmp_path, capsys):
    (tmp_path / "ci_pipeline.yaml").write_text(CONFIG)
    (tmp_path / "contacts.csv").write_text(CONTACTS)
    (tmp_path / "customers.csv").write_text(CUSTOMERS)
    assert main(["--config", str(tmp_path / "ci_pipeline.yaml"), "run"]) == 0
    out = capsys.readouterr().out.splitlines()
    summary = out.index(next(line for line in out if line.startswith("asset ")))
    started = {a: i for i, line in enumerate(out) if START.match(line) for a in START.match(line)[1].split(", ")}
    done = {DONE.match(line)[1]: (i, DONE.match(line)) for i, line in enumerate(out) if DONE.match(line)}
    table = {
        line.split()[0]: line.split()[1] if len(line.split()) == 4 else None
        for line in out[summary + 1 : out.index("", summary)]
    }
    assert {"crm/contacts", "unify/customer_profile", "publish/sink_alternate_key"} <= set(table)
    # Every asset of the summary was announced when its step started, then when it was stored: with the same row
    # count, and all of it while the run went on, before the summary.
    assert set(done) == set(table) and set(started) == set(table)
    for asset, rows in table.items():
        line, match = done[asset]
        assert started[asset] < line < summary
        assert match[2] == rows
    assert done["unify/customer_profile"][1][2] == "3" and done["publish/sink_alternate_key"][1][2] == "4"


def test_a_run_stopped_by_a_signal_is_told_as_interrupted_not_as_a_failure_before_any_step():
    from types import SimpleNamespace

    from dagster._utils.error import SerializableErrorInfo

    from ci_pipeline.commands.run import interrupted

    def run_failure(cls_name, cause=None):
        error = SerializableErrorInfo("stopped", [], cls_name, cause)
        return SimpleNamespace(is_run_failure=True, event_specific_data=SimpleNamespace(error=error))

    step = SimpleNamespace(is_run_failure=False, event_specific_data=None)
    assert interrupted([step, run_failure("DagsterExecutionInterruptedError")])
    assert not interrupted(
        [run_failure("DagsterExecutionStepExecutionError", run_failure("x").event_specific_data.error)]
    )
    assert not interrupted([run_failure("DagsterExecutionStepExecutionError")])
    wrapped = SerializableErrorInfo("stopped", [], "DagsterExecutionInterruptedError")
    assert interrupted([run_failure("DagsterUserCodeProcessError", wrapped)])
