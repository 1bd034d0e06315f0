"""The run's console: a user error is one line naming the assets and the fix; a bug keeps its stack trace."""

from __future__ import annotations

import dagster as dg
import pandas as pd
import pytest

from ci_pipeline.config import load_config
from ci_pipeline.defs import orchestration
from ci_pipeline.defs.resources import shared_resources
from ci_pipeline.errors import ConfigError, UserError
from ci_pipeline_tests.orchestration.conftest import write_project


def run_failing(tmp_path, error: Exception, log_level: str = "INFO") -> dg.ExecuteInProcessResult:
    config = load_config(write_project(tmp_path))

    @dg.multi_asset(
        outs={"contacts": dg.AssetOut(key=["crm", "contacts"]), "corrupt": dg.AssetOut(key=["crm", "corrupt"])},
        group_name="ingest",
        name="ingest_crm__contacts",
    )
    def contacts():
        raise error
        yield pd.DataFrame()  # a generator, like the real ingest assets

    defs = orchestration.build(config, dg.Definitions(assets=[contacts], resources=shared_resources(config)))
    with dg.DagsterInstance.ephemeral() as instance:
        return defs.resolve_job_def("full_refresh").execute_in_process(
            instance=instance,
            raise_on_error=False,
            run_config={"loggers": {"console": {"config": {"log_level": log_level}}}},
        )


def test_a_user_error_is_one_line_naming_the_assets_and_the_fix(tmp_path, capfd):
    result = run_failing(tmp_path, UserError("contacts.csv: column 'id' is missing; fix sources.crm.primary_key"))
    err = capfd.readouterr().err
    assert not result.success
    assert (
        "  crm/contacts, crm/corrupt failed: contacts.csv: column 'id' is missing; fix sources.crm.primary_key" in err
    )
    assert "Stack Trace" not in err and "DagsterExecutionStepExecutionError" not in err
    [failure] = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    message, is_user_error = orchestration.failure_reason(failure.event_specific_data.error)
    assert is_user_error and message == "contacts.csv: column 'id' is missing; fix sources.crm.primary_key"
    # The event log keeps the whole trace for the UI.
    assert failure.event_specific_data.error.cause.stack


def test_a_multi_line_user_error_keeps_every_problem(tmp_path, capfd):
    run_failing(tmp_path, ConfigError("c.yaml", ["sources.crm.owner: Field required", "lake.url: empty"]))
    err = capfd.readouterr().err
    assert "failed: c.yaml: 2 problem(s) in the configuration:\n  - sources.crm.owner" in err
    assert "Stack Trace" not in err


@pytest.mark.parametrize("log_level", ["INFO", "DEBUG"])
def test_a_bug_keeps_its_stack_trace_and_debug_shows_every_trace(tmp_path, capfd, log_level):
    run_failing(tmp_path, KeyError("CustomerId"), log_level)
    err = capfd.readouterr().err
    assert "Stack Trace" in err and "KeyError: 'CustomerId'" in err


def test_debug_shows_the_trace_of_a_user_error(tmp_path, capfd):
    run_failing(tmp_path, UserError("fix it"), "DEBUG")
    err = capfd.readouterr().err
    assert "Stack Trace" in err and "ci_pipeline.errors.UserError: fix it" in err
