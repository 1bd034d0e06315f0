"""What a user reads when a run fails: the cause of a failure, the notice for a failed run, and the webhook POST.

Works on plain values and Dagster's serialised error info (``cls_name``, ``message``, ``cause``), so it is tested
without running Dagster; ``ci_pipeline.defs.orchestration`` wires it into the failure sensor and the console.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from ci_pipeline.errors import UserError
from ci_pipeline.orchestration.tags import TRIGGER_TAG, run_trigger, trigger_words
from ci_pipeline.redact import clipped, redact, redact_value
from ci_pipeline.redact import register as register_secret


def _user_error_names() -> set[str]:
    names, todo = set(), [UserError]
    while todo:
        cls = todo.pop()
        names.add(cls.__name__)
        todo.extend(cls.__subclasses__())
    return names


def failure_reason(error) -> tuple[str, bool]:
    """What a user needs to read from a failure's error info, redacted, and whether it is a user error.

    Dagster wraps the asset's exception (``DagsterExecutionStepExecutionError``); a :class:`UserError` anywhere in
    the chain is the cause and its message is the fix (without its class name). Anything else is a bug: the first
    exception that is not Dagster's own, with its type, on one line.
    """
    chain = _chain(error)
    if not chain:
        return "no error message", False
    user = _user_error_names()
    for item in chain:
        if item.cls_name in user:
            text = re.sub(rf"^[\w.]*{re.escape(item.cls_name)}: ", "", (item.message or "").strip())
            return redact(text or item.cls_name), True
    own = _own(chain)
    first = ((own.message or "").strip().splitlines() or [own.cls_name or "error"])[0]
    return redact(first), False


def _chain(error) -> list:
    """An error info and its causes, outermost first."""
    chain = []
    while error is not None:
        chain.append(error)
        error = error.cause
    return chain


def _own(chain: list):
    """The first error of a chain that is not Dagster's own wrapper (else the first)."""
    return next((item for item in chain if not (item.cls_name or "").startswith("Dagster")), chain[0])


def notice_error(error) -> str:
    """What a notice says of a step's error: a user error's message (the project's own words, which never hold a
    secret); of any other error only its type. Its message is a library's, which may quote a secret the run
    resolved; the sensor sending the notice runs in another process, which never saw that secret to mask it."""
    if error is None:
        return "no error message"
    text, user = failure_reason(error)
    if user:
        return clipped(text.splitlines()[0], 500)
    return f"{_own(_chain(error)).cls_name or 'an error'} (an unexpected error: its message is in the run's event log)"


@dataclass(frozen=True)
class FailedRun:
    """The facts of one failed run a notice is made of."""

    project: str
    run_id: str
    job: str
    tags: Mapping[str, str]
    #: (step key, error info or None) per failed step.
    steps: list[tuple[str, object]]
    #: The run's own error (its failure event's), for a run that failed before or outside its steps (refused by
    #: governance, resources that could not start).
    error: object = None


def failure_notice(run: FailedRun, ui_url: str | None = None) -> dict:
    """The notification for a failed run: who, what, where it broke, and a link when the UI address is known.

    Redacted as a whole: it leaves the process (webhook) and lands in logs.
    """
    steps = [{"step": step, "error": notice_error(error)} for step, error in run.steps]
    where = ", ".join(step["step"] for step in steps) or "before any step started"
    trigger = run_trigger(run.tags)
    text = f"{run.project}: run {run.run_id} of job {run.job} ({trigger_words(trigger)}) failed at {where}"
    if steps:
        text += f": {steps[0]['error']}"
    elif run.error is not None:
        text += f": {notice_error(run.error)}"
    notice = {
        "text": text,
        "project": run.project,
        "run_id": run.run_id,
        "job": run.job,
        "status": "FAILURE",
        "failed_steps": steps,
        "tags": {**{k: v for k, v in run.tags.items() if k.startswith("ci_pipeline/")}, TRIGGER_TAG: trigger},
    }
    if ui_url:
        notice["url"] = f"{ui_url.rstrip('/')}/runs/{run.run_id}"
    return redact_value(notice)


def send_webhook(
    url: str, notice: dict, timeout_seconds: float, resolve: Callable[[str], str], key: str = "webhook_url"
) -> str | None:
    """POST the notice to the webhook; return an error message instead of raising.

    Args:
        url: the configured URL, or a secret reference (``env:``/``file:``) that ``resolve`` reads.
        notice: the JSON body (already redacted).
        timeout_seconds: per request.
        resolve: reads a secret reference; raises :class:`UserError` when it cannot.
        key: the configuration key, for messages.
    """
    import httpx  # only a run that sends a notice needs the HTTP client

    try:
        if url.startswith(("env:", "file:")):
            url = resolve(url)
        else:
            # Webhook URLs carry their token in the path or query even when written in the configuration.
            register_secret(url)
        response = httpx.post(url, json=notice, timeout=timeout_seconds)
        response.raise_for_status()
    except UserError as exc:
        return f"{key}: the notification was not delivered ({redact(exc)})"
    except httpx.HTTPError as exc:
        status = (
            f"answered {exc.response.status_code}" if isinstance(exc, httpx.HTTPStatusError) else type(exc).__name__
        )
        return (
            f"{key}: the notification was not delivered to {urlsplit(url).hostname or 'the webhook'} ({status}: "
            f"{redact(exc)}); check the URL and that the receiving service is up"
        )
    return None


def notify_webhook(config, notice: dict, resolve: Callable[[str, str], str]) -> str | None:
    """POST the notice to the configured webhook, if any; return an error message instead of raising.

    ``orchestration.notifications.webhook_url`` is used as written (a URL or an ``env:``/``file:`` reference);
    ``webhook_connection`` names a governed ``webhook`` connection, resolved as ``governance.service_principal``
    (the failure sensor runs unattended), so an unshared or removed connection is reported, not used.
    ``resolve(reference, key)`` reads an ``env:``/``file:`` reference.
    """
    from ci_pipeline.governance.runtime import open_rules

    settings = config.orchestration.notifications
    if settings.webhook_url:
        key = "orchestration.notifications.webhook_url"
        return send_webhook(settings.webhook_url, notice, settings.timeout_seconds, lambda ref: resolve(ref, key), key)
    if not settings.webhook_connection:
        return None
    key = "orchestration.notifications.webhook_connection"
    actor = config.governance.service_principal
    if not actor:
        return (
            f"{key}: the notification was not delivered: the failure sensor acts as governance.service_principal, "
            "which is not set; set it to a contributor the connection is shared with"
        )
    try:
        rules = open_rules(config, actor)
        try:
            connection = rules.use_connection(settings.webhook_connection, key, "webhook")
        finally:
            rules.store.close()
    except UserError as exc:
        return f"{key}: the notification was not delivered ({redact(exc)})"
    return send_webhook(connection["url"], notice, settings.timeout_seconds, lambda ref: ref, key)
