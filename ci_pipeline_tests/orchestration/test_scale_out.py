"""The Kubernetes deployment in deploy/: the instance file validates and the definitions load with the k8s
executor and an ADLS lake, without a cluster, a database or a storage account."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest
import yaml
from dagster._config import process_config
from dagster._core.instance.config import dagster_instance_config
from dagster_k8s import K8sRunLauncher
from dagster_postgres import DagsterPostgresStorage

from ci_pipeline.config import load_config
from ci_pipeline.errors import ConfigError
from ci_pipeline_tests.orchestration.conftest import build_project, write_project

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


@pytest.fixture
def deployment_env(monkeypatch):
    for name, value in {
        "DAGSTER_PG_HOST": "postgres.ci-pipeline.svc",
        "DAGSTER_PG_USER": "dagster",
        "DAGSTER_PG_PASSWORD": "not-a-real-password",
        "DAGSTER_PG_DB": "dagster",
        "CI_PIPELINE_IMAGE": "registry.example/ci-pipeline:1.0",
    }.items():
        monkeypatch.setenv(name, value)


def test_instance_file_validates_against_the_k8s_and_postgres_schemas(deployment_env):
    config, _ = dagster_instance_config(str(DEPLOY), "dagster-k8s.yaml")
    launcher = config["run_launcher"]
    assert (launcher["module"], launcher["class"]) == ("dagster_k8s", "K8sRunLauncher")
    checked = process_config(K8sRunLauncher.config_type(), launcher["config"])
    assert checked.success, checked.errors
    assert checked.value["job_image"] == "registry.example/ci-pipeline:1.0"
    storage = process_config(DagsterPostgresStorage.config_type(), config["storage"]["postgres"])
    assert storage.success, storage.errors
    assert storage.value["postgres_db"]["hostname"] == "postgres.ci-pipeline.svc"
    assert config["run_retries"] == {"enabled": True, "max_retries": 1}


def production_config(tmp_path):
    production = yaml.safe_load((DEPLOY / "ci_pipeline.production.yaml").read_text())
    return load_config(write_project(tmp_path, production["orchestration"], lake=production["lake"]))


def test_definitions_load_with_the_k8s_executor_and_an_adls_lake(tmp_path):
    config = production_config(tmp_path)
    defs = build_project(config)
    dg.Definitions.validate_loadable(defs)
    job = defs.resolve_job_def("full_refresh")
    assert job.executor_def.name == "k8s_steps"
    resolved = job.executor_def.config_schema.resolve_config({}).value["config"]
    assert resolved["max_concurrent"] == 8 and resolved["job_namespace"] == "ci-pipeline"
    assert resolved["step_k8s_config"]["container_config"]["resources"]["limits"] == {"memory": "4Gi"}
    lake = defs.resources["lake"]
    assert lake.url.startswith("abfss://") and lake.credential == "managed_identity"


def test_k8s_settings_on_a_local_executor_are_rejected(tmp_path):
    with pytest.raises(ConfigError, match="orchestration.executor: .*apply only to kind: k8s"):
        load_config(write_project(tmp_path, {"executor": {"kind": "multiprocess", "job_namespace": "x"}}))
