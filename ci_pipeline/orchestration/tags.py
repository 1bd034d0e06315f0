"""Names that runs, sensors and the run history share."""

from __future__ import annotations

from collections.abc import Mapping

#: Run tags that the run history shows: how a run was started and whether it refreshed everything.
MODE_TAG = "ci_pipeline/mode"
TRIGGER_TAG = "ci_pipeline/trigger"
#: Sensor names.
NEW_FILES_SENSOR = "new_files"
FAILURE_SENSOR = "failure_notification"
#: The trigger of a run someone launched from the Dagster UI (or its API): the jobs carry it as their default tag,
#: which `ci-pipeline run`, the schedules and the sensor replace with their own.
UI_TRIGGER = "ui"


def run_trigger(tags: Mapping[str, str]) -> str:
    """How a run was started, from its tags: its ``ci_pipeline/trigger`` tag; else the schedule or sensor Dagster
    names (``schedule:<name>``, ``sensor:<name>``), a backfill, or ``ui`` (an asset materialised from the UI's asset
    graph runs Dagster's own job, which carries none of this project's tags)."""
    if tags.get(TRIGGER_TAG):
        return tags[TRIGGER_TAG]
    if tags.get("dagster/schedule_name"):
        return f"schedule:{tags['dagster/schedule_name']}"
    if tags.get("dagster/sensor_name"):
        return f"sensor:{tags['dagster/sensor_name']}"
    if tags.get("dagster/backfill"):
        return "backfill"
    return UI_TRIGGER


def trigger_words(trigger: str) -> str:
    """A trigger in words, for a notice: ``started from the Dagster UI``, ``started by schedule refresh``."""
    kind, _, name = trigger.partition(":")
    if trigger == UI_TRIGGER:
        return "started from the Dagster UI"
    if trigger == "cli":
        return "started by `ci-pipeline run`"
    if trigger == NEW_FILES_SENSOR:
        return "started by the new-file sensor"
    if kind in ("schedule", "sensor") and name:
        return f"started by {kind} {name}"
    return f"started by {trigger}"
