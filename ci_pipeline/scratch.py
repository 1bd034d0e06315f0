"""Temporary folders that large steps spill to, named with the process id, so that the next run removes those a
killed process left behind (the OOM killer's SIGKILL runs no clean-up; at a million people the activities stage
spills gigabytes)."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path


def spill_folder(prefix: str) -> tempfile.TemporaryDirectory:
    """A temporary folder ``<prefix><pid>-...``, removed when its ``with`` ends; first, the folders of that prefix
    whose process no longer runs are removed."""
    _remove_orphans(prefix)
    return tempfile.TemporaryDirectory(prefix=f"{prefix}{os.getpid()}-")


def _remove_orphans(prefix: str) -> None:
    for folder in Path(tempfile.gettempdir()).glob(f"{prefix}*"):
        pid = folder.name[len(prefix) :].split("-", 1)[0]
        # A folder of another naming (no process id) or of a running process is left alone.
        if pid.isdigit() and not _running(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True
