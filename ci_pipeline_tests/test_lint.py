"""The code stays as style.md asks: ruff's lint rules (complexity included) and its formatting hold everywhere."""

from __future__ import annotations

import ast
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


#: The generator writes long data tables as code; everything else keeps its functions short.
MAX_FUNCTION_LINES = 100


def test_no_function_outside_the_generator_is_longer_than_100_lines():
    long = []
    for path in sorted((ROOT / "ci_pipeline").rglob("*.py")):
        if "generate" in path.relative_to(ROOT).parts:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({lines} lines)")
    assert not long, "split these into named steps:\n" + "\n".join(long)
