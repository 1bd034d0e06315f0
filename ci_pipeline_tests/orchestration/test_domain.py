"""The orchestration logic the Dagster glue wires (``ci_pipeline.orchestration``), on plain values: a new-file tick
on a real folder, the failure notice and its webhook against a real HTTP server on loopback."""

from __future__ import annotations

import json
import os
import threading
import time
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, HTTPServer
from types import SimpleNamespace

from ci_pipeline.errors import UserError
from ci_pipeline.governance.service import AccessDenied
from ci_pipeline.lake import Lake
from ci_pipeline.orchestration import (
    FailedRun,
    WatchedTable,
    evaluate_new_files,
    failure_notice,
    send_webhook,
    watch_root,
)
from ci_pipeline.orchestration.tags import run_trigger
from ci_pipeline_tests.conftest import SERVE

NOW = datetime(2026, 7, 1, 12, tzinfo=UTC)


def watched(folder) -> dict[str, WatchedTable]:
    location = str(folder / "crm")
    return {"crm/contacts": WatchedTable(location, watch_root(location), (("crm", "contacts"), ("unify", "x")))}


def test_a_tick_records_a_baseline_then_asks_for_one_run_of_what_changed(tmp_path):
    (tmp_path / "crm").mkdir()
    (tmp_path / "crm" / "a.csv").write_text("id\n1\n")
    lake = Lake.local(tmp_path)
    first = evaluate_new_files(None, lambda _audit: lake, watched(tmp_path), 0, NOW)
    assert first.run_key is None and first.problems == [] and json.loads(first.cursor)["version"] == 2
    (tmp_path / "crm" / "b.csv").write_text("id\n2\n")
    stamp = time.time() - 3600
    os.utime(tmp_path / "crm" / "b.csv", (stamp, stamp))
    second = evaluate_new_files(first.cursor, lambda _audit: lake, watched(tmp_path), 0, datetime.now(UTC))
    assert second.run_key is not None
    assert second.assets == (("crm", "contacts"), ("unify", "x"))
    assert second.tags["ci_pipeline/changed_tables"] == "crm/contacts"
    assert second.tags["ci_pipeline/mode"] == "incremental"


def test_a_tick_that_cannot_open_the_lake_keeps_the_cursor_and_says_why(tmp_path):
    def refused(_audit):
        raise UserError("lake.account_key: the account refused the key")

    tick = evaluate_new_files('{"version": 1, "tables": {}}', refused, watched(tmp_path), 0, NOW)
    assert tick.run_key is None and tick.cursor == '{"version": 1, "tables": {}}'
    assert tick.problems == ["cannot open the lake: lake.account_key: the account refused the key"]


def test_a_refused_lake_connection_starts_nothing_and_is_audited_once_per_change(tmp_path):
    # The sensor asks every few seconds: the same refusal is written to the audit log once, not at every tick.
    (tmp_path / "crm").mkdir()
    asked, reason = [], ["lake.connection: connection 'lake-conn' is not shared with 'ci-pipeline-scheduler'"]

    def open_lake(audit_refusal):
        asked.append(audit_refusal)
        if reason[0]:
            raise AccessDenied(reason[0])
        return Lake.local(tmp_path)

    first = evaluate_new_files(None, open_lake, watched(tmp_path), 0, NOW)
    assert first.run_key is None and not first.opened and asked == [False, True]
    assert first.problems == [f"cannot list the source locations (crm/contacts): {reason[0]}"]
    again = evaluate_new_files(first.cursor, open_lake, watched(tmp_path), 0, NOW)
    assert again.problems == first.problems and asked == [False, True, False]
    reason[0] = "lake.connection: 'ci-pipeline-scheduler' has no role in this environment"
    evaluate_new_files(again.cursor, open_lake, watched(tmp_path), 0, NOW)
    assert asked[-2:] == [False, True]
    # Once allowed the sources are listed (the baseline) and the refusal is forgotten: a new one is audited again.
    reason[0] = ""
    allowed = evaluate_new_files(again.cursor, open_lake, watched(tmp_path), 0, NOW)
    assert allowed.opened and allowed.baseline and "refused" not in json.loads(allowed.cursor)


def test_the_notice_names_the_step_and_the_user_error_and_reaches_the_webhook():
    received = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, kwargs=SERVE, daemon=True).start()
    try:
        cause = SimpleNamespace(cls_name="ConfigError", message="ConfigError: unify.tables: fix it", cause=None)
        error = SimpleNamespace(cls_name="DagsterExecutionStepExecutionError", message="wrapped", cause=cause)
        run = FailedRun(
            "contoso", "r-1", "full_refresh", {"ci_pipeline/mode": "full", "other": "x"}, [("unify", error)]
        )
        notice = failure_notice(run, "http://ui.example/")
        assert notice["text"] == (
            "contoso: run r-1 of job full_refresh (started from the Dagster UI) failed at unify: unify.tables: fix it"
        )
        assert notice["url"] == "http://ui.example/runs/r-1"
        assert notice["tags"] == {"ci_pipeline/mode": "full", "ci_pipeline/trigger": "ui"}
        url = f"http://127.0.0.1:{server.server_port}/hook"
        assert send_webhook("env:HOOK", notice, 5, resolve=lambda ref: url) is None
        assert received == [notice]
        refused = send_webhook("env:HOOK", notice, 5, resolve=_refuse, key="orchestration.notifications.webhook_url")
        assert refused.startswith("orchestration.notifications.webhook_url: the notification was not delivered")
    finally:
        server.shutdown()
        server.server_close()


def test_a_notice_forwards_an_unexpected_error_s_type_only():
    """A library's message may quote a secret the run resolved, which the sensor's process never saw to mask."""
    leak = SimpleNamespace(cls_name="ValueError", message="ValueError: bad token kV9-NeverSeen-77a1", cause=None)
    error = SimpleNamespace(cls_name="DagsterExecutionStepExecutionError", message="wrapped", cause=leak)
    notice = failure_notice(FailedRun("contoso", "r-2", "full_refresh", {}, [("publish", error)]))
    assert notice["failed_steps"] == [
        {"step": "publish", "error": "ValueError (an unexpected error: its message is in the run's event log)"}
    ]
    assert "kV9-NeverSeen-77a1" not in json.dumps(notice)


def _refuse(ref: str) -> str:
    raise UserError(f"{ref}: the environment variable is not set")


def test_a_run_without_a_trigger_tag_was_launched_from_the_ui():
    # The UI's asset graph materialises through Dagster's own job, which carries none of this project's tags.
    assert run_trigger({}) == "ui"
    assert run_trigger({"ci_pipeline/trigger": "cli", "dagster/schedule_name": "x"}) == "cli"
    assert run_trigger({"dagster/schedule_name": "weekly"}) == "schedule:weekly"
    assert run_trigger({"dagster/sensor_name": "new_files"}) == "sensor:new_files"
    assert run_trigger({"dagster/backfill": "b1"}) == "backfill"
    run = FailedRun("contoso", "r-2", "__ASSET_JOB", {"dagster/schedule_name": "weekly"}, [])
    assert (
        failure_notice(run)["text"] == "contoso: run r-2 of job __ASSET_JOB (started by schedule weekly) failed at "
        "before any step started"
    )
