"""One tick of the new-file sensor, on plain values: which watched tables changed and what run that asks for.

The Dagster sensor (``ci_pipeline.defs.orchestration``) only turns a :class:`Tick` into a run request.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

from ci_pipeline.errors import UserError
from ci_pipeline.orchestration.files import list_location, plan_table, run_key
from ci_pipeline.orchestration.tags import MODE_TAG, NEW_FILES_SENSOR, TRIGGER_TAG
from ci_pipeline.redact import first_line

if TYPE_CHECKING:
    from ci_pipeline.lake import Lake

#: An asset key as the path of its parts, e.g. ``("crm", "contacts")``.
AssetPath = tuple[str, ...]
#: Opens the lake whose credentials list the sources; ``open_lake(audit_refusal)``: False does not audit a refusal
#: to use ``lake.connection`` again (the sensor asks every few seconds; the cursor remembers what it said).
OpenLake = Callable[[bool], "Lake"]


@dataclass(frozen=True)
class WatchedTable:
    """A source table the new-file sensor lists, and the assets one of its changes re-runs."""

    location: str
    root: str
    assets: tuple[AssetPath, ...]


@dataclass(frozen=True)
class Tick:
    """What one sensor tick found.

    Attributes:
        cursor: the new cursor (kept even when nothing changed).
        run_key: the run to request, or None when no table has ready changes.
        assets: the assets that run materialises.
        tags: the run's tags.
        problems: locations that could not be listed, one message each.
        waits: one line on the files that wait and why (empty when none).
        opened: False when the lake could not be opened (or its connection was refused): nothing was listed.
        baseline: the files present were recorded as the baseline (no table had been listed before).
    """

    cursor: str
    run_key: str | None = None
    assets: tuple[AssetPath, ...] = ()
    tags: dict[str, str] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    waits: str = ""
    opened: bool = True
    baseline: bool = False


def evaluate_new_files(
    cursor: str | None,
    open_lake: OpenLake,
    watched: dict[str, WatchedTable],
    settle_seconds: float,
    now: datetime,
) -> Tick:
    """One tick: list every watched location, compare with the cursor, and ask for one run of what changed.

    Args:
        cursor: the previous tick's cursor (None on the first tick: the files present become the baseline).
        open_lake: opens the configured lake (its filesystem lists the locations), as the principal the runs it
            starts act as; a refusal starts nothing and is audited once while it stays the same.
        watched: ``"source/table"`` -> what to watch.
        settle_seconds: how long a new file must stay unchanged before it is complete.
        now: the tick's time (UTC).
    """
    state = json.loads(cursor) if cursor else {}
    tables = dict(state.get("tables", {}))
    changes, waiting, problems = {}, {}, []
    try:
        opened = open_lake(False)
    except UserError as exc:
        return _cannot_open(exc, cursor, state, sorted(watched), open_lake)
    for table_id, watch in watched.items():
        try:
            fs, root = opened.filesystem_for(watch.root)
            current = list_location(fs, root)
        except Exception as exc:  # an unreachable location must not stop the others or lose the cursor
            said = first_line(exc) or type(exc).__name__
            problems.append(
                f"{table_id}: cannot list {watch.location} ({type(exc).__name__}: {said}); check the path, "
                "the credentials and that the storage is reachable"
            )
            continue
        plan = plan_table(tables.get(table_id), current, now, settle_seconds)
        tables[table_id] = plan.cursor
        if plan.changed:
            changes[table_id] = plan.changed_files
        if plan.waiting:
            waiting[table_id] = plan.waiting
    new_cursor = json.dumps({"version": 2, "tables": tables}, sort_keys=True)
    waits = "; ".join(
        f"{table_id}: {len(files)} file(s) waiting ({sorted(set(files.values()))[0]})"
        for table_id, files in sorted(waiting.items())
    )
    baseline = not state.get("tables") and bool(tables)
    if not changes:
        return Tick(cursor=new_cursor, problems=problems, waits=waits, baseline=baseline)
    return Tick(
        cursor=new_cursor,
        run_key=run_key({table_id: tables[table_id]["digest"] for table_id in changes}),
        assets=tuple(sorted({path for table_id in changes for path in watched[table_id].assets})),
        tags={
            MODE_TAG: "incremental",
            TRIGGER_TAG: NEW_FILES_SENSOR,
            "ci_pipeline/changed_tables": ",".join(sorted(changes)),
            "ci_pipeline/changed_files": str(sum(changes.values())),
        },
        problems=problems,
        waits=waits,
    )


def _cannot_open(exc: UserError, cursor: str | None, state: dict, watched: list[str], open_lake: OpenLake) -> Tick:
    """The tick of a lake that cannot be opened: nothing is listed or started, and the cursor is kept.

    A refusal to use ``lake.connection`` (its principal may not) is remembered in the cursor and audited when it
    is new or its reason changed, not at every tick."""
    from ci_pipeline.governance.service import AccessDenied  # the store's SQLAlchemy only when it is needed

    if not isinstance(exc, AccessDenied):
        return Tick(cursor=cursor or "", problems=[f"cannot open the lake: {exc}"], opened=False)
    reason = str(exc)
    if reason != state.get("refused"):
        with contextlib.suppress(UserError):
            open_lake(True)  # the same question, audited
    kept = json.dumps({**state, "version": 2, "tables": state.get("tables", {}), "refused": reason}, sort_keys=True)
    problem = f"cannot list the source locations ({', '.join(watched)}): {reason}"
    return Tick(cursor=kept, problems=[problem], opened=False)
