"""`ci-pipeline run`: materialise the asset graph (or a job, or a selection) in-process and print a summary.

Without ``--job``, ``--select`` or ``--full`` a run after a successful one is incremental: only the assets whose
inputs or settings changed since they were computed run (docs/operations.md, "Incremental refresh")."""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections import defaultdict
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import dagster as dg


def register(subparsers) -> None:
    parser = subparsers.add_parser("run", help="run the pipeline (every stage) on the configured data")
    parser.add_argument(
        "--select",
        help="Dagster asset selection, e.g. 'group:unify' or 'crm/contacts+' (default: what changed since last run)",
    )
    parser.add_argument(
        "--full",
        action="store_true",
        help="recompute everything (the full_refresh job) instead of only what changed since the last run",
    )
    parser.add_argument("--job", help="run a named job (see --list), e.g. 'ingest_crm' or 'unify_and_downstream'")
    parser.add_argument("--list", action="store_true", help="list the jobs of this configuration and exit")
    parser.add_argument(
        "--log-level",
        default="INFO",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="console log level of the run (default: INFO)",
    )
    parser.set_defaults(func=run)


#: The asset whose metadata counts the run's CustomerId changes by reason (``id changes <reason>``).
ID_CHANGE = "unify/id_change"
ID_PREFIX = "id changes "
UNIFY_STATS = "unify/unify_stats"
#: The asset whose ``segments`` metadata table holds each segment's members and change (``defs.segments``).
SEGMENTS = "segments/segment_membership"
#: Most segments the summary lists; the others are in that asset's metadata.
SEGMENTS_SHOWN = 20
INCREMENTAL_PREFIX = "incremental "
#: Exit statuses of `run` (and `quickstart`), told apart by a cron job or CI step (docs/operations.md, "Exit
#: statuses"): 2 is a configuration mistake (ci_pipeline.cli). A run whose steps all succeeded but whose data failed
#: an error-severity check (an activity that placed no row, a model without enough data) is no success for a nightly
#: job: its outputs are stale or incomplete. Warnings (quarantined rows, schema drift) leave it 0.
RUN_FAILED = 1
CHECK_FAILED = 3
#: Exit status of a run stopped by Ctrl-C or a termination signal (as the shell gives an interrupted command).
INTERRUPTED = 130
#: The events that fail a step: its own failure, or its resources refusing to start (the governance checks of a run
#: refuse it there, before any data moves).
STEP_FAILURES = ("STEP_FAILURE", "RESOURCE_INIT_FAILURE")


def _unify_plan(metadata) -> dict:
    """The unification plan (``Plan.report``) back from the ``unify_stats`` metadata."""
    plan = {k[len(INCREMENTAL_PREFIX) :]: int(v.value) for k, v in metadata.items() if k.startswith(INCREMENTAL_PREFIX)}
    reason = metadata.get("incremental_reason")
    return {**plan, "incremental": bool(metadata["incremental"].value), "reason": reason.value if reason else ""}


def _instance() -> dg.DagsterInstance:
    import dagster as dg

    from ci_pipeline.errors import UserError

    # With DAGSTER_HOME set (python3 dev.py sets it) the run is kept in the local run history that `dagster dev`
    # shows; otherwise it runs against a throwaway instance.
    home = os.environ.get("DAGSTER_HOME")
    if not home:
        return dg.DagsterInstance.ephemeral()
    if not os.path.isdir(home):
        raise UserError(
            f"DAGSTER_HOME is {home!r}, which is not a folder: create it (mkdir -p {home}) to keep the run history "
            "there, or unset DAGSTER_HOME to run without one"
        )
    if not os.path.isabs(home):
        raise UserError(
            f"DAGSTER_HOME is {home!r}, a relative path, and Dagster takes an absolute one (the daemon and the UI "
            f"would each read it from their own folder): export DAGSTER_HOME={os.path.abspath(home)}"
        )
    if os.path.exists(os.path.join(home, "dagster.yaml")):
        return dg.DagsterInstance.get()
    # A new, empty DAGSTER_HOME: Dagster's defaults (the run history in SQLite files there, as `dg dev` keeps it),
    # with the project's telemetry setting (off, as in its dagster.yaml) rather than Dagster's banner asking the user
    # to write a dagster.yaml, and without its notice that the file is missing. Nothing but the history is written.
    with _without_missing_yaml_notice():
        return dg.DagsterInstance.local_temp(tempdir=home, overrides={"telemetry": {"enabled": False}})


@contextlib.contextmanager
def _without_missing_yaml_notice():
    """Drops Dagster's "No dagster instance configuration file" warning while the instance is built."""
    logger = logging.getLogger("dagster")

    def notice(record) -> bool:
        return not record.getMessage().startswith("No dagster instance configuration file")

    logger.addFilter(notice)
    try:
        yield
    finally:
        logger.removeFilter(notice)


def run(args) -> int:
    from ci_pipeline.defs import STAGES, build_definitions
    from ci_pipeline.defs.launch import choose_job, execute_as_job_run, job_names
    from ci_pipeline.defs.orchestration import step_assets
    from ci_pipeline.errors import UserError
    from ci_pipeline.governance.identity import LAUNCHED_BY_TAG, acting_user
    from ci_pipeline.orchestration import MODE_TAG, TRIGGER_TAG
    from ci_pipeline.validation import load_checked, require_valid

    config = load_checked(args.config)
    defs = build_definitions(config)
    if args.list:
        for name in job_names(defs):
            print(f"{name:<28} {defs.resolve_job_def(name).description or ''}")
        return 0
    if args.full and args.job:
        raise UserError("--full runs the full_refresh job; leave out --job, or use --job full_refresh")
    started = time.monotonic()
    if args.full or args.job or args.select:
        job, mode = choose_job(defs, "full_refresh" if args.full and not args.select else args.job, args.select)
    else:
        job, mode = _incremental(defs, config)
        if job is None:
            print(f"succeeded in {time.monotonic() - started:.1f} s; nothing changed, outputs kept in {_where(config)}")
            return 0
    # Nothing is written when the sources, alias files or sink settings the run uses fail the checks of `validate`.
    require_valid(config, {tuple(key.path) for key in job.asset_layer.selected_asset_keys})
    tags = {
        MODE_TAG: mode,
        TRIGGER_TAG: "cli",
        LAUNCHED_BY_TAG: acting_user(),
        # The user sees the failure on the console: the instance's automatic retry is for unattended runs.
        "dagster/max_retries": "0",
    }
    graph = defs.resolve_asset_graph()
    with _instance() as instance:
        # Stage notes and warnings on the console; the step-by-step debug events stay in the run's event log.
        run_config = {"loggers": {"console": {"config": {"log_level": args.log_level}}}}
        progress = Progress(step_assets(graph))
        steps = config.orchestration.executor.max_concurrent
        result = execute_as_job_run(job, instance, tags, run_config, on_event=progress, steps_at_once=steps)
        records = list(instance.all_logs(result.run_id))
    groups = {key.to_user_string(): graph.get(key).group_name for key in graph.get_all_asset_keys()}
    return print_summary(
        result, records, config, time.monotonic() - started, groups, step_assets(graph), [s.name for s in STAGES]
    )


def _incremental(defs, config):
    """The incremental run's job and mode (None: nothing changed; a run marker is written), said on the console."""
    from datetime import UTC, datetime

    from ci_pipeline.defs.launch import choose_job, incremental_job
    from ci_pipeline.defs.resources import LakeResource
    from ci_pipeline.errors import StorageError, UserError
    from ci_pipeline.lake_owner import LakeOwnedError, claim_lake
    from ci_pipeline.orchestration.refresh import save_marker

    try:
        lake = LakeResource.from_config(config).get_lake()
        # Another environment's lake is refused here, before the run marker below is written.
        claim_lake(lake, config.name, write=False)
        job, mode, plan = incremental_job(defs, config, lake)
    except LakeOwnedError:
        raise
    except (UserError, StorageError) as exc:
        # The full refresh reads the same locations and says precisely what fails, table by table.
        print(f"incremental refresh: cannot tell what changed ({exc}); running the full refresh", flush=True)
        return choose_job(defs, None, None)
    print(f"incremental refresh: {plan.summary()}", flush=True)
    if job is None:
        save_marker(lake, plan, datetime.now(UTC))
    return job, mode


def _where(config) -> str:
    return config.resolve_location(config.lake.url) if "://" not in config.lake.url else config.lake.url


class Progress:
    """Prints one line when a step starts and one per asset it materialises (rows, seconds since the step
    started), as they happen, so a long run is never silent.

    Args:
        assets: step name -> the asset keys it materialises (the start line names the assets, not the step).
        out: where the lines go (standard output by default).
    """

    def __init__(self, assets: dict[str, list[str]], out=None):
        self.assets = assets
        self.out = out
        self.started: dict[str, float] = {}

    def __call__(self, record) -> None:
        event = record.dagster_event
        if event is None:
            return
        step = event.step_key
        if event.event_type_value == "STEP_START":
            self.started[step] = record.timestamp
            self._say(f"start {', '.join(self.assets.get(step, [step]))}")
        elif event.event_type_value == "ASSET_MATERIALIZATION":
            materialization = event.event_specific_data.materialization
            count = materialization.metadata.get("dagster/row_count")
            rows = "" if count is None else f" {count.value:,} rows"
            seconds = record.timestamp - self.started.get(step, record.timestamp)
            self._say(f"done  {materialization.asset_key.to_user_string()}{rows} {seconds:.1f} s")
        elif event.event_type_value == "STEP_FAILURE":
            self._say(f"FAILED {', '.join(self.assets.get(step, [step]))}")

    def _say(self, line: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {line}", file=self.out, flush=True)


def print_summary(
    result: dg.ExecuteInProcessResult | dg.JobExecutionResult,
    records: list,
    config,
    seconds: float,
    groups=None,
    assets=None,
    stages: list[str] | None = None,
) -> int:
    """Per asset: rows, seconds, status; per stage: steps and seconds; what failed and why; where the outputs are.
    Returns the command's exit status: 0, :data:`RUN_FAILED` or :data:`CHECK_FAILED`.

    Args:
        result: the finished run.
        records: the run's event log entries (``instance.all_logs(run_id)``), which carry the timestamps.
        config: the project configuration (for the lake location).
        seconds: wall time of the whole command.
        groups: asset key string -> stage (group) name, for the per-stage totals.
        assets: step name -> the asset keys it materialises, so that a failure names its assets.
        stages: the registered stage names in data-flow order, the order of the per-stage totals (groups that are
            no registered stage follow, by start time).
    """
    groups, assets, order = groups or {}, assets or {}, {name: i for i, name in enumerate(stages or [])}
    step_start: dict[str, float] = {}
    step_time: dict[str, float] = {}
    step_status: dict[str, str] = defaultdict(lambda: "skipped")
    rows: dict[str, tuple[str, int | None]] = {}
    ids: dict[str, float] = {}
    unified: dict | None = None
    for record in records:
        event = record.dagster_event
        if event is None:
            continue
        step = event.step_key
        if event.event_type_value == "STEP_START":
            step_start[step] = record.timestamp
            step_status[step] = "running"
        elif event.event_type_value in {"STEP_SUCCESS", *STEP_FAILURES} and step is not None:
            step_time[step] = record.timestamp - step_start.get(step, record.timestamp)
            step_status[step] = "ok" if event.event_type_value == "STEP_SUCCESS" else "FAILED"
        elif event.event_type_value == "ASSET_MATERIALIZATION":
            materialization = event.event_specific_data.materialization
            key = materialization.asset_key.to_user_string()
            count = materialization.metadata.get("dagster/row_count")
            rows[key] = (step, count.value if count is not None else None)
            if key == ID_CHANGE:
                ids = {
                    k[len(ID_PREFIX) :]: v.value for k, v in materialization.metadata.items() if k.startswith(ID_PREFIX)
                }
            if key == UNIFY_STATS and "incremental" in materialization.metadata:
                unified = _unify_plan(materialization.metadata)
    print(f"\n{'asset':<52} {'rows':>10} {'seconds':>8}  status")
    for key in sorted(rows, key=lambda k: (step_start.get(rows[k][0], 0), k)):
        step, count = rows[key]
        shown = "" if count is None else f"{count:,}"
        print(f"{key:<52} {shown:>10} {step_time.get(step, 0):8.1f}  {step_status[step]}")
    stage_steps: dict[str, set[str]] = defaultdict(set)
    for key, (step, _) in rows.items():
        stage_steps[groups.get(key, key.split("/")[0])].add(step)
    if stage_steps:
        print(f"\n{'stage':<52} {'steps':>10} {'seconds':>8}")
        for stage, steps in sorted(
            stage_steps.items(),
            key=lambda item: (order.get(item[0], len(order)), min(step_start.get(s, 0) for s in item[1])),
        ):
            print(f"{stage:<52} {len(steps):>10} {sum(step_time.get(s, 0) for s in steps):8.1f}")
    _print_unification(unified, ids)
    _print_segments(segment_sizes(records))
    events = [record.dagster_event for record in records if record.dagster_event is not None]
    if not result.success and interrupted(events):
        # Dagster turns Ctrl-C and SIGTERM into a run failure "before any step": said as what it is.
        done = sum(status == "ok" for status in step_status.values())
        print(
            f"\nINTERRUPTED: the run was stopped (Ctrl-C or a termination signal) after {done} step(s) finished; "
            "the next `ci-pipeline run` recomputes only what did not finish"
        )
        print(f"\nINTERRUPTED after {seconds:.1f} s; outputs in {_where(config)}")
        return INTERRUPTED
    _print_failures(events, result.success, [s for s, status in step_status.items() if status == "FAILED"], assets)
    checks = failed_checks(records)
    for line in checks:
        print(line)
    errors = sum(line.startswith("CHECK FAILED") for line in checks)
    status = "succeeded" if result.success else "FAILED"
    if result.success and errors:
        status += f" with {errors} failed check(s) of error severity (exit status {CHECK_FAILED})"
    print(f"\n{status} in {seconds:.1f} s; outputs in {_where(config)}")
    return RUN_FAILED if not result.success else CHECK_FAILED if errors else 0


def failed_checks(records: list) -> list[str]:
    """One line per asset check that failed in the run, errors (``CHECK FAILED``) before warnings: a model without
    enough data fails its check while the run goes on, and the user must see it at the end, not only in the log."""
    lines = []
    for record in records:
        event = record.dagster_event
        if event is None or event.event_type_value != "ASSET_CHECK_EVALUATION":
            continue
        evaluation = event.event_specific_data
        if evaluation.passed:
            continue
        error = getattr(evaluation.severity, "value", str(evaluation.severity)) == "ERROR"
        reason = (evaluation.description or "").strip().replace("\n", " ")
        line = f"{'CHECK FAILED' if error else 'check warning'} {evaluation.asset_key.to_user_string()} "
        lines.append((not error, line + evaluation.check_name + (f": {reason}" if reason else "")))
    return [line for _, line in sorted(lines, key=lambda item: item[0])]


def _print_unification(unified: dict | None, ids: dict[str, float]) -> None:
    """How unification ran (incremental or full) and what moved the customers a user knows: the ids the run
    issued, merged, split or retired."""
    lines = []
    if unified is not None:
        from ci_pipeline.unify.incremental import report_text

        lines.append(f"unification: {report_text(unified)}")
    if ids:
        told = ", ".join(f"{int(ids.get(r, 0)):,} {r}" for r in ("new", "merged", "split", "moved", "removed"))
        lines.append(f"CustomerId changes this run: {told} (each in {ID_CHANGE})")
    if lines:
        print("\n" + "\n".join(lines))


def segment_sizes(records: list) -> list[dict]:
    """Each segment's row of the ``segments`` metadata table of the run's membership (none when it did not run)."""
    for record in reversed(records):
        event = record.dagster_event
        if event is None or event.event_type_value != "ASSET_MATERIALIZATION":
            continue
        materialization = event.event_specific_data.materialization
        if materialization.asset_key.to_user_string() == SEGMENTS and "segments" in materialization.metadata:
            return [dict(row.data) for row in materialization.metadata["segments"].records]
    return []


def segment_lines(rows: list[dict], shown: int = SEGMENTS_SHOWN) -> list[str]:
    """The summary's lines of segment sizes: members and the change since the last run (none on a first run), at
    most ``shown`` segments, the rest counted."""
    if not rows:
        return []
    first = all(row.get("change") in (None, "") for row in rows)
    head = "segment" if first else "segment (change: since the last run)"
    lines = [f"\n{head:<52} {'members':>10} {'' if first else 'change':>8}".rstrip()]
    for row in rows[:shown]:
        change = row.get("change")
        told = "" if change in (None, "") else f"{int(change):+,}" if change else "0"
        lines.append(f"{row['segment']:<52} {int(row['members']):>10,} {told:>8}".rstrip())
    if len(rows) > shown:
        lines.append(f"... and {len(rows) - shown} more segment(s): every one in the metadata of {SEGMENTS}")
    return lines


def _print_segments(rows: list[dict]) -> None:
    for line in segment_lines(rows):
        print(line)


def _print_failures(events: list, success: bool, failed: list[str], assets: dict[str, list[str]]) -> None:
    """Each failed step's assets and the reason: the user error's message (the fix), or a pointer to the trace. A run
    that failed before or outside its steps (the governance checks refused it) says why too."""
    told = False
    for step in failed:
        for event in events:
            if event.step_key == step and event.event_type_value in STEP_FAILURES:
                _print_failure(f"{', '.join(assets.get(step, [step]))} (step {step})", event)
                told = True
                break
    if told or success:
        return
    for event in events:
        if event.is_run_failure and getattr(event.event_specific_data, "error", None):
            _print_failure("before any step started", event)


def interrupted(events: list) -> bool:
    """Whether the run failed because it was interrupted (Ctrl-C, a termination signal), not by an error."""
    for event in events:
        error = getattr(event.event_specific_data, "error", None) if event.is_run_failure else None
        while error is not None:
            if error.cls_name == "DagsterExecutionInterruptedError":
                return True
            error = error.cause
    return False


def _print_failure(what: str, event) -> None:
    """``FAILED <what>:`` and the reason of the failure ``event``."""
    from ci_pipeline.orchestration import failure_reason

    message, is_user_error = failure_reason(getattr(event.event_specific_data, "error", None))
    print(f"\nFAILED {what}:")
    print("  " + message.replace("\n", "\n  "))
    if not is_user_error:
        print("  (an unexpected error: the stack trace is above and in the run's event log)")
