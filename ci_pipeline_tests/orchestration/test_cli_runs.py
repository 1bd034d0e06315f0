"""`ci-pipeline run` records its runs as runs of the code location's jobs, which the UI lists on the job's page."""

from __future__ import annotations

import dagster as dg
import pandas as pd
import pytest
import yaml
from dagster._core.workspace.context import WorkspaceProcessContext
from dagster._core.workspace.load_target import EmptyWorkspaceTarget
from dagster_graphql.test.utils import execute_dagster_graphql

from ci_pipeline import cli
from ci_pipeline.defs import launch
from ci_pipeline.governance.identity import LAUNCHED_BY_TAG
from ci_pipeline.orchestration import MODE_TAG, TRIGGER_TAG
from ci_pipeline_tests.conftest import ROOT
from ci_pipeline_tests.orchestration.conftest import build_project

#: What the UI asks for on a job's Runs tab: the job's runs launched from its repository.
JOB_RUNS = """
query($filter: RunsFilter) {
  runsOrError(filter: $filter) { ... on Runs { results {
    runId pipelineName status repositoryOrigin { repositoryLocationName repositoryName } tags { key value }
  } } }
}
"""


@pytest.fixture
def cli_project(project, monkeypatch, tmp_path_factory):
    folder, _, _ = project
    (folder / "crm" / "contacts.csv").write_text("id,name\n1,Ann\n")
    pd.DataFrame({"id": [1]}).to_parquet(folder / "shop" / "orders" / "part-0.parquet")
    home = tmp_path_factory.mktemp("history")
    (home / "dagster.yaml").write_text("telemetry: {enabled: false}\n")
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    monkeypatch.setenv("CI_PIPELINE_USER", "ann")
    monkeypatch.setattr("ci_pipeline.defs.build_definitions", build_project)
    return folder / "ci_pipeline.yaml"


def job_runs(instance: dg.DagsterInstance, job: str) -> list[dict]:
    label = f"{launch.REPOSITORY}@{launch.CODE_LOCATION}"
    with WorkspaceProcessContext(instance, EmptyWorkspaceTarget()) as workspace:
        result = execute_dagster_graphql(
            workspace.create_request_context(),
            JOB_RUNS,
            {"filter": {"pipelineName": job, "tags": [{"key": ".dagster/repository", "value": label}]}},
        )
    return result.data["runsOrError"]["results"]


def test_cli_runs_belong_to_their_job_in_the_code_location(cli_project):
    assert cli.main(["run", "--job", "ingest_shop", "--config", str(cli_project)]) == 0
    assert cli.main(["run", "--select", "crm/contacts", "--config", str(cli_project)]) == 0
    with dg.DagsterInstance.get() as instance:
        runs = {run.job_name: run for run in instance.get_runs()}
        origin = runs["ingest_shop"].remote_job_origin
        assert origin.location_name == "ci_pipeline" and origin.repository_origin.repository_name == "__repository__"
        assert runs["ingest_shop"].tags[MODE_TAG] == "partial" and runs["__ASSET_JOB"].tags[MODE_TAG] == "partial"
        listed = job_runs(instance, "ingest_shop")
    assert [r["runId"] for r in listed] == [runs["ingest_shop"].run_id]
    assert listed[0]["status"] == "SUCCESS"
    assert listed[0]["repositoryOrigin"] == {
        "repositoryLocationName": "ci_pipeline",
        "repositoryName": "__repository__",
    }
    tags = {t["key"]: t["value"] for t in listed[0]["tags"]}
    assert tags[TRIGGER_TAG] == "cli" and tags[LAUNCHED_BY_TAG] == "ann"


def test_the_full_refresh_is_tagged_full(cli_project):
    assert cli.main(["run", "--config", str(cli_project)]) == 0
    with dg.DagsterInstance.get() as instance:
        (run,) = instance.get_runs()
        assert run.job_name == "full_refresh" and run.tags[MODE_TAG] == "full"
        assert run.remote_job_origin.job_name == "full_refresh"
        assert [r["runId"] for r in job_runs(instance, "full_refresh")] == [run.run_id]


def test_the_workspace_serves_the_code_location_the_runs_name():
    workspace = yaml.safe_load((ROOT / "workspace.yaml").read_text())
    assert workspace["load_from"][0]["python_module"]["location_name"] == launch.CODE_LOCATION
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert f'code_location_name = "{launch.CODE_LOCATION}"' in pyproject
    assert 'name = "ci_pipeline"' in pyproject  # dg dev names the code location after the project


def test_a_dagster_home_that_is_no_folder_is_a_clear_error_without_a_traceback(cli_project, monkeypatch, capsys):
    missing = cli_project.parent / "no-such-home"
    monkeypatch.setenv("DAGSTER_HOME", str(missing))
    assert cli.main(["run", "--config", str(cli_project)]) == 2
    err = capsys.readouterr().err
    assert f"DAGSTER_HOME is '{missing}', which is not a folder: create it (mkdir -p {missing})" in err
    assert "Traceback" not in err
    # A relative folder: Dagster takes absolute paths only; the fix gives the one meant.
    (cli_project.parent / "home").mkdir()
    monkeypatch.chdir(cli_project.parent)
    monkeypatch.setenv("DAGSTER_HOME", "home")
    assert cli.main(["run", "--config", str(cli_project)]) == 2
    err = capsys.readouterr().err
    assert (
        "a relative path, and Dagster takes an absolute one" in err
        and f"DAGSTER_HOME={cli_project.parent / 'home'}" in err
    )
    assert "Traceback" not in err


def test_an_empty_dagster_home_keeps_the_run_without_dagster_s_banner_or_a_file_written(
    cli_project, tmp_path, monkeypatch, capfd
):
    home = tmp_path / "empty-home"
    home.mkdir()
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    assert cli.main(["run", "--job", "ingest_shop", "--config", str(cli_project)]) == 0
    said = "".join(capfd.readouterr())
    # Neither the telemetry banner (which asks for a dagster.yaml) nor the notice that the file is missing.
    assert "Telemetry" not in said and "dagster.yaml" not in said
    assert sorted(p.name for p in home.iterdir() if p.name in {"dagster.yaml", ".telemetry"}) == []
    with dg.DagsterInstance.get() as instance:
        assert [run.job_name for run in instance.get_runs()] == ["ingest_shop"]
