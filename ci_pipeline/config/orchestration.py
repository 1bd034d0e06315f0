"""Schedules, the new-file sensor, freshness and failure notifications: when the pipeline runs, who hears of it."""

from __future__ import annotations

import difflib
import zoneinfo
from typing import Literal

from pydantic import Field, field_validator, model_validator

from ci_pipeline.config.base import Name, StrictModel
from ci_pipeline.orchestration.schedule import cron_for_times, parse_time, validate_cron, validate_timezone


def _timezone_name(value: str) -> str:
    """An IANA time zone name, or a ValueError that suggests the nearest one for a misspelling."""
    try:
        return validate_timezone(value)
    except ValueError as exc:
        if "did you mean" in str(exc):
            raise
        close = difflib.get_close_matches(value, sorted(zoneinfo.available_timezones()), n=1, cutoff=0.8)
        raise ValueError(f"{exc}; did you mean {close[0]}?" if close else str(exc)) from None


Weekday = Literal[
    "mon", "tue", "wed", "thu", "fri", "sat", "sun",
    "monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday",
]  # fmt: skip


#: The schedules the pipeline makes itself, which a configured schedule may not be named after.
SYSTEM_SCHEDULES = {
    "refresh": "the system refresh",
    "train_predictions": "the prediction models' retraining",
    "train_match_model": "the probabilistic match model's retraining",
}


class When(StrictModel):
    """When a schedule fires: either ``cron`` or ``at`` (times of day) with optional ``days`` (weekdays).

    Several expressions or times make it fire several times a day, e.g. ``at: ["06:00", "18:00"]``.
    """

    #: One or more five-field cron expressions (``"0 2 * * *"``), or a macro such as ``@daily``.
    cron: list[str] | None = Field(None, min_length=1, max_length=24)
    #: Times of day, ``HH:MM`` on a 24-hour clock, in ``timezone``: "daily at 02:00" is ``at: "02:00"``.
    at: list[str] | None = Field(None, min_length=1, max_length=24)
    #: Weekdays for ``at`` (default every day).
    days: list[Weekday] | None = Field(None, min_length=1)
    #: IANA time zone of the times (default: ``orchestration.timezone``). Daylight saving is followed.
    timezone: str | None = None

    @field_validator("cron", "at", mode="before")
    @classmethod
    def _one_or_many(cls, value):
        return [value] if isinstance(value, str) else value

    @field_validator("cron")
    @classmethod
    def _cron(cls, value):
        return None if value is None else [validate_cron(v) for v in value]

    @field_validator("at")
    @classmethod
    def _times(cls, value):
        for text in value or []:
            parse_time(text)
        return value

    @field_validator("timezone")
    @classmethod
    def _timezone(cls, value):
        return None if value is None else _timezone_name(value)

    @model_validator(mode="after")
    def _exactly_one(self):
        if (self.cron is None) == (self.at is None):
            raise ValueError("give either 'cron' or 'at' (times of day), not both or neither")
        if self.days and self.cron:
            raise ValueError("'days' goes with 'at'; with 'cron' put the weekdays in the expression")
        return self

    def cron_schedules(self) -> list[str]:
        """The cron expressions this schedule fires on."""
        return list(self.cron) if self.cron else cron_for_times(list(self.at or []), self.days)


class Retraining(When):
    """When a model is retrained (its job runs on this schedule; the runs in between score with the stored model).

    Each model sets its default ``cron``; ``at`` alone replaces that default rather than adding to it.
    """

    #: A disabled schedule is created stopped (it can be started in the UI); the job still runs on demand.
    enabled: bool = True

    @model_validator(mode="before")
    @classmethod
    def _at_replaces_the_default_cron(cls, data):
        # ``at: "02:00"`` alone means "at that time", not "both the default cron and that time".
        if isinstance(data, dict) and "at" in data and "cron" not in data:
            return {**data, "cron": None}
        return data


class RefreshSchedule(When):
    """The system refresh: the whole pipeline (or ``select``) on a schedule."""

    enabled: bool = True
    #: Dagster asset selection to refresh (default everything).
    select: str = "*"


class ItemSchedule(When):
    """A schedule of its own for some assets: an export, a model retraining, one source."""

    name: Name
    #: Dagster asset selection, e.g. ``group:publish`` or ``key:"unify/*"``.
    select: str = Field(min_length=1)
    description: str = ""
    enabled: bool = True


class NewFileSensor(StrictModel):
    """Start a run when files arrive in (or change in) the sources' locations."""

    enabled: bool = True
    #: How often the locations are listed.
    interval_seconds: int = Field(60, ge=10)
    #: A file last modified longer ago than this is complete on first sight; newer ones must keep their size and
    #: modified time from one check to the next.
    settle_seconds: int = Field(60, ge=0)


class Notifications(StrictModel):
    """Where failed runs are reported. A log line is always written."""

    #: URL that receives a JSON POST per failed run (Slack/Teams-style ``text`` plus details). Give it as
    #: ``env:VARIABLE`` or ``file:path`` when it carries a token.
    webhook_url: str | None = None
    #: A governed ``webhook`` connection (``ci-pipeline connections``) instead of ``webhook_url``; the failure
    #: sensor resolves it as ``governance.service_principal``.
    webhook_connection: str | None = Field(None, min_length=1, max_length=200)
    timeout_seconds: float = Field(10, gt=0, le=120)
    #: Base URL of the Dagster UI, used for links in notifications (e.g. ``http://dagster.internal:3000``).
    ui_url: str | None = None

    @field_validator("webhook_url")
    @classmethod
    def _url(cls, value):
        if value is None or value.startswith(("env:", "file:", "http://", "https://")):
            return value
        raise ValueError("webhook_url must be an http(s) URL, or 'env:VARIABLE' / 'file:path' holding one")

    @model_validator(mode="after")
    def _one_webhook(self):
        if self.webhook_url and self.webhook_connection:
            raise ValueError("give webhook_url or webhook_connection, not both")
        return self


class Freshness(StrictModel):
    """How old the published tables may get before they show as overdue."""

    max_age_hours: float = Field(26, gt=0)
    warn_age_hours: float | None = Field(None, gt=0)

    @model_validator(mode="after")
    def _order(self):
        if self.warn_age_hours is not None and self.warn_age_hours >= self.max_age_hours:
            raise ValueError("warn_age_hours must be smaller than max_age_hours")
        return self


class Executor(StrictModel):
    """How the steps of a run execute: processes on this machine, or one Kubernetes pod per step."""

    #: ``in_process`` (default: the steps in the run's process, ``max_concurrent`` at a time on threads, as
    #: `ci-pipeline run` does; on a small machine starting a process per step costs more than the steps),
    #: ``multiprocess`` (a process per step, ``max_concurrent`` at a time: for large data on a machine with cores to
    #: spare) or ``k8s`` (one pod per step; needs the dagster-k8s package and the K8sRunLauncher, see
    #: docs/operations.md).
    kind: Literal["multiprocess", "in_process", "k8s"] = "in_process"
    #: Steps running at the same time (threads, processes or pods); the default suits a 2-core machine; 1 runs the
    #: steps one after another (the least memory).
    max_concurrent: int = Field(2, ge=1, le=256)
    #: ``k8s`` only: namespace of the step pods (default: the run's namespace).
    job_namespace: str | None = None
    #: ``k8s`` only: Kubernetes settings for every step pod (``container_config: {resources: ...}``, ...).
    step_k8s_config: dict = {}

    @model_validator(mode="after")
    def _k8s_only(self):
        if self.kind != "k8s" and (self.job_namespace or self.step_k8s_config):
            raise ValueError("job_namespace and step_k8s_config apply only to kind: k8s")
        return self


class OrchestrationConfig(StrictModel):
    """When the pipeline runs and who hears about failures."""

    #: Default IANA time zone of every schedule (``Europe/Amsterdam``, ``America/New_York``, ``UTC``).
    timezone: str = "UTC"
    #: The system refresh; none by default (run it by hand or from the UI).
    refresh: RefreshSchedule | None = None
    schedules: list[ItemSchedule] = []
    new_files: NewFileSensor = NewFileSensor()
    notifications: Notifications = Notifications()
    freshness: Freshness = Freshness()
    executor: Executor = Executor()
    #: On an incremental run, measures and segments compute only the customers a change reaches and keep the
    #: others' results from the last run (the same result as computing everyone; docs/operations.md). Off by
    #: default: the per-customer digests it keeps cost more CPU than they save at 100,000 customers today
    #: (docs/scaling.md), and every run would pay for them.
    record_level_increments: bool = False

    @field_validator("timezone")
    @classmethod
    def _timezone(cls, value):
        return _timezone_name(value)

    def problems(self, project) -> list[str]:
        """Cross-section checks: schedule names are unique and do not take the name of a schedule the pipeline
        makes itself (the system refresh, the retraining of the prediction and match models)."""
        found = []
        names: set[str] = set(SYSTEM_SCHEDULES)
        for index, item in enumerate(self.schedules):
            if item.name in SYSTEM_SCHEDULES:
                found.append(
                    f"orchestration.schedules[{index}].name: {item.name!r} is the name of the pipeline's own "
                    f"schedule ({SYSTEM_SCHEDULES[item.name]}); give the schedule another name"
                )
            elif item.name in names:
                found.append(
                    f"orchestration.schedules[{index}].name: {item.name!r} is used twice; give each schedule its own "
                    "name"
                )
            names.add(item.name)
        return found

    def timezone_of(self, schedule: When) -> str:
        """The time zone a schedule runs in."""
        return schedule.timezone or self.timezone
