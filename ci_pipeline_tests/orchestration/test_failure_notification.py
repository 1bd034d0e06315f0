"""A failed run is reported: a log line, and a JSON POST to the configured webhook (a real HTTP server here)."""

from __future__ import annotations

import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import dagster as dg
import pandas as pd
import pytest

from ci_pipeline.config import load_config
from ci_pipeline.config.base import resolve_secret
from ci_pipeline.defs import orchestration
from ci_pipeline.defs.resources import shared_resources
from ci_pipeline_tests.conftest import SERVE, free_port
from ci_pipeline_tests.orchestration.conftest import write_project


@pytest.fixture
def webhook():
    """A local HTTP server that records every POST body; yields (url, bodies)."""
    bodies: list[dict] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            bodies.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs=SERVE, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hooks/ci", bodies
    server.shutdown()
    server.server_close()


def failing_project(tmp_path, notifications: dict):
    config = load_config(write_project(tmp_path, {"notifications": notifications}))

    @dg.asset(key=["crm", "contacts"], group_name="ingest")
    def contacts() -> pd.DataFrame:
        return pd.DataFrame({"id": ["1"]})

    @dg.asset(key=["unify", "customer_profile"], group_name="unify", deps=[["crm", "contacts"]])
    def customer_profile() -> pd.DataFrame:
        raise RuntimeError("duplicate CustomerId c-42 in 2 rows")

    stages = dg.Definitions(assets=[contacts, customer_profile], resources=shared_resources(config))
    return orchestration.build(config, stages)


def notify(defs: dg.Definitions, job: str) -> dg.DagsterRun:
    """Run a job that fails, then evaluate the failure sensor on that run as the daemon would."""
    with dg.DagsterInstance.ephemeral() as instance:
        result = defs.resolve_job_def(job).execute_in_process(
            instance=instance, raise_on_error=False, tags={"ci_pipeline/mode": "full"}
        )
        assert not result.success
        context = dg.build_run_status_sensor_context(
            sensor_name="failure_notification",
            dagster_instance=instance,
            dagster_run=result.dagster_run,
            dagster_event=result.get_run_failure_event(),
        ).for_run_failure()
        defs.resolve_sensor_def("failure_notification")(context)
        return result.dagster_run


def test_failed_run_posts_the_run_job_and_failing_step(tmp_path, webhook, caplog, monkeypatch):
    url, bodies = webhook
    monkeypatch.setenv("CI_TEST_WEBHOOK", url)
    defs = failing_project(tmp_path, {"webhook_url": "env:CI_TEST_WEBHOOK", "ui_url": "http://dagster.local:3000"})
    with caplog.at_level(logging.ERROR, logger="ci_pipeline"):
        run = notify(defs, "full_refresh")
    [body] = bodies
    assert body["run_id"] == run.run_id
    assert body["job"] == "full_refresh"
    assert body["project"] == "orchestration_test"
    assert body["failed_steps"] == [
        # A library's message may quote a secret the sensor's process never saw: the notice gives its type only.
        {
            "step": "unify__customer_profile",
            "error": "RuntimeError (an unexpected error: its message is in the run's event log)",
        }
    ]
    # Launched as the UI launches a job (no trigger given): the notice says so.
    assert body["text"].startswith(
        f"orchestration_test: run {run.run_id} of job full_refresh (started from the Dagster UI) failed at unify__"
    )
    assert body["url"] == f"http://dagster.local:3000/runs/{run.run_id}"
    assert body["tags"]["ci_pipeline/mode"] == "full" and body["tags"]["ci_pipeline/trigger"] == "ui"
    assert run.tags["ci_pipeline/trigger"] == "ui"
    assert any("run failed: " + body["text"] == record.getMessage() for record in caplog.records)


def test_a_run_refused_before_any_step_says_why_in_its_notice(tmp_path, webhook, monkeypatch):
    """Governance refuses a run where its resources start: no step failed, and the notice said only where."""
    from ci_pipeline.errors import UserError

    url, bodies = webhook
    monkeypatch.setenv("CI_TEST_WEBHOOK", url)
    config = load_config(write_project(tmp_path, {"notifications": {"webhook_url": "env:CI_TEST_WEBHOOK"}}))
    reason = "governance: 'svc' has no role in this environment; an admin grants one with `ci-pipeline roles grant`"

    @dg.resource
    def refused(_):
        raise UserError(reason)

    @dg.asset(key=["crm", "contacts"], group_name="ingest", required_resource_keys={"lake"})
    def contacts() -> pd.DataFrame:
        return pd.DataFrame({"id": ["1"]})

    resources = {**shared_resources(config), "lake": refused}
    run = notify(orchestration.build(config, dg.Definitions(assets=[contacts], resources=resources)), "full_refresh")
    [body] = bodies
    assert body["failed_steps"] == []
    assert body["text"] == (
        f"orchestration_test: run {run.run_id} of job full_refresh (started from the Dagster UI) failed at before "
        f"any step started: {reason}"
    )


def test_unreachable_webhook_is_logged_not_raised(tmp_path, caplog):
    dead = f"http://127.0.0.1:{free_port()}/hook"
    defs = failing_project(tmp_path, {"webhook_url": dead, "timeout_seconds": 2})
    with caplog.at_level(logging.ERROR, logger="ci_pipeline"):
        notify(defs, "unify_only")
    messages = [record.getMessage() for record in caplog.records]
    assert any(m.startswith("run failed: orchestration_test: run ") and " of job unify_only " in m for m in messages)
    assert any("orchestration.notifications.webhook_url: the notification was not delivered" in m for m in messages)


def test_without_a_webhook_only_the_log_line_is_written(tmp_path, caplog):
    defs = failing_project(tmp_path, {})
    with caplog.at_level(logging.ERROR, logger="ci_pipeline"):
        notify(defs, "full_refresh")
    [line] = [r.getMessage() for r in caplog.records if r.name == "ci_pipeline.orchestration"]
    assert "failed at unify__customer_profile: RuntimeError (an unexpected error" in line


@pytest.fixture
def failing_webhook():
    """A local HTTP server answering every POST with the status given as the last path part; yields (port, hits)."""
    hits: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            hits.append(self.path)
            self.rfile.read(int(self.headers["Content-Length"]))
            status = int(self.path.split("?")[0].rsplit("/", 1)[-1])
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, kwargs=SERVE, daemon=True).start()
    yield server.server_address[1], hits
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("status", [500, 404])
def test_a_refused_webhook_and_the_failure_it_reports_show_no_secret(
    tmp_path, failing_webhook, caplog, capfd, monkeypatch, status
):
    port, hits = failing_webhook
    url = f"http://127.0.0.1:{port}/services/T0PATHTOKEN42/{status}?token=QueryToken42"
    monkeypatch.setenv("CI_TEST_WEBHOOK", url)
    monkeypatch.setenv("CI_TEST_DB_PASSWORD", "DbPassword42")
    config = load_config(write_project(tmp_path, {"notifications": {"webhook_url": "env:CI_TEST_WEBHOOK"}}))

    @dg.asset(key=["unify", "customer_profile"], group_name="unify")
    def customer_profile() -> pd.DataFrame:
        password = resolve_secret("env:CI_TEST_DB_PASSWORD", "enrich.password")
        raise RuntimeError(f"login with {password} refused by https://crm.example.com/api?access_token=AccessTok42")

    defs = orchestration.build(config, dg.Definitions(assets=[customer_profile], resources=shared_resources(config)))
    with caplog.at_level(logging.ERROR, logger="ci_pipeline"):
        notify(defs, "unify_only")
    assert hits and "QueryToken42" in hits[0]  # the notice really went out, and was refused
    problems = [r.getMessage() for r in caplog.records if "not delivered" in r.getMessage()]
    [problem] = problems
    assert problem.startswith(
        f"orchestration.notifications.webhook_url: the notification was not delivered to 127.0.0.1 (answered {status}:"
    )
    assert problem.endswith("check the URL and that the receiving service is up")
    everything = caplog.text + "".join(capfd.readouterr())
    for secret in ("T0PATHTOKEN42", "QueryToken42", "DbPassword42", "AccessTok42"):
        assert secret not in everything
    assert "run failed: " in caplog.text and "RuntimeError (an unexpected error" in caplog.text
