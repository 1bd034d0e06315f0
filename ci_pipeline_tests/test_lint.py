"""The code stays as style.md asks: ruff's lint rules (complexity included) and its formatting hold everywhere."""

from __future__ import annotations

import subprocess
import sys

from ci_pipeline_tests.conftest import ROOT

PATHS = ["ci_pipeline", "ci_pipeline_tests", "dev.py"]


def ruff(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "ruff", *args, *PATHS], cwd=ROOT, capture_output=True, text=True, timeout=120
    )


def test_ruff_finds_nothing_to_fix():
    result = ruff("check", "--no-cache")
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_code_is_formatted():
    result = ruff("format", "--check", "--no-cache")
    assert result.returncode == 0, result.stdout + result.stderr
