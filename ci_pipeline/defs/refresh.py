"""Dagster glue of incremental refresh: code versions on every asset, the hook that records each stored asset's
provenance in the lake, and the plan that selects the stale assets for an incremental run.

The rules are in :mod:`ci_pipeline.orchestration.refresh`; docs/operations.md ("Incremental refresh") explains them.
"""

from __future__ import annotations

import dataclasses
import threading
import warnings
from collections import OrderedDict
from datetime import UTC, datetime

import dagster as dg

from ci_pipeline import __version__
from ci_pipeline.config import ProjectConfig
from ci_pipeline.lake import Lake
from ci_pipeline.orchestration.refresh import (
    AssetPath,
    Node,
    RefreshPlan,
    digest,
    load_states,
    plan_refresh,
    record_step,
    stored_version,
    table_fingerprint,
)

#: Stages whose output depends on the run date (windows end today, future activities are held back until they are
#: due, scores and memberships are as of the run): an unchanged stored output of an earlier day is stale.
DATED_STAGES = frozenset({"activities", "measures", "predictions", "enrich", "segments"})
HOOK_NAME = "record_refresh_state"
#: Metadata of an asset the refreshes do not run (a model retrained on its own schedule): the lake-relative path of
#: the file it stores, whose every new version makes the assets reading it stale.
STORED_AT = "ci_pipeline/stored_at"


def _section(config: ProjectConfig, name: str):
    return config.model_dump(mode="json", include={name}).get(name)


def stage_code_version(config: ProjectConfig, sections: list[str]) -> str:
    """A stage's code version: the package version and the configuration sections of the stage and of the stages
    before it (a setting that changes what a stage computes also reaches the stages after it)."""
    return "cv-" + digest(__version__, {name: _section(config, name) for name in sections})


def table_code_version(config: ProjectConfig, source: str, table: str) -> str:
    """An ingested table's code version: the package version and that table's own settings (and its source's)."""
    settings = config.sources[source]
    own = settings.tables[table].model_dump(mode="json")
    return "cv-" + digest(__version__, settings.model_dump(mode="json", exclude={"tables"}), own)


def ingested_tables(config: ProjectConfig) -> dict[AssetPath, tuple[str, str]]:
    """Asset path -> (source, table) for every ingested table and its quarantine table."""
    found = {}
    for source, settings in config.sources.items():
        for table in settings.tables:
            found[(source, table)] = (source, table)
            found[(source, f"{table}_corrupt")] = (source, table)
    return found


def with_code_versions(part: dg.Definitions, config: ProjectConfig, sections: list[str]) -> dg.Definitions:
    """``part`` (one stage's definitions) with a code version on each asset (see :func:`stage_code_version`)."""
    tables = ingested_tables(config)
    stage_version = stage_code_version(config, sections)

    def versioned(spec: dg.AssetSpec) -> dg.AssetSpec:
        found = tables.get(tuple(spec.key.path))
        version = table_code_version(config, *found) if found else stage_version
        return spec.replace_attributes(code_version=version)

    with warnings.catch_warnings():
        # Mapping the specs of a Definitions is a Dagster preview; its notice is not news at every load.
        warnings.simplefilter("ignore", dg.PreviewWarning)
        return part.map_asset_specs(func=versioned)


def refresh_nodes(graph, keys, lake: Lake, today: str | None = None) -> dict[AssetPath, Node]:
    """The planner's view of ``keys`` (in topological order): parents within ``keys``, code version, run date, and
    the versions of the files that parents outside ``keys`` stored (:data:`STORED_AT`).

    Raises:
        UserError, StorageError: the lake cannot be read.
    """
    today = today or datetime.now(UTC).date().isoformat()
    stored: dict[dg.AssetKey, str | None] = {}
    nodes = {}
    for key in graph.toposorted_asset_keys:
        if key not in keys:
            continue
        node = graph.get(key)
        parents = sorted(node.parent_keys, key=lambda k: k.path)
        outside = [p for p in parents if p not in keys and STORED_AT in graph.get(p).metadata]
        for parent in outside:
            if parent not in stored:
                stored[parent] = stored_version(lake, str(graph.get(parent).metadata[STORED_AT]))
        nodes[tuple(key.path)] = Node(
            parents=tuple(tuple(p.path) for p in parents if p in keys),
            code_version=node.code_version or "",
            run_date=today if node.group_name in DATED_STAGES else None,
            outside=tuple((tuple(p.path), stored[p]) for p in outside),
        )
    return nodes


def plan(config: ProjectConfig, graph, keys, lake: Lake) -> RefreshPlan:
    """Which of ``keys`` an incremental run recomputes, given what the lake recorded and the sources now.

    Raises:
        UserError, StorageError: a source location cannot be listed.
    """
    nodes = refresh_nodes(graph, keys, lake)
    tables = ingested_tables(config)
    fingerprints: dict[tuple[str, str], str] = {}
    for path in nodes:
        if path in tables:
            source, table = tables[path]
            if (source, table) not in fingerprints:
                fingerprints[(source, table)] = table_fingerprint(lake, config, source, table)
            nodes[path] = dataclasses.replace(nodes[path], fingerprint=fingerprints[(source, table)])
    return plan_refresh(nodes, load_states(lake, nodes))


#: Asset tag: the asset writes part of what an asset downstream of it makes in the same run (an export's table
#: files in the run's snapshot), so it runs whenever that asset runs, stale or not.
RUNS_WITH_DOWNSTREAM_TAG = "ci_pipeline/runs_with_downstream"


def stale_selection(graph, plan_: RefreshPlan, keys) -> set[dg.AssetKey]:
    """The stale assets, the assets that must run in the same step, and those that run with an asset downstream
    (:data:`RUNS_WITH_DOWNSTREAM_TAG`), within ``keys``."""
    stale = [dg.AssetKey(list(path)) for path in plan_.stale]
    if not stale:
        return set()
    chosen = set(dg.AssetSelection.assets(*stale).required_multi_asset_neighbors().resolve(graph)) & set(keys)
    # An export writes a whole snapshot every run: its tables' files are written ahead by their own assets, beside
    # the stages, instead of by the export at the end of the run.
    ahead = {
        key
        for key in keys
        if graph.get(key).tags.get(RUNS_WITH_DOWNSTREAM_TAG) == "true" and graph.get(key).child_entity_keys & chosen
    }
    return chosen | ahead


class _RunMaterializations:
    """The materializations of the runs in progress, read from the instance once each, by step.

    The hook runs after every step and needs that step's materializations; reading all of the run's events each
    time deserialized them again and again, a cost that grows with the square of the steps (26 steps at 100,000
    people: 906 records read in 0.39 s for 58 materializations). Each call reads only the events stored since the
    last read (the instance's cursor), files them by step and hands out the asking step's (0.05 s). One hook serves
    every run of the process (a run's hooks are called on its own thread, runs may overlap), hence the lock; the
    few most recent runs are kept."""

    KEPT_RUNS = 4

    def __init__(self):
        self._lock = threading.Lock()
        self._runs: OrderedDict[str, tuple[str | None, dict[str, list]]] = OrderedDict()

    def of_step(self, instance, run_id: str, step_key: str) -> list:
        with self._lock:
            cursor, by_step = self._runs.pop(run_id, (None, {}))
            while True:
                found = instance.get_records_for_run(
                    run_id, cursor=cursor, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION
                )
                for record in found.records:
                    event = record.event_log_entry.dagster_event
                    if event is not None:
                        by_step.setdefault(event.step_key, []).append(event)
                cursor = found.cursor or cursor
                if not found.has_more:
                    break
            mine = by_step.pop(step_key, [])
            self._runs[run_id] = (cursor, by_step)
            while len(self._runs) > self.KEPT_RUNS:
                self._runs.popitem(last=False)
            return mine


def refresh_hook(graph, keys) -> dg.HookDefinition:
    """The success hook that records, after each step, the provenance of the assets it stored (in the lake).

    ``keys``: the assets the provenance covers (those the refreshes run)."""
    nodes_keys = set(keys)
    materializations = _RunMaterializations()

    @dg.success_hook(name=HOOK_NAME, required_resource_keys={"lake"})
    def record_refresh_state(context: dg.HookContext):
        stored, fingerprints = [], {}
        for event in materializations.of_step(context.instance, context.run_id, context.step_key):
            materialization = event.event_specific_data.materialization
            path = tuple(materialization.asset_key.path)
            stored.append(path)
            version = (materialization.tags or {}).get("dagster/data_version", "")
            if version.startswith("fp-"):
                fingerprints[path] = version
        if stored:
            lake = context.resources.lake.get_lake()
            record_step(lake, stored, refresh_nodes(graph, nodes_keys, lake), fingerprints, context.run_id)

    return record_refresh_state
