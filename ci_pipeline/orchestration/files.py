"""New-file detection for the sensor: which files of a watched location are new, changed, or still being written.

Everything here works on plain values (paths, sizes, times), so the rules are tested without storage or Dagster.
A table's files go through three states between sensor ticks:

- *seen*: processed (a run was requested for them, or they were there when watching started);
- *pending*: new or changed, observed but not yet known to be complete;
- *ready*: new or changed and complete, so the next run picks them up.

A file is complete when its name is not a temporary one and it is either older than the settle time or unchanged
(size, modified time, etag) since the previous tick. Files in a CDM ``IncrementalData/yyyy/mm/dd/hh/`` folder are
complete only once that hour is over.
"""

from __future__ import annotations

import hashlib
import json
import posixpath
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

#: Endings and markers that copy tools, browsers and Spark give files while they are still being written.
TEMP_SUFFIXES = (".tmp", "_tmp", "~", ".crdownload", ".part", ".partial", ".download", ".swp", ".inprogress")
TEMP_MARKERS = ("_COPYING_", "/_temporary/")
_HOUR_FOLDER = re.compile(r"(?:^|/)IncrementalData/(\d{4})/(\d{2})/(\d{2})/(\d{2})(?:/|$)")


@dataclass(frozen=True)
class FileState:
    """What the storage says about one file; any difference means the file changed."""

    size: int
    mtime: float | None = None
    etag: str | None = None

    def to_json(self) -> list:
        return [self.size, self.mtime, self.etag]

    @classmethod
    def from_json(cls, value: list) -> FileState:
        return cls(int(value[0]), value[1], value[2])

    @classmethod
    def from_info(cls, info: dict) -> FileState:
        """Build from an fsspec ``info``/``find(detail=True)`` entry (local: ``mtime``; Azure: ``last_modified``)."""
        mtime = info.get("mtime")
        if mtime is None and info.get("last_modified") is not None:
            modified = info["last_modified"]
            mtime = modified.timestamp() if isinstance(modified, datetime) else float(modified)
        etag = info.get("etag")
        return cls(int(info.get("size") or 0), None if mtime is None else float(mtime), etag and str(etag).strip('"'))


def is_temporary(path: str) -> bool:
    """True for names that mark a file still being written (``x.csv.tmp``, ``x._COPYING_``, ``.x.csv.1a2b``)."""
    name = posixpath.basename(path.rstrip("/"))
    lowered = name.lower()
    return (
        name.startswith(".")
        or name.startswith("~$")
        or lowered.endswith(TEMP_SUFFIXES)
        or any(marker in path for marker in TEMP_MARKERS)
    )


def hour_folder_closes_at(path: str) -> datetime | None:
    """When the CDM incremental hour folder holding ``path`` closes (UTC), or None outside such folders."""
    match = _HOUR_FOLDER.search(path)
    if not match:
        return None
    year, month, day, hour = (int(g) for g in match.groups())
    return datetime(year, month, day, hour, tzinfo=UTC) + timedelta(hours=1)


@dataclass
class TablePlan:
    """The outcome of one tick for one watched table."""

    #: Files to process now (new or changed and complete), with their state.
    ready: dict[str, FileState] = field(default_factory=dict)
    #: Files seen before that are gone (the table changed too).
    removed: list[str] = field(default_factory=list)
    #: Files that wait for a later tick, with the reason.
    waiting: dict[str, str] = field(default_factory=dict)
    #: The table's cursor entry after this tick.
    cursor: dict = field(default_factory=dict)

    @property
    def changed(self) -> bool:
        return bool(self.ready or self.removed)


def plan_table(
    previous: dict | None,
    current: dict[str, FileState],
    now: datetime,
    settle_seconds: float,
) -> TablePlan:
    """Decide which of a table's files a run should pick up now.

    Args:
        previous: this table's cursor entry from the last tick (``{"seen": ..., "pending": ...}``), or None the
            first time: the files present then are the baseline and start no run.
        current: every file in the watched location now (temporary names included; they are never processed).
        now: the tick time (UTC).
        settle_seconds: a file modified longer ago than this is complete even on its first sighting.

    A table with a file still being written holds back all its changes until the next tick, so a burst of files
    (an export copying many partitions) gives one run when it is over, not one run per file.
    """
    if previous is None:
        seen = {path: state for path, state in current.items() if not is_temporary(path)}
        return TablePlan(cursor=_cursor(seen, {}))
    seen = {path: FileState.from_json(v) for path, v in previous.get("seen", {}).items()}
    pending = {path: FileState.from_json(v) for path, v in previous.get("pending", {}).items()}
    plan = TablePlan()
    candidates: dict[str, FileState] = {}
    writing = False
    for path, state in sorted(current.items()):
        if is_temporary(path):
            plan.waiting[path] = "temporary name: still being written"
            writing = True
            continue
        if seen.get(path) == state:
            continue
        closes = hour_folder_closes_at(path)
        if closes is not None and now < closes:
            # An open hour folder is expected to keep growing; it does not hold back the rest of the table.
            plan.waiting[path] = f"hour folder closes at {closes:%Y-%m-%d %H:%M} UTC"
            continue
        settled = state.mtime is not None and state.mtime <= now.timestamp() - settle_seconds
        if settled or pending.get(path) == state:
            candidates[path] = state
        else:
            plan.waiting[path] = "size or modified time changed since the last check: still being written"
            writing = True
    if writing:
        # Hold the whole table back: what is complete stays pending and is ready on the next quiet tick.
        still_writing = [p for p, why in plan.waiting.items() if not is_temporary(p) and "hour folder" not in why]
        for path in candidates:
            plan.waiting[path] = "waiting for other files of the same table that are still being written"
        plan.cursor = _cursor(seen, {path: current[path] for path in [*still_writing, *candidates]})
        return plan
    plan.ready = candidates
    plan.removed = sorted(path for path in seen if path not in current)
    new_seen = {path: state for path, state in seen.items() if path in current}
    new_seen.update(candidates)
    plan.cursor = _cursor(new_seen, {})
    return plan


def _cursor(seen: dict[str, FileState], pending: dict[str, FileState]) -> dict:
    return {
        "seen": {path: state.to_json() for path, state in sorted(seen.items())},
        "pending": {path: state.to_json() for path, state in sorted(pending.items())},
    }


def run_key(changes: dict[str, dict[str, FileState]], removed: dict[str, list[str]]) -> str:
    """A stable key for one batch of changes: the same files in the same states always give the same key."""
    payload = {
        "changed": {t: {p: s.to_json() for p, s in sorted(files.items())} for t, files in sorted(changes.items())},
        "removed": {t: sorted(paths) for t, paths in sorted(removed.items()) if paths},
    }
    return "new-files-" + hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:20]


def watch_root(location: str) -> str:
    """The folder or file to watch for a table: a CDM table is its whole folder (model.json and partitions)."""
    if location.endswith(("model.json", ".manifest.cdm.json")):
        return posixpath.dirname(location.rstrip("/"))
    return location.rstrip("/")


def list_location(fs, root: str) -> dict[str, FileState]:
    """Every file at or below ``root`` on an fsspec filesystem, with its state; ``{}`` if nothing is there yet.

    Raises:
        OSError and storage SDK errors when the storage cannot be reached (the caller reports them).
    """
    if not fs.exists(root):
        return {}
    info = fs.info(root)
    if info.get("type") == "file":
        return {info.get("name", root): FileState.from_info(info)}
    found = fs.find(root, detail=True)
    return {path: FileState.from_info(entry) for path, entry in found.items() if entry.get("type", "file") == "file"}
