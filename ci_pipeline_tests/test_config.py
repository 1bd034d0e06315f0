"""The configuration loader: every problem is reported with its file, key path and a fix."""

from __future__ import annotations

import pytest

from ci_pipeline.config import load_config, resolve_secret
from ci_pipeline.errors import ConfigError, UserError

MINIMAL = """
sources:
  crm:
    owner: sales-ops
    tables:
      contacts:
        format: csv
        path: contacts.csv
        primary_key: contact_id
"""


def write(tmp_path, text: str):
    path = tmp_path / "ci_pipeline.yaml"
    path.write_text(text)
    return path


def test_minimal_config_loads_and_resolves_paths_against_its_folder(tmp_path):
    config = load_config(write(tmp_path, MINIMAL))
    table = config.sources["crm"].tables["contacts"]
    assert table.csv.delimiter == ","
    assert config.resolve_location(table.path) == str(tmp_path / "contacts.csv")
    assert config.resolve_location("abfss://c@acct.dfs.core.windows.net/x") == "abfss://c@acct.dfs.core.windows.net/x"


def test_env_variable_chooses_the_file(tmp_path, monkeypatch):
    monkeypatch.setenv("CI_PIPELINE_CONFIG", str(write(tmp_path, MINIMAL)))
    assert load_config().path == tmp_path / "ci_pipeline.yaml"


def test_every_problem_is_reported_with_its_key_path(tmp_path):
    bad = MINIMAL.replace("format: csv", "format: xlsx").replace("primary_key: contact_id", "primary_kee: id")
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, bad))
    text = str(caught.value)
    assert "ci_pipeline.yaml" in text
    assert "sources.crm.tables.contacts.format" in text
    assert "sources.crm.tables.contacts.primary_key: Field required; add this key" in text
    assert "sources.crm.tables.contacts.primary_kee" in text and "correct its spelling" in text


def test_missing_file_and_broken_yaml_are_clear(tmp_path):
    with pytest.raises(ConfigError, match="does not exist; pass --config PATH or set CI_PIPELINE_CONFIG"):
        load_config(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="line 3, column 1: not valid YAML"):
        load_config(write(tmp_path, "sources:\n  - [unclosed\n"))


def test_headerless_csv_must_declare_columns(tmp_path):
    with pytest.raises(ConfigError, match="needs 'columns' listing every column"):
        load_config(write(tmp_path, MINIMAL + "        csv: {header: false}\n"))


def test_secrets_are_references_never_plain_text(tmp_path, monkeypatch):
    with pytest.raises(ConfigError, match="lake.connection_string: secrets are never written"):
        load_config(write(tmp_path, MINIMAL + "lake:\n  url: abfs://c/x\n  connection_string: AccountKey=abc\n"))
    monkeypatch.setenv("MY_SECRET", "s3cret")
    assert resolve_secret("env:MY_SECRET", "lake.account_key") == "s3cret"
    (tmp_path / "key.txt").write_text("from-file\n")
    assert resolve_secret("file:key.txt", "lake.account_key", tmp_path) == "from-file"
    monkeypatch.delenv("MY_SECRET")
    with pytest.raises(UserError, match="lake.account_key: environment variable MY_SECRET is not set"):
        resolve_secret("env:MY_SECRET", "lake.account_key")
