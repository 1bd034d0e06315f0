"""The Definitions object loads for the bundled sample and for a user's own configuration."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from ci_pipeline.config import SAMPLE_CONFIG, load_config
from ci_pipeline.defs import build_definitions
from ci_pipeline_tests.conftest import ROOT


def test_sample_definitions_load():
    defs = build_definitions(load_config(SAMPLE_CONFIG))
    dg.Definitions.validate_loadable(defs)
    assert defs.resolve_asset_graph().get_all_asset_keys()
    # docs/operations.md quotes the sample's schedules as the UI describes them (what runs: a number of assets
    # that changes with the sample), word for word.
    operations = " ".join((ROOT / "docs" / "operations.md").read_text(encoding="utf-8").split())
    for name in ("refresh", "weekly_export"):
        description = defs.resolve_schedule_def(name).description
        assert f'"{description}"' in operations, f"docs/operations.md: quote the {name} schedule as {description!r}"


def test_definitions_module_reads_the_configured_file_when_loaded(tmp_path, monkeypatch):
    (tmp_path / "ci_pipeline.yaml").write_text(
        "sources:\n  crm:\n    owner: me\n    tables:\n      contacts:\n"
        "        format: csv\n        path: c.csv\n        primary_key: id\n"
    )
    monkeypatch.setenv("CI_PIPELINE_CONFIG", str(tmp_path / "ci_pipeline.yaml"))
    from ci_pipeline.definitions import defs

    loaded = defs()
    dg.Definitions.validate_loadable(loaded)


@pytest.mark.slow
@pytest.mark.parametrize(
    "command",
    [["dg", "check", "defs"], ["dagster", "definitions", "validate", "-w", "workspace.yaml"]],
    ids=["dg", "dagster"],
)
def test_project_root_commands_load_the_definitions(command):
    """What a user types at the project root: both Dagster CLIs find and load the code location."""
    binary = Path(sys.executable).parent / command[0]
    result = subprocess.run([str(binary), *command[1:]], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]


def test_no_stage_names_another_stage_s_asset_by_a_literal_key():
    """Stages read each other's assets through the producing stage's registry entry, never by a literal key."""
    import ast

    from ci_pipeline.defs import STAGES

    names = {stage.name for stage in STAGES}
    found = []
    for path in sorted((ROOT / "ci_pipeline" / "defs").glob("*.py")):
        own = path.stem
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Call) or not node.args:
                continue
            func = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
            first = node.args[0]
            if func == "AssetKey" and isinstance(first, ast.List | ast.Tuple):
                parts = [p.value for p in first.elts if isinstance(p, ast.Constant)]
                if parts:
                    found.append(f"{path.name}:{node.lineno}: dg.AssetKey({parts})")
            elif func == "asset_key" and isinstance(first, ast.Constant) and first.value in names - {own}:
                found.append(f"{path.name}:{node.lineno}: asset_key({first.value!r}, ...)")
    assert found == []
