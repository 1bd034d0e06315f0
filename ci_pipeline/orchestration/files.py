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
    #: How many files seen before are gone.
    removed: int = 0
    #: How many files the change touches, as far as the cursor can tell (at least 1 when ``changed``): the files
    #: modified after the watermark, or the change in the number of files if that is larger.
    changed_files: int = 0
    #: True when anything in the listing differs from what was processed (also a file removed, or one added or
    #: replaced with an older modified time: these are found by the listing digest, not by the watermark).
    changed: bool = False
    #: Files that wait for a later tick, with the reason.
    waiting: dict[str, str] = field(default_factory=dict)
    #: The table's cursor entry after this tick (a few fixed-size values, see :func:`plan_table`).
    cursor: dict = field(default_factory=dict)


def listing_digest(files: dict[str, FileState]) -> str:
    """A short fingerprint of a set of files and their states: any added, removed or changed file changes it."""
    lines = sorted(f"{path}\t{state.size}\t{state.mtime!r}\t{state.etag}" for path, state in files.items())
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()[:16]


def _seen_entry(files: dict[str, FileState], pending: str | None = None) -> dict:
    """The cursor entry of a processed set of files: count, digest and the newest modified time (the watermark)."""
    times = [state.mtime for state in files.values() if state.mtime is not None]
    entry = {"files": len(files), "digest": listing_digest(files), "watermark": max(times, default=None)}
    if pending:
        entry["pending"] = pending
    return entry


def _from_file_list(previous: dict) -> dict:
    """A cursor entry of the earlier format (every file with its state) in today's compact form."""
    seen = {path: FileState.from_json(v) for path, v in previous.get("seen", {}).items()}
    pending = {path: FileState.from_json(v) for path, v in previous.get("pending", {}).items()}
    return _seen_entry(seen, listing_digest(pending) if pending else None)


def plan_table(
    previous: dict | None,
    current: dict[str, FileState],
    now: datetime,
    settle_seconds: float,
) -> TablePlan:
    """Decide which of a table's files a run should pick up now.

    The cursor entry stays the same size however many files a table has: the number of files processed, a digest
    of their paths and states, and the newest modified time among them (the watermark). A file modified after the
    watermark is new or changed; any other difference (a file removed, or copied in with an old modified time)
    shows in the digest and is a change too. While files are being written, the entry also holds the digest of
    those files, so the next tick knows whether they still change.

    Args:
        previous: this table's cursor entry from the last tick, or None the first time: the files present then
            are the baseline and start no run.
        current: every file in the watched location now (temporary names included; they are never processed).
        now: the tick time (UTC).
        settle_seconds: a file modified longer ago than this is complete even on its first sighting.

    A table with a file still being written holds back all its changes until the next tick, so a burst of files
    (an export copying many partitions) gives one run when it is over, not one run per file. Files in an open CDM
    hour folder are left out until the hour is over.
    """
    plan = TablePlan()
    settled_before = now.timestamp() - settle_seconds
    known: dict[str, FileState] = {}
    fresh: dict[str, FileState] = {}
    previous = _from_file_list(previous) if previous is not None and "seen" in previous else previous
    mark = None if previous is None else previous.get("watermark")
    for path, state in sorted(current.items()):
        closes = hour_folder_closes_at(path)
        if is_temporary(path):
            plan.waiting[path] = "temporary name: still being written"
        elif closes is not None and now < closes:
            # An open hour folder is expected to keep growing; it does not hold back the rest of the table.
            plan.waiting[path] = f"hour folder closes at {closes:%Y-%m-%d %H:%M} UTC"
        elif state.mtime is None or (mark is not None and state.mtime <= mark):
            known[path] = state
        else:
            fresh[path] = state
    if previous is None:
        plan.cursor = _seen_entry({**known, **fresh})
        return plan
    unsettled = {p: s for p, s in fresh.items() if s.mtime > settled_before}
    still_writing = any(is_temporary(p) for p in plan.waiting) or bool(
        unsettled and listing_digest(unsettled) != previous.get("pending")
    )
    if still_writing:
        # Hold the whole table back: what is complete is looked at again on the next quiet tick.
        for path in fresh:
            plan.waiting[path] = (
                "size or modified time changed since the last check: still being written"
                if path in unsettled
                else "waiting for other files of the same table that are still being written"
            )
        plan.cursor = {k: v for k, v in previous.items() if k != "pending"}
        if unsettled:
            plan.cursor["pending"] = listing_digest(unsettled)
        return plan
    plan.ready = fresh
    plan.removed = max(0, previous["files"] - len(known) - len(fresh))
    plan.changed = bool(fresh) or listing_digest(known) != previous["digest"]
    if plan.changed:
        plan.changed_files = max(1, len(fresh), abs(len(known) + len(fresh) - previous["files"]))
    plan.cursor = _seen_entry({**known, **fresh}) if plan.changed else _seen_entry(known)
    return plan


def run_key(digests: dict[str, str]) -> str:
    """A stable key for one batch of changes (``table -> digest of its files after the batch``): the same files in
    the same states always give the same key."""
    payload = json.dumps(dict(sorted(digests.items())), sort_keys=True)
    return "new-files-" + hashlib.sha256(payload.encode()).hexdigest()[:20]


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
