"""Pure orchestration logic: schedule parsing and validation, file-change detection. Never imports dagster."""

from ci_pipeline.orchestration.files import FileState, TablePlan, hour_folder_closes_at, is_temporary, plan_table
from ci_pipeline.orchestration.schedule import cron_for_times, parse_cron, validate_cron, validate_timezone

__all__ = [
    "FileState",
    "TablePlan",
    "cron_for_times",
    "hour_folder_closes_at",
    "is_temporary",
    "parse_cron",
    "plan_table",
    "validate_cron",
    "validate_timezone",
]
