"""Spill folders: a killed run's are removed by the next, a running process's never."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

from ci_pipeline.scratch import spill_folder


def test_the_spill_folders_of_processes_that_no_longer_run_are_removed_first(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead = tmp_path / f"ci-pipeline-activities-{gone.stdout.strip()}-abc"  # a run the OOM killer stopped
    alive = tmp_path / f"ci-pipeline-activities-{os.getppid()}-def"  # a run still going (this test's parent)
    other = tmp_path / "ci-pipeline-activities-xyz"  # named otherwise: not ours to judge
    for folder in (dead, alive, other):
        (folder / "part").mkdir(parents=True)
    with spill_folder("ci-pipeline-activities-") as work:
        assert Path(work).name.startswith(f"ci-pipeline-activities-{os.getpid()}-")
        assert not dead.exists() and alive.exists() and other.exists()
    assert not Path(work).exists()
