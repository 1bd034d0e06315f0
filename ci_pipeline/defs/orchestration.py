"""Dagster definitions of orchestration: jobs, schedules, the new-file and failure sensors, freshness, executor.

Everything here is built over the assets the other stages actually produced (``build(config, stages)``), so a
configuration without unification or publishing simply has no jobs or policies for them.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import dagster as dg

from ci_pipeline.config import ProjectConfig
from ci_pipeline.config.base import resolve_secret
from ci_pipeline.config.orchestration import When
from ci_pipeline.defs import ingest
from ci_pipeline.defs import refresh as refresh_defs
from ci_pipeline.defs.registry import REFRESH_TAG, REFRESHED, JobSpec, Stage, stage_jobs
from ci_pipeline.defs.resources import LakeResource
from ci_pipeline.defs.stages import PUBLISH, STAGES
from ci_pipeline.defs.threaded import threaded_executor
from ci_pipeline.errors import UserError
from ci_pipeline.orchestration import (
    FAILURE_SENSOR,
    MODE_TAG,
    NEW_FILES_SENSOR,
    TRIGGER_TAG,
    FailedRun,
    WatchedTable,
    evaluate_new_files,
    failure_notice,
    failure_reason,
    watch_root,
)
from ci_pipeline.orchestration.notify import notify_webhook
from ci_pipeline.orchestration.schedule import describe_schedule
from ci_pipeline.orchestration.tags import UI_TRIGGER
from ci_pipeline.redact import install_log_redaction, redact_record

#: ``executor: {kind: multiprocess}`` at its default bound: one process per step, at most two at a time.
EXECUTOR = dg.multiprocess_executor.configured({"max_concurrent": 2}, name="multiprocess_bounded")
log = logging.getLogger("ci_pipeline.orchestration")

__all__ = [
    "EXECUTOR",
    "FAILURE_SENSOR",
    "MODE_TAG",
    "NEW_FILES_SENSOR",
    "REFRESH_TAG",
    "TRIGGER_TAG",
    "JobSpec",
    "build",
    "failure_reason",
    "job_specs",
    "step_assets",
    "watched_tables",
]


def job_specs(config: ProjectConfig, graph, stages: tuple[Stage, ...] = STAGES) -> list[JobSpec]:
    """The run modes that exist for this configuration: the two refreshes, then the jobs the stages declare (a job
    whose selection is empty is left out)."""
    candidates = [
        JobSpec("full_refresh", REFRESHED, "Every stage, ingest to publish.", "full"),
        JobSpec(
            "incremental_refresh",
            REFRESHED,
            "Started by the new-file sensor for the sources whose files changed and everything downstream.",
            "incremental",
        ),
        *stage_jobs(config, graph.get_all_asset_keys(), stages),
    ]
    # A stage may produce several tables in one step that cannot run apart (a table and its quarantine table).
    specs = [replace(spec, selection=spec.selection.required_multi_asset_neighbors()) for spec in candidates]
    return [spec for spec in specs if spec.selection.resolve(graph)]


def _job(spec: JobSpec, hooks: set[dg.HookDefinition]) -> dg.UnresolvedAssetJobDefinition:
    # A run launched from the UI keeps the trigger tag; the CLI, the schedules and the sensor set their own.
    tags = {MODE_TAG: spec.mode, TRIGGER_TAG: UI_TRIGGER}
    return dg.define_asset_job(
        spec.name, selection=spec.selection, description=spec.description, tags=tags, hooks=hooks
    )


def _resolve_selection(text: str, graph, key: str) -> dg.AssetSelection:
    try:
        with warnings.catch_warnings():
            # Dagster's own string parser passes a beta parameter for `group:`; that is no news to the user.
            warnings.simplefilter("ignore", dg.BetaWarning)
            selection = dg.AssetSelection.from_string(text).required_multi_asset_neighbors()
            found = selection.resolve(graph)
    except Exception as exc:
        raise UserError(f"{key}: {text!r} is not a valid asset selection ({exc}); e.g. 'group:publish'") from None
    if not found:
        groups = sorted({g for g in (graph.get(k).group_name for k in graph.get_all_asset_keys()) if g})
        raise UserError(
            f"{key}: {text!r} selects no assets; the groups of this configuration are {', '.join(groups) or 'none'}"
        )
    return selection


#: Chooses the assets of an incremental tick: ``select(lake resource)`` -> (asset keys, run mode, why); no keys:
#: nothing to run.
Selector = Callable[[LakeResource], tuple[list[dg.AssetKey], str, str]]


def schedule_for(
    name: str,
    when: When,
    timezone: str,
    job,
    mode: str,
    description: str,
    enabled: bool,
    select: Selector | None = None,
) -> dg.ScheduleDefinition:
    """A schedule firing on ``when`` in ``timezone``; each tick's run is tagged with its local scheduled time.

    With ``select`` the tick runs only the assets it chooses (the incremental refresh), or skips with its reason."""
    crons = when.cron_schedules()
    zone = ZoneInfo(timezone)

    @dg.schedule(
        name=name,
        cron_schedule=crons[0] if len(crons) == 1 else crons,
        execution_timezone=timezone,
        job=job,
        description=description,
        default_status=dg.DefaultScheduleStatus.RUNNING if enabled else dg.DefaultScheduleStatus.STOPPED,
        tags={MODE_TAG: mode, TRIGGER_TAG: f"schedule:{name}"},
        required_resource_keys={"lake"} if select is not None else None,
    )
    def _schedule(context: dg.ScheduleEvaluationContext):
        scheduled = context.scheduled_execution_time or datetime.now(UTC)
        local = scheduled.astimezone(zone).isoformat(timespec="minutes")
        tags = {MODE_TAG: mode, TRIGGER_TAG: f"schedule:{name}", "ci_pipeline/scheduled_for": local}
        if select is None:
            return dg.RunRequest(run_key=f"{name}@{local}", tags=tags)
        keys, chosen, why = select(context.resources.lake)
        if not keys:
            return dg.SkipReason(why)
        return dg.RunRequest(run_key=f"{name}@{local}", tags={**tags, MODE_TAG: chosen}, asset_selection=keys)

    return _schedule


def incremental_selector(config: ProjectConfig, graph, keys) -> Selector:
    """The selection of an incremental tick over ``keys``: every asset when the lake records no earlier run, else
    the stale ones (changed tables, changed configuration, and everything downstream of them). The lake is read as
    governance.service_principal, whom the run acts as."""

    def select(resource: LakeResource) -> tuple[list[dg.AssetKey], str, str]:
        found = refresh_defs.plan(config, graph, keys, resource.get_unattended_lake(config))
        if not found.history:
            return sorted(keys, key=lambda k: k.path), "full", found.summary()
        stale = refresh_defs.stale_selection(graph, found, keys)
        return sorted(stale, key=lambda k: k.path), "incremental", found.summary()

    return select


def _selected(selection: dg.AssetSelection, graph) -> str:
    """What a selection holds, in words: ``3 assets (group publish)``."""
    keys = selection.resolve(graph)
    groups = sorted({graph.get(k).group_name for k in keys if graph.get(k).group_name})
    label = "group" if len(groups) == 1 else "groups"
    return f"{len(keys)} asset{'s' if len(keys) != 1 else ''} ({label} {', '.join(groups)})"


def build_schedules(config: ProjectConfig, graph, jobs: dict[str, dg.UnresolvedAssetJobDefinition]) -> list:
    """The system refresh and the per-item schedules of the configuration, each described in words: what runs
    and when, in its time zone."""
    orchestration = config.orchestration
    schedules = []
    refresh = orchestration.refresh
    if refresh is not None and graph.get_all_asset_keys():
        when = describe_schedule(refresh.cron_schedules(), orchestration.timezone_of(refresh))
        select = None
        if refresh.select.strip() == "*" and "incremental_refresh" in jobs:
            job, mode = jobs["incremental_refresh"], "incremental"
            select = incremental_selector(config, graph, REFRESHED.resolve(graph))
            what = (
                "Runs what changed since the last run: changed tables, changed settings and every stage downstream "
                "of them (job incremental_refresh; everything on the first run)"
            )
        else:
            selection = _resolve_selection(refresh.select, graph, "orchestration.refresh.select")
            job = dg.define_asset_job("refresh_job", selection=selection, tags={TRIGGER_TAG: UI_TRIGGER})
            mode = "partial"
            what = f"Refreshes {refresh.select!r}: {_selected(selection, graph)}"
        schedules.append(
            schedule_for(
                "refresh",
                refresh,
                orchestration.timezone_of(refresh),
                job,
                mode,
                f"{what}, {when}.",
                refresh.enabled,
                select,
            )
        )
    training = config.predictions.training if config.predictions is not None else None
    if training is not None and "train_predictions" in jobs:
        when = describe_schedule(training.cron_schedules(), orchestration.timezone_of(training))
        schedules.append(
            schedule_for(
                "train_predictions",
                training,
                orchestration.timezone_of(training),
                jobs["train_predictions"],
                "partial",
                f"Retrains the prediction models {when}; the refreshes in between score with the stored models.",
                training.enabled,
            )
        )
    match = config.unify.match if config.unify is not None else None
    if match is not None and match.method == "probabilistic" and "train_match_model" in jobs:
        when = describe_schedule(match.training.cron_schedules(), orchestration.timezone_of(match.training))
        schedules.append(
            schedule_for(
                "train_match_model",
                match.training,
                orchestration.timezone_of(match.training),
                jobs["train_match_model"],
                "partial",
                f"Retrains the probabilistic match model {when}; the runs in between score with the stored model.",
                match.training.enabled,
            )
        )
    for index, item in enumerate(orchestration.schedules):
        selection = _resolve_selection(item.select, graph, f"orchestration.schedules[{index}].select")
        job = dg.define_asset_job(
            f"{item.name}_job",
            selection=selection,
            description=item.description or None,
            tags={TRIGGER_TAG: UI_TRIGGER},
        )
        when = describe_schedule(item.cron_schedules(), orchestration.timezone_of(item))
        what = item.description.rstrip(".") if item.description else f"Refreshes {item.select!r}"
        schedules.append(
            schedule_for(
                item.name,
                item,
                orchestration.timezone_of(item),
                job,
                "partial",
                f"{what}: {_selected(selection, graph)}, {when}.",
                item.enabled,
            )
        )
    return schedules


def watched_tables(config: ProjectConfig, graph) -> dict[str, WatchedTable]:
    """``"source/table"`` -> what to watch, for every configured table that has an ingestion asset."""
    keys = graph.get_all_asset_keys()
    watched = {}
    for source_name, source in config.sources.items():
        for table_name, table in source.tables.items():
            key = ingest.table_key(source_name, table_name)
            if key not in keys:
                continue
            location = config.resolve_location(table.path)
            # On-demand assets (a match model, a prediction model) are retrained when asked, not when a file lands.
            downstream = dg.AssetSelection.assets(key).downstream() & REFRESHED
            affected = downstream.required_multi_asset_neighbors().resolve(graph)
            corrupt = ingest.corrupt_key(source_name, table_name)
            if corrupt in keys:
                affected |= {corrupt}
            watched[f"{source_name}/{table_name}"] = WatchedTable(
                location, watch_root(location), tuple(sorted(tuple(k.path) for k in affected))
            )
    return watched


def build_new_file_sensor(config: ProjectConfig, graph, job) -> dg.SensorDefinition | None:
    """The sensor that starts one incremental run when source files are added or changed."""
    watched = watched_tables(config, graph)
    if not watched:
        return None
    settings = config.orchestration.new_files

    @dg.sensor(
        name=NEW_FILES_SENSOR,
        job=job,
        minimum_interval_seconds=settings.interval_seconds,
        default_status=dg.DefaultSensorStatus.RUNNING if settings.enabled else dg.DefaultSensorStatus.STOPPED,
        description=(
            f"Watches {len(watched)} source table location(s) and starts one run of the changed tables and "
            "everything downstream when files are added or changed (files still being written wait)."
        ),
    )
    def new_files(context: dg.SensorEvaluationContext, lake: LakeResource):
        # Listed as governance.service_principal, whom the runs it starts act as (not the daemon's OS user).
        tick = evaluate_new_files(
            context.cursor,
            lambda audit_refusal: lake.get_unattended_lake(config, audit_refusal),
            watched,
            settings.settle_seconds,
            datetime.now(UTC),
        )
        for problem in tick.problems:
            context.log.warning(problem)
        if tick.run_key is not None:
            request = dg.RunRequest(
                run_key=tick.run_key, asset_selection=[dg.AssetKey(list(p)) for p in tick.assets], tags=tick.tags
            )
            return dg.SensorResult(run_requests=[request], cursor=tick.cursor)
        if not tick.opened:
            reason = ""  # the problem says why nothing was listed
        elif tick.baseline:
            reason = "recorded the files present now as the baseline; new or changed files from now on start a run"
        else:
            reason = "no new or changed files"
        reason = "; ".join(part for part in (reason, tick.waits, *tick.problems) if part)
        return dg.SensorResult(skip_reason=dg.SkipReason(reason), cursor=tick.cursor)

    return new_files


def step_assets(graph) -> dict[str, list[str]]:
    """Step (op) name -> the asset keys it materialises, so that messages name assets rather than steps."""
    found: dict[str, list[str]] = {}
    for key in graph.get_all_asset_keys():
        found.setdefault(graph.get(key).assets_def.node_def.name, []).append(key.to_user_string())
    return {step: sorted(keys) for step, keys in found.items()}


#: The failures the console shortens: a step's, its resources' (the governance checks of a run refuse it there) and
#: the run's.
_FAILURES = {
    dg.DagsterEventType.STEP_FAILURE,
    dg.DagsterEventType.RESOURCE_INIT_FAILURE,
    dg.DagsterEventType.RUN_FAILURE,
}


class _ConsoleFilter(logging.Filter):
    """Redacts every console line; below DEBUG, a failure caused by a :class:`UserError` is one line naming the
    assets and the fix instead of Dagster's stack traces (the run's event log keeps the full trace for the UI)."""

    def __init__(self, assets: dict[str, list[str]], show_traces: bool):
        super().__init__()
        self.assets, self.show_traces = assets, show_traces

    def filter(self, record: logging.LogRecord) -> bool:
        redact_record(record)
        meta = getattr(record, "dagster_meta", None) or {}
        event = meta.get("dagster_event")
        if self.show_traces or event is None or event.event_type not in _FAILURES:
            return True
        error = getattr(event.event_specific_data, "error", None)
        message, is_user_error = failure_reason(error)
        if error is not None and is_user_error:
            where = ", ".join(self.assets.get(event.step_key or "", [])) or event.step_key or "the run"
            headline = str(record.msg).split("\n\n", 1)[0]
            record.msg = f"{headline}\n  {where} failed: {message}"
            run_id = str(meta.get("run_id") or "")
            if event.event_type != dg.DagsterEventType.RUN_FAILURE:
                _SHOWN.setdefault(run_id, set()).add(message)
            elif message in _SHOWN.pop(run_id, set()):
                # The run's failure is its last event and repeats its resources' or a step's reason: said once.
                record.msg = headline
        return True


#: Run id -> the failure reasons its console has shown. Module-wide: each step's and the run's loggers are set up
#: apart, so no one filter sees every event of a run.
_SHOWN: dict[str, set[str]] = {}


def console_logger(assets: dict[str, list[str]]) -> dg.LoggerDefinition:
    """Dagster's colored console logger with :class:`_ConsoleFilter` (``assets``: step name -> asset keys)."""

    @dg.logger(
        {
            "log_level": dg.Field(str, is_required=False, default_value="INFO"),
            "name": dg.Field(str, is_required=False, default_value="dagster"),
        },
        description="The colored console logger, redacted; a user error is one clear line unless log_level is DEBUG.",
    )
    def console(init_context: dg.InitLoggerContext) -> logging.Logger:
        logger = dg.colored_console_logger.logger_fn(init_context)
        logger.addFilter(_ConsoleFilter(assets, show_traces=logger.level <= logging.DEBUG))
        return logger

    return console


def build_failure_sensor(config: ProjectConfig) -> dg.SensorDefinition:
    """Writes a log line for every failed run of this project, and POSTs it to the webhook if one is set."""
    settings = config.orchestration.notifications

    @dg.run_failure_sensor(
        name=FAILURE_SENSOR,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Reports every failed run: a log line, and a JSON POST to the configured webhook.",
    )
    def failure_notification(context: dg.RunFailureSensorContext):
        run = context.dagster_run
        failed = FailedRun(
            project=config.name,
            run_id=run.run_id,
            job=run.job_name,
            tags=run.tags,
            steps=[
                (event.step_key, event.event_specific_data.error if event.event_specific_data else None)
                for event in context.get_step_failure_events()
            ],
            error=getattr(context.failure_event.event_specific_data, "error", None),
        )
        notice = failure_notice(failed, settings.ui_url)
        log.error("run failed: %s", notice["text"])
        context.log.error(notice["text"])
        # webhook_url as written, or the governed webhook_connection resolved as governance.service_principal.
        problem = notify_webhook(config, notice, lambda ref, key: resolve_secret(ref, key, config.base_dir))
        if problem:
            log.error(problem)
            context.log.error(problem)

    return failure_notification


def with_freshness(config: ProjectConfig, stages: dg.Definitions, graph) -> dg.Definitions:
    """Attach a freshness policy to the published tables (group ``publish``): overdue after ``max_age_hours``."""
    published = sorted(PUBLISH.selection.resolve(graph), key=lambda k: k.path)
    if not published:
        return stages
    settings = config.orchestration.freshness
    policy = dg.FreshnessPolicy.time_window(
        fail_window=timedelta(hours=settings.max_age_hours),
        warn_window=timedelta(hours=settings.warn_age_hours) if settings.warn_age_hours else None,
    )
    with warnings.catch_warnings():
        # The 1.13 replacement for the superseded freshness checks; its preview status is not news at every load.
        warnings.simplefilter("ignore", dg.PreviewWarning)
        return stages.map_resolved_asset_specs(
            func=lambda spec: spec.replace_attributes(freshness_policy=policy), selection=published
        )


def executor_for(config: ProjectConfig) -> dg.ExecutorDefinition:
    """The executor ``orchestration.executor`` names: the one place the executor of every job is chosen (the UI's
    runs and the schedules' use it; `ci-pipeline run` always executes in its own process, ``max_concurrent`` steps at a
    time). Default: in-process, two steps at a time on threads (:mod:`ci_pipeline.defs.threaded`)."""
    settings = config.orchestration.executor
    if settings.kind == "in_process":
        return threaded_executor(settings.max_concurrent) if settings.max_concurrent > 1 else dg.in_process_executor
    if settings.kind == "multiprocess":
        if settings.max_concurrent == 2:
            return EXECUTOR
        return dg.multiprocess_executor.configured(
            {"max_concurrent": settings.max_concurrent}, name="multiprocess_bounded"
        )
    try:
        from dagster_k8s import k8s_job_executor
    except ImportError:
        raise UserError(
            "orchestration.executor.kind: k8s needs the dagster-k8s package; install it with "
            "`pip install dagster-k8s==0.29.27` in the image that runs the code location"
        ) from None
    k8s_config: dict = {"max_concurrent": settings.max_concurrent}
    if settings.job_namespace:
        k8s_config["job_namespace"] = settings.job_namespace
    if settings.step_k8s_config:
        k8s_config["step_k8s_config"] = settings.step_k8s_config
    return k8s_job_executor.configured(k8s_config, name="k8s_steps")


def build(
    config: ProjectConfig, stages: dg.Definitions | None = None, registered: tuple[Stage, ...] = STAGES
) -> dg.Definitions:
    """Jobs, schedules, sensors, freshness and the default executor over the assets of ``stages``.

    Args:
        config: the project configuration.
        stages: the merged definitions of every other stage; the result contains them (with freshness policies on
            the published tables) plus the orchestration definitions.
        registered: the registered stages, whose declared jobs are added.
    """
    # Every process that runs the pipeline builds its definitions here (CLI, webserver, daemon, run and step
    # workers), so each redacts the log records it creates, Dagster's console output included.
    install_log_redaction()
    stages = stages if stages is not None else dg.Definitions()
    graph = stages.resolve_asset_graph()
    # Every job records what its steps stored and from what, so that the next incremental run can skip it.
    hooks = {refresh_defs.refresh_hook(graph, REFRESHED.resolve(graph))}
    jobs = {spec.name: _job(spec, hooks) for spec in job_specs(config, graph, registered)}
    schedules = build_schedules(config, graph, jobs)
    sensors = [build_failure_sensor(config)]
    if "incremental_refresh" in jobs:
        sensor = build_new_file_sensor(config, graph, jobs["incremental_refresh"])
        if sensor is not None:
            sensors.append(sensor)
    return dg.Definitions.merge(
        with_freshness(config, stages, graph),
        dg.Definitions(
            jobs=list(jobs.values()),
            schedules=schedules,
            sensors=sensors,
            executor=executor_for(config),
            loggers={"console": console_logger(step_assets(graph))},
        ),
    )
