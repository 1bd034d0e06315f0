"""A small project on disk with its own governance store, and a way to run `ci-pipeline` as someone."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

from ci_pipeline.cli import main
from ci_pipeline_tests.conftest import ROOT

CONFIG = """
sources:
  crm:
    owner: alice
    tables:
      contacts: {format: csv, path: crm/contacts.csv, primary_key: contact_id}
  shop:
    owner: "'; DROP TABLE x; --"
    tables:
      orders: {format: csv, path: shop/orders.csv, primary_key: order_id}
unify:
  tables:
    - {source: crm, table: contacts, columns: {email: email}}
"""


@dataclass
class Result:
    code: int
    out: str
    err: str

    @property
    def text(self) -> str:
        return self.out + self.err


@dataclass
class Project:
    """A configuration in a temporary folder; ``run`` calls the real command line as a given user."""

    dir: Path
    config: Path
    capsys: pytest.CaptureFixture

    @property
    def store_file(self) -> Path:
        return self.dir / "lake" / "_governance" / "metadata.sqlite"

    def run(self, *args: str, user: str | None = "root") -> Result:
        self.capsys.readouterr()
        argv = ["--config", str(self.config), *args]
        if user is not None:
            argv += ["--as", user]
        code = main(argv)
        captured = self.capsys.readouterr()
        return Result(code, captured.out, captured.err)


@pytest.fixture
def project(tmp_path, monkeypatch, capsys) -> Project:
    for name in ("CI_PIPELINE_USER", "CI_PIPELINE_METADATA_URL", "CI_PIPELINE_SECRET_ROOTS"):
        monkeypatch.delenv(name, raising=False)
    config = tmp_path / "ci_pipeline.yaml"
    config.write_text(CONFIG, encoding="utf-8")
    return Project(tmp_path, config, capsys)


@pytest.fixture
def team(project) -> Project:
    """The project initialised by root (admin), with alice as contributor and vera as viewer."""
    assert project.run("init").code == 0
    assert project.run("roles", "grant", "alice", "contributor").code == 0
    assert project.run("roles", "grant", "vera", "viewer").code == 0
    return project


@pytest.fixture
def dagster_home(tmp_path, monkeypatch):
    """A Dagster instance on disk (its run and event storage and compute logs can be searched for secrets)."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copyfile(ROOT / "dagster.yaml", home / "dagster.yaml")
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    return home
