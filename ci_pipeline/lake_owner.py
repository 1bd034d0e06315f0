"""The pipeline environment that owns a lake folder: one lake folder serves one environment.

The first run of an environment writes a marker into the lake's state (:data:`MARKER`) naming its environment
(the configuration's ``name``). A run of another environment pointed at the same folder is refused before it writes
anything: it would silently rewrite the other's tables, exports and incremental-refresh record, and each run of the
two would undo the other's. The sink keeps the same rule for Dataverse environments
(:mod:`ci_pipeline.dataverse.attachment`).

An environment renamed on purpose takes its lake over with ``ci-pipeline lake attach --replace <old name>``
(:func:`attach_lake`). Works on any :class:`~ci_pipeline.lake.Lake`: a local folder or Azure storage.
"""

from __future__ import annotations

import datetime as dt
import json
import shlex
from typing import TYPE_CHECKING

from ci_pipeline.errors import UserError

if TYPE_CHECKING:
    from ci_pipeline.lake import Lake

#: The marker, lake-relative: beside the other state the pipeline keeps in the lake.
MARKER = "ci_pipeline/_state/environment.json"


class LakeOwnedError(UserError):
    """The lake folder belongs to another pipeline environment."""


def lake_owner(lake: Lake) -> dict | None:
    """The lake's marker (``environment``, ``attached_at``), or None when no environment has claimed it yet."""
    if not lake.exists(MARKER):
        return None
    try:
        found = json.loads(lake.read_bytes(MARKER))
    except ValueError:
        found = None
    if not isinstance(found, dict) or not isinstance(found.get("environment"), str):
        raise UserError(
            f"{lake.url(MARKER)} is not a readable environment marker; take the lake over for this environment with "
            "`ci-pipeline lake attach` (it rewrites the marker)"
        )
    return found


def claim_lake(lake: Lake, environment: str, write: bool = True) -> bool:
    """Check that ``environment`` owns ``lake``, writing the marker when no environment has claimed it (unless
    ``write`` is False: a check before a run, which claims it itself).

    Returns True when no environment had claimed the lake.

    Raises:
        LakeOwnedError: naming both environments, the lake and the two fixes.
    """
    found = lake_owner(lake)
    if found is None:
        if write:
            _write(lake, environment)
        return True
    owner = found["environment"]
    if owner != environment:
        raise LakeOwnedError(
            f"lake {lake.url()} belongs to environment {owner!r} (since {found.get('attached_at', '?')}), and this "
            f"configuration is environment {environment!r} (its `name`); two environments writing one lake folder "
            f"overwrite each other's tables, exports and refresh record. Give {environment!r} a lake folder of its "
            f"own (lake.url), or, if {owner!r} was renamed to {environment!r}, take the lake over with "
            f"`ci-pipeline lake attach --replace {shlex.quote(owner)}`"
        )
    return False


def attach_lake(lake: Lake, environment: str, replace: str | None = None) -> str | None:
    """Make ``environment`` the owner of ``lake``; returns the environment that owned it before (None: none).

    Taking over another environment's lake must name it (``replace``), so it is never done by mistake.

    Raises:
        LakeOwnedError: another environment owns the lake and ``replace`` does not name it.
    """
    try:
        found = lake_owner(lake)
    except UserError:
        found = {"environment": None}  # an unreadable marker: rewritten
    owner = found["environment"] if found else None
    if owner is not None and owner != environment and owner != replace:
        raise LakeOwnedError(
            f"lake {lake.url()} belongs to environment {owner!r}; to make it {environment!r}'s, name the environment "
            f"it replaces: `ci-pipeline lake attach --replace {shlex.quote(owner)}`"
        )
    if owner != environment:
        _write(lake, environment)
    return owner


def _write(lake: Lake, environment: str) -> None:
    marker = {"environment": environment, "attached_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds")}
    lake.write_bytes(MARKER, json.dumps(marker, sort_keys=True).encode())
