"""Launching runs from this process (the `run` command, `bench pipeline`): choosing the job of a selection and
executing it as a run of the code location's job, so the UI lists it on the job's page."""

from __future__ import annotations

import re
from collections.abc import Set as AbstractSet

import dagster as dg
from dagster._core.definitions.job_base import InMemoryJob
from dagster._core.execution.api import create_execution_plan, execute_run
from dagster._core.remote_origin import RegisteredCodeLocationOrigin, RemoteJobOrigin, RemoteRepositoryOrigin

from ci_pipeline.defs.refresh import plan, stale_selection
from ci_pipeline.defs.registry import REFRESH_TAG
from ci_pipeline.defs.threaded import threaded_executor
from ci_pipeline.errors import UserError
from ci_pipeline.orchestration import MODE_TAG
from ci_pipeline.orchestration.refresh import RefreshPlan

#: The code location and repository the workspace serves the definitions as (workspace.yaml, and the project of
#: pyproject.toml for `dg dev`). A run that names them belongs to its job in the UI: the job's Runs tab, the
#: Overview timeline, the run's "launched from" link.
CODE_LOCATION = "ci_pipeline"
REPOSITORY = "__repository__"


def job_names(defs: dg.Definitions) -> list[str]:
    """The named jobs a user can run (Dagster's internal asset job left out)."""
    return sorted(job.name for job in defs.resolve_all_job_defs() if not job.name.startswith("__"))


def choose_job(defs: dg.Definitions, job_name: str | None, select: str | None) -> tuple[dg.JobDefinition, str]:
    """The job to execute for ``--job``/``--select`` and the run mode it stands for (full or partial)."""
    if job_name:
        names = job_names(defs)
        if job_name not in names:
            raise UserError(f"--job {job_name}: no such job; the jobs of this configuration are: {', '.join(names)}")
        job = defs.resolve_job_def(job_name)
        mode = job.tags.get(MODE_TAG, "partial")
    elif select:
        # An explicit selection may name anything, on-demand assets included (see ``_on_demand_named``).
        job, mode = defs.resolve_implicit_global_asset_job_def(), "full"
    elif "full_refresh" in job_names(defs):
        job = defs.resolve_job_def("full_refresh")
        mode = job.tags.get(MODE_TAG, "full")
    else:
        job, mode = defs.resolve_implicit_global_asset_job_def(), "full"
    if select:
        try:
            selection = dg.AssetSelection.from_string(select).required_multi_asset_neighbors()
            keys = _on_demand_named(select, selection.resolve(defs.resolve_asset_graph()), defs)
        except Exception as exc:
            raise UserError(f"--select {select!r}: {exc}") from None
        if job_name:
            keys &= job.asset_layer.selected_asset_keys
        if not keys:
            raise UserError(f"--select {select!r}: selects no assets{f' of job {job_name}' if job_name else ''}")
        job, mode = job.get_subset(asset_selection=keys), "partial"
    if job.name.startswith("__") and "full_refresh" in job_names(defs):
        # A selection runs as Dagster's own asset job, which has none of the hooks of the project's jobs; with them
        # its steps record their provenance for the next incremental run too.
        job = job.with_hooks(set(defs.resolve_job_def("full_refresh").hook_defs))
    return job, mode


def _on_demand_named(select: str, keys: AbstractSet[dg.AssetKey], defs: dg.Definitions) -> set[dg.AssetKey]:
    """``keys`` without the on-demand assets (a match or prediction model, an export marked ``on_demand``) that
    ``select`` reaches only through a group, a tag or ``+``: ``--select 'group:unify+'`` recomputes unification
    with the stored model, while ``--select unify/match_model`` retrains it."""
    on_demand = dg.AssetSelection.tag(REFRESH_TAG, "on_demand").resolve(defs.resolve_asset_graph())
    named = {k for k in keys & on_demand if re.search(rf"(?<![\w/]){re.escape(k.to_user_string())}(?![\w/])", select)}
    return (set(keys) - on_demand) | named


def incremental_job(defs: dg.Definitions, config, lake) -> tuple[dg.JobDefinition | None, str, RefreshPlan]:
    """The run an incremental refresh needs now: ``(job, mode, plan)``.

    The full refresh when the lake records no earlier run (or the configuration has no incremental job), the
    ``incremental_refresh`` job reduced to the stale assets when some are, and no job when every asset is up to
    date.

    Raises:
        UserError, StorageError: a source location cannot be listed.
    """
    names = job_names(defs)
    if "incremental_refresh" not in names:
        return choose_job(defs, None, None) + (RefreshPlan(),)
    graph = defs.resolve_asset_graph()
    job = defs.resolve_job_def("incremental_refresh")
    keys = job.asset_layer.selected_asset_keys
    found = plan(config, graph, keys, lake)
    if not found.history:
        return choose_job(defs, None, None) + (found,)
    stale = stale_selection(graph, found, keys)
    if not stale:
        return None, "incremental", found
    return job.get_subset(asset_selection=stale), "incremental", found


def execute_as_job_run(
    job: dg.JobDefinition,
    instance: dg.DagsterInstance,
    tags: dict,
    run_config: dict,
    on_event=None,
    steps_at_once: int = 1,
):
    """Execute ``job`` in this process as a run of the code location's job, and return the result.

    ``on_event`` (optional) is called with every event log entry of the run as it is stored (progress, figures).
    ``steps_at_once``: steps the plan has ready that run side by side, each on a thread of this process
    (:mod:`ci_pipeline.defs.threaded`); 1: one after another.

    ``execute_in_process`` records runs that belong to no code location: the UI lists them under Runs only, never
    on their job's page or the timeline. Here the run is created with the origin of the job in the workspace
    (:data:`CODE_LOCATION`), then executed in this process with the in-process executor, so it is as fast as
    before and the UI treats it like a run it launched itself.
    """
    in_process = job.with_executor_def(
        threaded_executor(steps_at_once) if steps_at_once > 1 else dg.in_process_executor
    )
    repository = RemoteRepositoryOrigin(RegisteredCodeLocationOrigin(CODE_LOCATION), REPOSITORY)
    plan = create_execution_plan(
        InMemoryJob(in_process),
        run_config=run_config,
        instance_ref=instance.get_ref() if instance.is_persistent else None,
    )
    run = instance.create_run_for_job(
        job_def=in_process,
        execution_plan=plan,
        run_config=run_config,
        tags={**in_process.run_tags, **tags},
        asset_selection=in_process.asset_selection,
        remote_job_origin=RemoteJobOrigin(repository, job.name),
    )
    if on_event is not None:
        instance.add_event_listener(run.run_id, on_event)
    return execute_run(InMemoryJob(in_process), run, instance)
