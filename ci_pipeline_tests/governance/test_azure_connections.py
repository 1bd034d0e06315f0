"""The lake and an export write through governed `adls` connections: real Azure Blob storage (Azurite)."""

from __future__ import annotations

import adlfs
import pytest

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
