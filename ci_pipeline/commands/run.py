"""`ci-pipeline run`: materialise the whole asset graph in-process and print a summary per stage."""

from __future__ import annotations

import os
import time
from collections import defaultdict

import dagster as dg

from ci_pipeline.config import load_config
from ci_pipeline.defs import build_definitions
from ci_pipeline.errors import UserError


def register(subparsers) -> None:
    parser = subparsers.add_parser("run", help="run the pipeline (every stage) on the configured data")
    parser.add_argument(
        "--select",
        help="Dagster asset selection, e.g. 'group:unify' or 'crm/contacts+' (default: everything)",
    )
    parser.add_argument("--job", help="run a named job instead (see `dagster dev` for the list)")
    parser.set_defaults(func=run)


def _instance() -> dg.DagsterInstance:
    # With DAGSTER_HOME set (python3 dev.py sets it) the run is kept in the local run history that `dagster dev`
    # shows; otherwise it runs against a throwaway instance.
    return dg.DagsterInstance.get() if os.environ.get("DAGSTER_HOME") else dg.DagsterInstance.ephemeral()


def run(args) -> int:
    config = load_config(args.config)
    defs = build_definitions(config)
    started = time.monotonic()
    with _instance() as instance:
        if args.job:
            try:
                job = defs.resolve_job_def(args.job)
            except Exception:
                raise UserError(f"--job {args.job}: no such job; see the jobs listed in `dagster dev`") from None
        else:
            job = defs.resolve_implicit_global_asset_job_def()
            if args.select:
                try:
                    job = job.get_subset(
                        asset_selection=dg.AssetSelection.from_string(args.select).resolve(defs.resolve_asset_graph())
                    )
                except Exception as exc:
                    raise UserError(f"--select {args.select!r}: {exc}") from None
        result = job.execute_in_process(instance=instance, raise_on_error=False)
    print_summary(result, config, time.monotonic() - started)
    return 0 if result.success else 1


def print_summary(result: dg.ExecuteInProcessResult, config, seconds: float) -> None:
    """Per asset: rows, seconds, status; per stage: totals; then where the outputs are."""
    step_start: dict[str, float] = {}
    step_time: dict[str, float] = {}
    step_status: dict[str, str] = defaultdict(lambda: "skipped")
    rows: dict[str, tuple[str, int | None]] = {}
    asset_step: dict[str, str] = {}
    for event in result.all_events:
        step = event.step_key
        if event.event_type_value == "STEP_START":
            step_start[step] = event.timestamp
            step_status[step] = "running"
        elif event.event_type_value in {"STEP_SUCCESS", "STEP_FAILURE"}:
            step_time[step] = event.timestamp - step_start.get(step, event.timestamp)
            step_status[step] = "ok" if event.event_type_value == "STEP_SUCCESS" else "FAILED"
        elif event.event_type_value == "ASSET_MATERIALIZATION":
            materialization = event.event_specific_data.materialization
            key = materialization.asset_key.to_user_string()
            count = materialization.metadata.get("dagster/row_count")
            rows[key] = (step, count.value if count is not None else None)
            asset_step[key] = step
    print(f"\n{'asset':<52} {'rows':>10} {'seconds':>8}  status")
    for key in sorted(rows, key=lambda k: (step_start.get(asset_step[k], 0), k)):
        step, count = rows[key]
        shown = "" if count is None else f"{count:,}"
        print(f"{key:<52} {shown:>10} {step_time.get(step, 0):8.1f}  {step_status[step]}")
    failed = [s for s, status in step_status.items() if status == "FAILED"]
    for step in failed:
        print(f"FAILED step: {step}")
        for event in result.all_events:
            if event.step_key == step and event.event_type_value == "STEP_FAILURE":
                error = event.event_specific_data.error
                print(f"  {error.message.strip() if error else ''}")
    print(
        f"\n{'succeeded' if result.success else 'FAILED'} in {seconds:.1f} s; outputs in "
        f"{config.resolve_location(config.lake.url) if '://' not in config.lake.url else config.lake.url}"
    )
