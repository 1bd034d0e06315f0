"""The `ci-pipeline` command: user mistakes give one clear message and a non-zero exit, never a traceback."""

from __future__ import annotations

import subprocess
import sys

from ci_pipeline.cli import main

CONFIG = """
sources:
  crm:
    owner: sales-ops
    tables:
      contacts: {format: csv, path: contacts.csv, primary_key: contact_id}
"""


def test_validate_reports_ok(tmp_path, capsys):
    (tmp_path / "c.yaml").write_text(CONFIG)
    (tmp_path / "contacts.csv").write_text("contact_id,name\nc1,Ann\n")
    assert main(["validate", str(tmp_path / "c.yaml")]) == 0
    assert "OK (1 sources, 1 tables)" in capsys.readouterr().out


def test_validate_opens_the_sources(tmp_path, capsys):
    (tmp_path / "c.yaml").write_text(CONFIG)
    assert main(["validate", str(tmp_path / "c.yaml")]) == 2
    assert "sources.crm.tables.contacts.path" in capsys.readouterr().err
    (tmp_path / "contacts.csv").write_text("id,name\nc1,Ann\n")
    assert main(["validate", str(tmp_path / "c.yaml")]) == 2
    assert "contact_id" in capsys.readouterr().err
    assert main(["validate", "--no-sources", str(tmp_path / "c.yaml")]) == 0


def test_bundled_sample_validates(capsys):
    assert main(["validate"]) == 0


def test_validate_reports_every_problem_and_exits_2(tmp_path, capsys):
    (tmp_path / "c.yaml").write_text(CONFIG.replace("format: csv", "format: xls").replace("owner: sales-ops", ""))
    assert main(["--config", str(tmp_path / "c.yaml"), "validate"]) == 2
    err = capsys.readouterr().err
    assert "2 problem(s)" in err
    assert "sources.crm.owner: Field required" in err
    assert "sources.crm.tables.contacts.format" in err


def test_user_errors_print_no_traceback(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "ci_pipeline", "--config", str(tmp_path / "missing.yaml"), "validate"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "missing.yaml" in result.stderr and "does not exist" in result.stderr


def test_validate_refuses_a_hostile_file_quickly_and_without_a_traceback(tmp_path):
    from ci_pipeline_tests.test_config import BOMB, MINIMAL, _rule

    (tmp_path / "bomb.yaml").write_text(MINIMAL + BOMB)
    (tmp_path / "deep.yaml").write_text(
        MINIMAL + "segments:\n  definitions:\n    deep:\n      rules:\n        - " + _rule(600)
    )
    for name, message in (("bomb.yaml", "expand to more than 100,000 values"), ("deep.yaml", "nested more than 128")):
        result = subprocess.run(
            [sys.executable, "-m", "ci_pipeline", "validate", str(tmp_path / name)],
            capture_output=True,
            text=True,
            timeout=120,  # generous for a slow machine; the unbounded loader took minutes on the bomb
        )
        assert result.returncode == 2, result.stderr
        assert "Traceback" not in result.stderr and message in result.stderr
