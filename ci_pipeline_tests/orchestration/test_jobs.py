"""Run modes: the jobs exist only for the stages that are configured, and `ci-pipeline run` runs them."""

from __future__ import annotations

from datetime import timedelta

import dagster as dg
import pandas as pd
import pytest
import yaml

from ci_pipeline import cli
from ci_pipeline.config import load_config
from ci_pipeline.defs import build_definitions, launch, orchestration
from ci_pipeline.defs.orchestration import EXECUTOR
from ci_pipeline.defs.resources import shared_resources
from ci_pipeline_tests.conftest import ROOT
from ci_pipeline_tests.orchestration.conftest import build_project, write_project

ALL_JOBS = [
    "full_refresh",
    "incremental_refresh",
    "ingest_crm",
    "ingest_shop",
    "match_only",
    "publish_only",
    "unify_and_downstream",
    "unify_only",
]


def selected(defs: dg.Definitions, job: str) -> list[list[str]]:
    return sorted(key.path for key in defs.resolve_job_def(job).asset_layer.selected_asset_keys)


def test_every_run_mode_selects_its_stage(project):
    _, _, defs = project
    dg.Definitions.validate_loadable(defs)
    assert launch.job_names(defs) == ALL_JOBS
    assert selected(defs, "ingest_crm") == [["crm", "contacts"], ["crm", "contacts_corrupt"]]
    assert selected(defs, "match_only") == [["unify", "match_pairs"]]
    assert selected(defs, "unify_only") == [["unify", "customer_profile"], ["unify", "match_pairs"]]
    assert selected(defs, "unify_and_downstream") == [
        ["publish", "customer"],
        ["unify", "customer_profile"],
        ["unify", "match_pairs"],
    ]
    assert selected(defs, "publish_only") == [["publish", "customer"]]
    assert len(selected(defs, "full_refresh")) == 6
    assert defs.resolve_job_def("full_refresh").tags["ci_pipeline/mode"] == "full"


def test_stages_that_are_not_configured_get_no_jobs(tmp_path):
    config = load_config(write_project(tmp_path, {}))
    defs = build_project(config, with_unify=False)
    dg.Definitions.validate_loadable(defs)
    assert launch.job_names(defs) == ["full_refresh", "incremental_refresh", "ingest_crm", "ingest_shop"]


def test_definitions_without_any_assets_still_load(tmp_path):
    config = load_config(write_project(tmp_path, {"refresh": {"at": "02:00"}}))
    defs = orchestration.build(config, dg.Definitions(resources=shared_resources(config)))
    dg.Definitions.validate_loadable(defs)
    assert [s.name for s in defs.sensors] == ["failure_notification"]
    assert not launch.job_names(defs) and not defs.schedules


def test_the_project_definitions_carry_the_orchestration(tmp_path):
    config = load_config(write_project(tmp_path, {"refresh": {"at": "02:00"}}))
    defs = build_definitions(config)
    dg.Definitions.validate_loadable(defs)
    assert {"full_refresh", "ingest_crm", "ingest_shop"} <= set(launch.job_names(defs))
    assert {s.name for s in defs.sensors} == {"failure_notification", "new_files"}


def test_in_process_executor_by_default_bounded_multiprocess_on_request_and_freshness(project, tmp_path):
    _, _, defs = project
    # The UI's runs execute like `ci-pipeline run`: in the run's process, no process started per step, two steps at
    # a time on threads (one after another with max_concurrent: 1).
    assert defs.resolve_job_def("full_refresh").executor_def.name == "in_process_threads"
    one = load_config(write_project(tmp_path / "one", {"executor": {"kind": "in_process", "max_concurrent": 1}}))
    assert build_project(one).resolve_job_def("full_refresh").executor_def.name == dg.in_process_executor.name
    config = load_config(write_project(tmp_path / "mp", {"executor": {"kind": "multiprocess"}}))
    job = build_project(config).resolve_job_def("full_refresh")
    assert job.executor_def.name == EXECUTOR.name
    assert job.executor_def.config_schema.resolve_config({}).value["config"]["max_concurrent"] == 2
    graph = defs.resolve_asset_graph()
    policy = graph.get(dg.AssetKey(["publish", "customer"])).freshness_policy
    assert policy.fail_window.to_timedelta() == timedelta(hours=26)
    assert graph.get(dg.AssetKey(["unify", "customer_profile"])).freshness_policy is None


@pytest.fixture
def cli_project(project, monkeypatch):
    folder, config, _ = project
    # `run` checks the sources it ingests before it starts, so they must exist even though these assets are stubs.
    (folder / "crm" / "contacts.csv").write_text("id,name\n1,Ann\n")
    pd.DataFrame({"id": [1]}).to_parquet(folder / "shop" / "orders" / "part-0.parquet")
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    # The command imports the definitions when it runs (its module stays cheap to import for --help).
    monkeypatch.setattr("ci_pipeline.defs.build_definitions", build_project)
    return folder / "ci_pipeline.yaml"


def test_run_a_named_job(cli_project, capsys):
    assert cli.main(["--config", str(cli_project), "run", "--job", "ingest_shop"]) == 0
    out = capsys.readouterr().out
    assert "shop/orders" in out and "crm/contacts" not in out and "succeeded" in out


def test_run_a_selection_and_list_jobs(cli_project, capsys):
    assert cli.main(["--config", str(cli_project), "run", "--select", "crm/contacts+"]) == 0
    out = capsys.readouterr().out
    assert "crm/contacts " in out and "unify/match_pairs" in out and "shop/orders" not in out
    assert cli.main(["--config", str(cli_project), "run", "--list"]) == 0
    assert "unify_and_downstream" in capsys.readouterr().out


def test_run_a_selection_inside_a_job(cli_project, capsys):
    assert (
        cli.main(["--config", str(cli_project), "run", "--job", "unify_only", "--select", "key:unify/match_pairs"]) == 0
    )
    out = capsys.readouterr().out
    assert "unify/match_pairs" in out and "unify/customer_profile" not in out


def test_run_after_a_successful_run_recomputes_only_what_changed(cli_project, capsys):
    config = str(cli_project)
    assert cli.main(["--config", config, "run"]) == 0
    out = capsys.readouterr().out
    assert "no earlier run recorded in this lake: full refresh" in out and "start shop/orders" in out
    assert cli.main(["--config", config, "run"]) == 0
    out = capsys.readouterr().out
    assert "all 6 assets are up to date: nothing to run" in out and "start" not in out
    assert (cli_project.parent / "lake" / "ci_pipeline" / "_state" / "refresh" / "_last_run.json").exists()
    (cli_project.parent / "crm" / "contacts.csv").write_text("id,name\n1,Ann\n2,Bo\n")
    assert cli.main(["--config", config, "run"]) == 0
    out = capsys.readouterr().out
    assert "5 of 6 assets to recompute: crm/contacts (source files changed)" in out
    assert "start crm/contacts" in out and "start unify/customer_profile" in out and "shop/orders" not in out
    assert cli.main(["--config", config, "run", "--full"]) == 0
    assert "start shop/orders" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--full", "--job", "ingest_crm"], "--full runs the full_refresh job; leave out --job"),
        (["--job", "nightly"], "--job nightly: no such job; the jobs of this configuration are: full_refresh"),
        (["--select", "group:nothing"], "--select 'group:nothing': selects no assets"),
        (["--job", "ingest_crm", "--select", "group:unify"], "selects no assets of job ingest_crm"),
    ],
)
def test_bad_job_or_selection_is_a_clear_error(cli_project, capsys, argv, message):
    assert cli.main(["--config", str(cli_project), "run", *argv]) != 0
    assert message in capsys.readouterr().err


def test_run_modes_load_with_the_real_unify_stage(sample_copy):
    # Job names share Dagster's namespace with the stages' op and graph names; a clash only shows at load.
    config_file = sample_copy / "ci_pipeline.yaml"
    settings = yaml.safe_load(config_file.read_text())
    unify = yaml.safe_load((ROOT / "ci_pipeline" / "generate" / "templates" / "unify.yaml").read_text())["unify"]
    settings["unify"] = {**unify, "tables": [t for t in unify["tables"] if t["source"] in settings["sources"]]}
    config_file.write_text(yaml.safe_dump(settings, sort_keys=False))
    defs = build_definitions(load_config(config_file))
    dg.Definitions.validate_loadable(defs)
    assert {"match_only", "unify_only", "unify_and_downstream"} <= set(launch.job_names(defs))
