"""No secret in any output, and failures that say what failed: real failing calls, then every output is searched.

The lake is an Azure URL whose connection string (with a SAS token) comes from ``env:``; the storage account is a
loopback HTTP server that refuses every request and quotes the request, signature included, back in its error.
After ``ci-pipeline run`` the console, the Dagster instance (run and event storage, compute logs: every file under
``DAGSTER_HOME``) and the event log entries are searched for the signature.
"""

from __future__ import annotations

import shutil

import dagster as dg
import pytest
import yaml

from ci_pipeline.cli import main
from ci_pipeline_tests.conftest import ROOT
from ci_pipeline_tests.test_lake import BlobStub

SIGNATURE = "E2eSecretSignature0042"
SAS = f"sv=2022-11-02&ss=b&srt=sco&sp=rwdlac&se=2030-01-01T00:00:00Z&sig={SIGNATURE}%3D"


def project(folder, lake: dict) -> str:
    (folder / "contacts.csv").write_text("contact_id,name\nc1,Ann\nc2,Bob\n")
    config = {
        "lake": lake,
        "sources": {
            "crm": {
                "owner": "sales-ops",
                "tables": {"contacts": {"format": "csv", "path": "contacts.csv", "primary_key": "contact_id"}},
            }
        },
    }
    (folder / "ci_pipeline.yaml").write_text(yaml.safe_dump(config))
    return str(folder / "ci_pipeline.yaml")


@pytest.fixture
def dagster_home(tmp_path, monkeypatch):
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copyfile(ROOT / "dagster.yaml", home / "dagster.yaml")
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    return home


@pytest.fixture
def refusing_storage(monkeypatch):
    stub = BlobStub(403)
    monkeypatch.setenv("CI_E2E_LAKE", f"BlobEndpoint=http://127.0.0.1:{stub.port}/acct;SharedAccessSignature={SAS}")
    yield stub
    stub.close()


def stored_text(home) -> tuple[list[str], int]:
    """Every event log entry of every run in the instance, serialized, and the number of runs."""
    with dg.DagsterInstance.get() as instance:
        runs = instance.get_runs()
        entries = [dg.serialize_value(entry) for run in runs for entry in instance.all_logs(run.run_id)]
    return entries, len(runs)


def test_a_refused_sas_reaches_no_output_and_the_failure_names_the_asset_and_the_fix(
    tmp_path, dagster_home, refusing_storage, capfd
):
    config = project(tmp_path, {"url": "abfs://cont/lake", "connection_string": "env:CI_E2E_LAKE"})
    assert main(["--config", config, "run", "--job", "ingest_crm"]) == 1
    out, err = capfd.readouterr()

    # The SDK did send the signature, and the server did quote it back: the test exercises a real leak path.
    assert any(SIGNATURE in path for path in refusing_storage.requests)
    assert SIGNATURE not in out + err
    entries, runs = stored_text(dagster_home)
    assert runs == 1 and entries
    assert not [entry for entry in entries if SIGNATURE in entry]
    failure = [entry for entry in entries if "STEP_FAILURE" in entry]
    assert failure and "cannot check" in failure[0]  # the trace and its message stay in the event log for the UI
    files = [path for path in dagster_home.rglob("*") if path.is_file()]
    assert any(path.suffix == ".db" for path in files)
    assert any(path.parent.name == "compute_logs" and path.suffix == ".err" for path in files)
    assert [path for path in files if SIGNATURE.encode() in path.read_bytes()] == []

    # The console: one line naming the assets and the fix, no stack trace at the default level.
    assert "crm/contacts, crm/contacts_corrupt failed: abfs://cont/lake/" in err
    assert "Stack Trace" not in err and "DagsterExecutionStepExecutionError" not in out + err
    assert "FAILED crm/contacts, crm/contacts_corrupt (step ingest_crm__contacts):" in out
    assert "the storage account refused the credentials; check the key or SAS token" in out


def test_debug_level_shows_the_stack_trace_still_redacted(tmp_path, dagster_home, refusing_storage, capfd):
    config = project(tmp_path, {"url": "abfs://cont/lake", "connection_string": "env:CI_E2E_LAKE"})
    assert main(["--config", config, "run", "--job", "ingest_crm", "--log-level", "DEBUG"]) == 1
    out, err = capfd.readouterr()
    assert "Stack Trace" in err and "StorageError" in err
    assert SIGNATURE not in out + err


def test_an_unexpected_error_is_printed_with_its_trace_and_secrets_masked(tmp_path, monkeypatch, capfd):
    import ci_pipeline.commands.validate as validate_command
    from ci_pipeline.config.base import resolve_secret

    monkeypatch.setenv("CI_E2E_KEY", "UnexpectedKey0042")

    def broken(args):  # a bug that quotes a secret it resolved
        raise RuntimeError(f"bug while using {resolve_secret('env:CI_E2E_KEY', 'lake.account_key')}")

    monkeypatch.setattr(validate_command, "run", broken)
    assert main(["validate"]) == 1
    err = capfd.readouterr().err
    assert "Traceback" in err and "RuntimeError: bug while using ***" in err
    assert "UnexpectedKey0042" not in err


def test_schema_drift_is_a_warning_on_the_console_at_the_default_level(tmp_path, dagster_home, capfd):
    config = project(tmp_path, {"url": "lake"})
    assert main(["--config", config, "run", "--job", "ingest_crm"]) == 0
    capfd.readouterr()
    (tmp_path / "contacts.csv").write_text("contact_id,name,email\nc1,Ann,a@example.com\n")
    assert main(["--config", config, "run", "--job", "ingest_crm"]) == 0
    err = capfd.readouterr().err
    drift = [line for line in err.splitlines() if "column 'email' appeared" in line]
    assert drift and " - WARNING - " in drift[0]
