"""Incremental refresh on plain values: table fingerprints, the provenance each stored asset keeps in the lake, and
the plan of what a run must recompute.

The rules are Dagster's data-version rules (``dagster/data_version``, ``dagster/code_version``,
``dagster/input_data_version/...``): an ingested table's data version is the fingerprint of its inputs, any other
asset's is a digest of its code version and the data versions of its inputs, and an asset is stale when its code
version changed, an input's data version differs from the one it was computed from, or an input is stale itself.
The provenance is kept in the lake beside the data it describes (``ci_pipeline/_state/refresh/``), not only in a
Dagster instance: ``ci-pipeline run`` often runs on a throwaway instance, and one instance may serve several lakes,
so only the lake can tell what its own stored tables were computed from.
"""

from __future__ import annotations

import hashlib
import json
import posixpath
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from ci_pipeline.orchestration.files import FileState, hour_folder_closes_at, is_temporary, list_location, watch_root

if TYPE_CHECKING:
    from ci_pipeline.config import ProjectConfig
    from ci_pipeline.lake import Lake

#: An asset key as the path of its parts, e.g. ``("crm", "contacts")``.
AssetPath = tuple[str, ...]
STATE_ROOT = "ci_pipeline/_state/refresh"
#: The record of the last incremental run that found nothing to do (what it looked at and when).
MARKER = f"{STATE_ROOT}/_last_run.json"


def digest(*parts: object) -> str:
    """A short, stable digest of JSON-able values (dicts in key order)."""
    text = json.dumps(parts, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def table_fingerprint(lake: Lake, config: ProjectConfig, source: str, table: str, now: datetime | None = None) -> str:
    """The data version of one ingested table: its configuration and every input file's path, size, modified time
    and ETag (a Delta table's log files included, so a new version shows; an incremental layout's hour folders that
    are still open left out, since ingestion does not read them yet).

    Raises:
        UserError, StorageError: the location cannot be listed (the caller reports it).
    """
    settings = config.sources[source]
    spec = settings.tables[table]
    location = config.resolve_location(spec.path)
    fs, root = lake.filesystem_for(watch_root(location))
    now = now or datetime.now(UTC)
    lines = []
    try:
        found = list_location(fs, root)
    except Exception as exc:  # refused credentials, an unreachable account: the SDK's own error names neither
        from ci_pipeline.lake import storage_failure

        raise storage_failure(location, "list", exc) from None
    for path, state in sorted(found.items()):
        if is_temporary(path):
            continue
        closes = hour_folder_closes_at(path)
        if spec.incremental is not None and spec.incremental.closed_hours_only and closes is not None and now < closes:
            continue
        relative = posixpath.relpath(path, root) if path != root else posixpath.basename(path)
        lines.append([relative, state.size, state.mtime, state.etag])
    source_settings = settings.model_dump(mode="json", exclude={"tables"})
    return "fp-" + digest(source_settings, spec.model_dump(mode="json"), location, lines)


def stored_version(lake: Lake, relative: str) -> str | None:
    """The version of one file an asset outside the refresh stored (its size, modified time and ETag), None when
    the file is not there.

    Raises:
        UserError, StorageError: the lake cannot be read (the caller reports it).
    """
    if not lake.exists(relative):
        return None
    return "st-" + digest(relative, FileState.from_info(lake.info(relative)).to_json())


def logical_version(code_version: str, inputs: Mapping[AssetPath, str | None]) -> str:
    """The data version of an asset computed from its inputs: its code version and its inputs' data versions."""
    return "lv-" + digest(code_version, sorted(("/".join(k), v) for k, v in inputs.items()))


@dataclass(frozen=True)
class AssetState:
    """What one stored asset was computed from, recorded when its step succeeded."""

    code_version: str
    data_version: str
    #: Input asset -> the data version it had when this asset was computed.
    inputs: dict[AssetPath, str | None]
    #: The run date, for stages whose output depends on it (None for the others).
    run_date: str | None = None
    run_id: str = ""

    def to_json(self) -> dict:
        return {
            "code_version": self.code_version,
            "data_version": self.data_version,
            "inputs": {"/".join(k): v for k, v in sorted(self.inputs.items())},
            "run_date": self.run_date,
            "run_id": self.run_id,
        }

    @classmethod
    def from_json(cls, value: dict) -> AssetState:
        inputs = {tuple(k.split("/")): v for k, v in value.get("inputs", {}).items()}
        return cls(value["code_version"], value["data_version"], inputs, value.get("run_date"), value.get("run_id", ""))


def state_path(key: AssetPath) -> str:
    """Lake-relative path of one asset's provenance."""
    return f"{STATE_ROOT}/{'/'.join(key)}.json"


def load_states(lake: Lake, keys: Iterable[AssetPath]) -> dict[AssetPath, AssetState]:
    """The recorded provenance of those of ``keys`` that have one (a record that cannot be read counts as none)."""
    found = {}
    for key in keys:
        relative = state_path(key)
        if not lake.exists(relative):
            continue
        try:
            found[key] = AssetState.from_json(json.loads(lake.read_bytes(relative)))
        except (ValueError, KeyError, TypeError):
            # A damaged record only costs a recomputation of the asset and what depends on it.
            continue
    return found


def save_state(lake: Lake, key: AssetPath, state: AssetState) -> None:
    """Record one asset's provenance (after its output is stored)."""
    lake.write_bytes(state_path(key), json.dumps(state.to_json(), indent=1, sort_keys=True).encode())


@dataclass(frozen=True)
class Node:
    """One asset as the planner sees it.

    Attributes:
        parents: the assets it reads.
        code_version: its code version (configuration and package version).
        fingerprint: for an ingested table, the current fingerprint of its inputs (its data version); else None.
        run_date: the run date when its output depends on it, else None.
    """

    parents: tuple[AssetPath, ...]
    code_version: str
    fingerprint: str | None = None
    run_date: str | None = None
    #: Inputs the refresh never runs (a model retrained on its own schedule) -> the version of what they stored
    #: now (None: nothing yet). A retrained model makes what scores with it stale, as a changed file does.
    outside: tuple[tuple[AssetPath, str | None], ...] = ()


@dataclass
class RefreshPlan:
    """What an incremental run recomputes: stale asset -> why; ``history`` is False when the lake holds no
    provenance at all (no successful run wrote to it yet: a full refresh)."""

    stale: dict[AssetPath, str] = field(default_factory=dict)
    history: bool = False
    total: int = 0

    def summary(self) -> str:
        """One line: how many assets are stale, and the first reasons."""
        if not self.history:
            return "no earlier run recorded in this lake: full refresh"
        if not self.stale:
            return f"all {self.total} assets are up to date: nothing to run"
        # An input "changed since it was computed" is a cause (a run stopped half way, or ran part of the
        # pipeline, after storing that input): only "is recomputed" follows from another stale asset.
        causes = [f"{'/'.join(k)} ({why})" for k, why in self.stale.items() if not why.endswith(" is recomputed")]
        shown = "; ".join(causes[:5]) + (f"; and {len(causes) - 5} more" if len(causes) > 5 else "")
        # The others are stale only because an input is: named by count, so the figures add up.
        following = len(self.stale) - len(causes)
        shown += f"; {following} downstream of {'them' if len(causes) > 1 else 'it'}" if following else ""
        return f"{len(self.stale)} of {self.total} assets to recompute: {shown}"


#: The code version an asset's record is given when what it computed was released by hand (static segments by
#: `ci-pipeline segment refresh`): the next incremental run computes it again.
RELEASED = "released"


def release(lake: Lake, keys: Iterable[AssetPath]) -> None:
    """Mark the recorded assets ``keys`` to be computed again by the next incremental run (what they read has not
    changed, but what they keep was released)."""
    for key, state in load_states(lake, keys).items():
        save_state(lake, key, AssetState(RELEASED, state.data_version, state.inputs, state.run_date, state.run_id))


def _why_stale(node: Node, state: AssetState | None, stale: Mapping[AssetPath, str], states) -> str | None:
    if state is None:
        return "never computed into this lake"
    if state.code_version == RELEASED:
        return "released by `ci-pipeline segment refresh`"
    if state.code_version != node.code_version:
        return "configuration or code changed"
    if node.fingerprint is not None and state.data_version != node.fingerprint:
        return "source files changed"
    if node.run_date is not None and state.run_date != node.run_date:
        return f"computed on {state.run_date}, the run date is {node.run_date}"
    for parent, version in node.outside:
        if state.inputs.get(parent) != version:
            return f"{'/'.join(parent)} was stored anew since it was computed"
    for parent in node.parents:
        if parent in stale:
            return f"input {'/'.join(parent)} is recomputed"
        recorded = states.get(parent)
        if recorded is None or state.inputs.get(parent) != recorded.data_version:
            return f"input {'/'.join(parent)} changed since it was computed"
    return None


def plan_refresh(nodes: Mapping[AssetPath, Node], states: Mapping[AssetPath, AssetState]) -> RefreshPlan:
    """Which assets are stale, in the order of ``nodes`` (which must list parents before children).

    A parent outside ``nodes`` (an asset the refresh does not run) counts by its recorded data version only.
    """
    plan = RefreshPlan(history=bool(states), total=len(nodes))
    for key, node in nodes.items():
        why = _why_stale(node, states.get(key), plan.stale, states)
        if why is not None:
            plan.stale[key] = why
    return plan


def record_step(
    lake: Lake,
    materialized: Iterable[AssetPath],
    nodes: Mapping[AssetPath, Node],
    fingerprints: Mapping[AssetPath, str],
    run_id: str,
) -> None:
    """Record the provenance of the assets one successful step stored (in ``nodes`` order, so an asset of the
    step that reads another of the same step sees its new data version).

    Args:
        lake: where the records go.
        materialized: the assets the step stored.
        nodes: every asset of the definitions (parents, code versions, run dates).
        fingerprints: the data versions the step gave its ingested tables.
        run_id: the run, for the record.
    """
    done = set(materialized)
    ordered = [key for key in nodes if key in done]
    parents = {p for key in ordered for p in nodes[key].parents}
    known = {k: s.data_version for k, s in load_states(lake, parents - done).items()}
    for key in ordered:
        node = nodes[key]
        inputs = {parent: known.get(parent) for parent in node.parents} | dict(node.outside)
        version = fingerprints.get(key) or logical_version(node.code_version, inputs)
        save_state(lake, key, AssetState(node.code_version, version, inputs, node.run_date, run_id))
        known[key] = version


def save_marker(lake: Lake, plan: RefreshPlan, now: datetime) -> None:
    """Record that an incremental run looked at the lake and found nothing to recompute."""
    marker = {"at": now.isoformat(timespec="seconds"), "assets": plan.total, "stale": len(plan.stale)}
    lake.write_bytes(MARKER, json.dumps(marker, sort_keys=True).encode())
