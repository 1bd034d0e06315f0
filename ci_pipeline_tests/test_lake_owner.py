"""One lake folder serves one environment: the lake's marker, claimed by the first run, refusing another
environment before it writes (a local folder and Azure Blob storage), and taken over deliberately after a rename."""

from __future__ import annotations

import dagster as dg
import pandas as pd
import pytest
import yaml

from ci_pipeline.cli import main
from ci_pipeline.config import load_config
from ci_pipeline.defs.resources import LakeResource
from ci_pipeline.lake import Lake
from ci_pipeline.lake_owner import MARKER, LakeOwnedError, attach_lake, claim_lake, lake_owner
from ci_pipeline.orchestration import failure_reason


def test_the_first_environment_claims_the_lake_and_another_is_refused_naming_both_and_the_fixes(tmp_path):
    lake = Lake.local(tmp_path / "lake")
    assert claim_lake(lake, "prod") is True
    assert lake_owner(lake)["environment"] == "prod"
    assert claim_lake(lake, "prod") is False
    with pytest.raises(LakeOwnedError) as refused:
        claim_lake(lake, "dev")
    text = str(refused.value)
    assert f"lake {lake.url()} belongs to environment 'prod'" in text
    assert "this configuration is environment 'dev'" in text
    assert "a lake folder of its own (lake.url)" in text
    assert "`ci-pipeline lake attach --replace prod`" in text
    assert lake_owner(lake)["environment"] == "prod"


def test_a_renamed_environment_takes_its_lake_over_only_by_naming_the_old_one(tmp_path):
    lake = Lake.local(tmp_path / "lake")
    claim_lake(lake, "prod")
    with pytest.raises(LakeOwnedError, match="--replace prod"):
        attach_lake(lake, "production")
    assert attach_lake(lake, "production", replace="prod") == "prod"
    claim_lake(lake, "production")
    assert attach_lake(lake, "production") == "production"  # again: nothing changes


def test_on_azure_storage_the_marker_lives_in_the_container(azure_container):
    import os

    lake = Lake.from_url(f"abfs://{azure_container}/ci", {"connection_string": os.environ["AZURE_TEST_CONNECTION"]})
    assert claim_lake(lake, "prod") is True
    assert lake.exists(MARKER)
    with pytest.raises(LakeOwnedError, match=f"lake abfs://{azure_container}/ci belongs to environment 'prod'"):
        claim_lake(Lake.from_url(lake.url(), lake.storage_options), "dev")


def _config(folder, name: str):
    folder.mkdir()
    file = folder / "ci_pipeline.yaml"
    table = {"format": "csv", "path": "contacts.csv", "primary_key": "id"}
    settings = {
        "name": name,
        "lake": {"url": str(folder.parent / "shared_lake")},
        "sources": {"crm": {"owner": "root", "tables": {"contacts": table}}},
    }
    file.write_text(yaml.safe_dump(settings))
    return load_config(file)


def test_a_run_of_another_environment_fails_before_its_first_step_writes(tmp_path):
    @dg.asset(key=["crm", "contacts"])
    def contacts(lake: LakeResource) -> None:
        lake.get_lake().write_parquet("ci_pipeline/crm/contacts.parquet", pd.DataFrame({"id": [1]}))

    def run(config):
        resources = {"lake": LakeResource.from_config(config)}
        return dg.materialize([contacts], resources=resources, raise_on_error=False)

    assert run(_config(tmp_path / "prod", "prod")).success
    written = (tmp_path / "shared_lake" / "ci_pipeline" / "crm" / "contacts.parquet").stat().st_mtime_ns
    result = run(_config(tmp_path / "dev", "dev"))
    assert not result.success
    [failure] = [e for e in result.all_events if e.event_type == dg.DagsterEventType.RESOURCE_INIT_FAILURE]
    message, is_user_error = failure_reason(failure.event_specific_data.error)
    assert is_user_error and "belongs to environment 'prod'" in message
    assert (tmp_path / "shared_lake" / "ci_pipeline" / "crm" / "contacts.parquet").stat().st_mtime_ns == written


def test_lake_attach_is_for_admins_of_a_governed_environment_and_audited(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("CI_PIPELINE_METADATA_URL", raising=False)
    config = _config(tmp_path / "prod", "production")
    claim_lake(Lake.from_config(config.lake, config.base_dir), "prod")
    args = ["--config", str(config.path)]
    assert main([*args, "init", "--as", "root"]) == 0
    assert main([*args, "roles", "grant", "alice", "contributor", "--as", "root"]) == 0
    monkeypatch.setenv("CI_PIPELINE_USER", "alice")
    capsys.readouterr()
    assert main([*args, "lake", "attach", "--replace", "prod"]) != 0
    assert "lake.attach needs the admin role" in capsys.readouterr().err
    monkeypatch.setenv("CI_PIPELINE_USER", "root")
    assert main([*args, "lake", "attach", "--replace", "prod"]) == 0
    assert "now belongs to environment 'production' (it belonged to 'prod')" in capsys.readouterr().out
    assert main([*args, "audit", "list"]) == 0
    assert "lake.attach" in capsys.readouterr().out
    assert main([*args, "lake", "show"]) == 0
    assert "belongs to environment 'production' (this configuration)" in capsys.readouterr().out


def test_a_refused_run_is_not_retried_by_the_instance(tmp_path):
    # A refusal before any step (another environment's lake, governance) fails the same way on every retry, and
    # each retry would send another failure notice.
    @dg.asset(key=["crm", "contacts"])
    def contacts(lake: LakeResource) -> None:
        lake.get_lake()

    claim_lake(Lake.local(tmp_path / "shared_lake"), "prod")
    instance = dg.DagsterInstance.ephemeral(settings={"run_retries": {"enabled": True, "max_retries": 1}})
    resources = {"lake": LakeResource.from_config(_config(tmp_path / "dev", "dev"))}
    result = dg.materialize([contacts], resources=resources, instance=instance, raise_on_error=False)
    assert not result.success
    assert instance.get_run_by_id(result.run_id).tags["dagster/will_retry"] == "false"
