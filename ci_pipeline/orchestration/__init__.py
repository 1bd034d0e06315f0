"""Pure orchestration logic: schedule parsing and validation, file-change detection, the new-file sensor's tick,
failure notices and the webhook. Never imports dagster; ``ci_pipeline.defs.orchestration`` wires it."""

from ci_pipeline.orchestration.files import (
    FileState,
    TablePlan,
    hour_folder_closes_at,
    is_temporary,
    plan_table,
    watch_root,
)
from ci_pipeline.orchestration.notify import FailedRun, failure_notice, failure_reason, send_webhook
from ci_pipeline.orchestration.schedule import cron_for_times, parse_cron, validate_cron, validate_timezone
from ci_pipeline.orchestration.sensor import Tick, WatchedTable, evaluate_new_files
from ci_pipeline.orchestration.tags import FAILURE_SENSOR, MODE_TAG, NEW_FILES_SENSOR, TRIGGER_TAG

__all__ = [
    "FAILURE_SENSOR",
    "MODE_TAG",
    "NEW_FILES_SENSOR",
    "TRIGGER_TAG",
    "FailedRun",
    "FileState",
    "TablePlan",
    "Tick",
    "WatchedTable",
    "cron_for_times",
    "evaluate_new_files",
    "failure_notice",
    "failure_reason",
    "hour_folder_closes_at",
    "is_temporary",
    "parse_cron",
    "plan_table",
    "send_webhook",
    "validate_cron",
    "validate_timezone",
    "watch_root",
]
