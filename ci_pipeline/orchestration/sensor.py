"""One tick of the new-file sensor, on plain values: which watched tables changed and what run that asks for.

The Dagster sensor (``ci_pipeline.defs.orchestration``) only turns a :class:`Tick` into a run request.
"""

from __future__ import annotations

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
    """

    cursor: str
    run_key: str | None = None
    assets: tuple[AssetPath, ...] = ()
    tags: dict[str, str] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    waits: str = ""


def evaluate_new_files(
    cursor: str | None,
    open_lake: Callable[[], Lake],
    watched: dict[str, WatchedTable],
    settle_seconds: float,
    now: datetime,
) -> Tick:
    """One tick: list every watched location, compare with the cursor, and ask for one run of what changed.

    Args:
        cursor: the previous tick's cursor (None on the first tick: the files present become the baseline).
        open_lake: opens the configured lake (its filesystem lists the locations).
        watched: ``"source/table"`` -> what to watch.
        settle_seconds: how long a new file must stay unchanged before it is complete.
        now: the tick's time (UTC).
    """
    state = json.loads(cursor) if cursor else {}
    tables = dict(state.get("tables", {}))
    changes, waiting, problems = {}, {}, []
    try:
        opened = open_lake()
    except UserError as exc:
        return Tick(cursor=cursor or "", problems=[f"cannot open the lake: {exc}"])
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
    if not changes:
        return Tick(cursor=new_cursor, problems=problems, waits=waits)
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
