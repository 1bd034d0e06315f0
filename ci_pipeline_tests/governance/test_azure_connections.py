"""The lake and an export write through governed `adls` connections: real Azure Blob storage (Azurite)."""

from __future__ import annotations

import adlfs
import dagster as dg
import pytest

from ci_pipeline.config import load_config
from ci_pipeline.defs import build_definitions
from ci_pipeline.defs.resources import LakeResource
from ci_pipeline_tests.conftest import AZURITE_KEY
from ci_pipeline_tests.governance.test_run_time import Project, stored_files_with


@pytest.fixture
def blob(azurite):
    return adlfs.AzureBlobFileSystem(connection_string=azurite["connection_string"])


def add_storage(project: Project, name: str, container: str) -> None:
    add = ["connections", "add", name, "--type", "adls", "--account", "devstoreaccount1", "--container", container]
    code, text = project.cli(*add, "--connection-string", "env:AZURE_TEST_CONNECTION")
    assert code == 0, text


def test_the_lake_resolves_its_connection_as_the_launcher(
    tmp_path,
    capfd,
    monkeypatch,
    dagster_home,
    azure_container,
    blob,
):
    monkeypatch.setenv("CI_PIPELINE_METADATA_URL", f"sqlite:///{tmp_path / 'metadata.sqlite'}")
    project = Project(tmp_path / "project", capfd, monkeypatch, None)
    lake = {"url": f"abfs://{azure_container}/lake", "connection": "lake-conn"}
    project.write({"kind": "sqlite"}, lake=lake)
    assert project.cli("init")[0] == 0
    assert project.cli("roles", "grant", "alice", "contributor")[0] == 0
    add_storage(project, "lake-conn", azure_container)

    # Refused by the checks before the run (they read the lake as alice too), and audited.
    code, text = project.run("alice", "--job", "ingest_crm")
    assert code == 2 and "lake.connection: connection 'lake-conn' is not shared with 'alice'" in text
    assert blob.ls(azure_container) == []

    assert project.cli("connections", "share", "lake-conn", "alice")[0] == 0
    code, text = project.run("alice", "--job", "ingest_crm")
    assert code == 0, text
    assert blob.exists(f"{azure_container}/lake/ci_pipeline/crm/contacts.parquet")
    assert AZURITE_KEY not in text and stored_files_with(dagster_home, AZURITE_KEY) == []


def test_an_export_writes_through_its_bound_connection(
    tmp_path,
    capfd,
    monkeypatch,
    dagster_home,
    azure_container,
    blob,
):
    monkeypatch.delenv("CI_PIPELINE_METADATA_URL", raising=False)
    project = Project(tmp_path / "project", capfd, monkeypatch, None)
    assert project.cli("init")[0] == 0
    assert project.cli("roles", "grant", "alice", "contributor")[0] == 0
    add_storage(project, "partner", azure_container)
    assert project.cli("connections", "share", "partner", "alice")[0] == 0
    assert project.cli("exports", "add", "weekly", "--connection", "partner", user="alice")[0] == 0
    project.write({"kind": "sqlite"}, publish={"exports": [{"name": "weekly", "connection": "partner"}]})

    code, text = project.run("alice")
    assert code == 0, text
    assert blob.exists(f"{azure_container}/exports/weekly/model.json")
    assert not (project.dir / "lake" / "exports").exists()
    assert stored_files_with(dagster_home, AZURITE_KEY) == []


def test_the_new_file_sensor_lists_the_sources_as_the_service_principal(
    tmp_path,
    capfd,
    monkeypatch,
    dagster_home,
    azure_container,
    blob,
):
    # The daemon's own user is an admin here: the sensor must list as governance.service_principal all the same.
    monkeypatch.setenv("CI_PIPELINE_METADATA_URL", f"sqlite:///{tmp_path / 'metadata.sqlite'}")
    monkeypatch.setenv("CI_PIPELINE_USER", "root")
    project = Project(tmp_path / "project", capfd, monkeypatch, None)
    blob.pipe_file(f"{azure_container}/crm/contacts.csv", b"contact_id,email\nc1,ann@example.com\n")
    table = {"format": "csv", "path": f"abfs://{azure_container}/crm/contacts.csv", "primary_key": "contact_id"}
    project.write(
        {"kind": "sqlite"},
        lake={"url": f"abfs://{azure_container}/lake", "connection": "lake-conn"},
        sources={"crm": {"owner": "alice", "tables": {"contacts": table}}},
        orchestration={"new_files": {"settle_seconds": 0}},
    )
    assert project.cli("init")[0] == 0
    add_storage(project, "lake-conn", azure_container)
    config = load_config(project.config)
    sensor = build_definitions(config).resolve_sensor_def("new_files")
    resources = {"lake": LakeResource.from_config(config)}

    def tick(cursor):
        return sensor.evaluate_tick(dg.build_sensor_context(cursor=cursor, resources=resources))

    def audited_refusals() -> int:
        text = project.cli("audit", "list")[1]
        return sum("ci-pipeline-scheduler" in line and "connections.use" in line for line in text.splitlines())

    first = tick(None)
    assert not first.run_requests
    assert first.skip_message == (
        "cannot list the source locations (crm/contacts): lake.connection: connection 'lake-conn' is not shared with "
        "'ci-pipeline-scheduler', who runs it; an admin shares it with "
        "`ci-pipeline connections share lake-conn ci-pipeline-scheduler`"
    )
    # Said once in the audit log, however often the sensor asks.
    assert not tick(first.cursor).run_requests
    assert audited_refusals() == 1

    assert project.cli("connections", "share", "lake-conn", "ci-pipeline-scheduler")[0] == 0
    shared = tick(first.cursor)
    assert "baseline" in shared.skip_message
    blob.pipe_file(f"{azure_container}/crm/contacts.csv", b"contact_id,email\nc1,ann@example.com\nc2,b@example.com\n")
    [request] = tick(shared.cursor).run_requests
    assert request.tags["ci_pipeline/changed_tables"] == "crm/contacts"
