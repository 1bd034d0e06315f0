"""The failure webhook through a governed connection: resolved as the service principal, its URL never shown."""

from __future__ import annotations

import logging

import dagster as dg
import pandas as pd
import yaml

from ci_pipeline.cli import main
from ci_pipeline.config import load_config
from ci_pipeline.defs import orchestration
from ci_pipeline.defs.resources import shared_resources
from ci_pipeline_tests.orchestration.conftest import write_project
from ci_pipeline_tests.orchestration.test_failure_notification import notify, webhook  # noqa: F401 - a fixture


def governed_failing_project(tmp_path, monkeypatch, url: str, *, share: bool) -> dg.Definitions:
    """A project whose unify step fails; root initialises it and adds the webhook connection ops-hook (with
    consent, its URL an env: reference), shared with the service principal svc:alerts when ``share``."""
    for name in ("CI_PIPELINE_METADATA_URL", "CI_PIPELINE_SECRET_ROOTS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("CI_PIPELINE_USER", "root")
    monkeypatch.setenv("CI_TEST_HOOK", url)
    file = write_project(tmp_path, {"notifications": {"webhook_connection": "ops-hook"}})
    data = yaml.safe_load(file.read_text())
    data["governance"] = {"service_principal": "svc:alerts"}
    file.write_text(yaml.safe_dump(data))
    steps = [
        ["init"],
        ["roles", "grant", "svc:alerts", "contributor"],
        ["connections", "add", "ops-hook", "--type", "webhook", "--url", "env:CI_TEST_HOOK", "--consent"],
    ]
    if share:
        steps.append(["connections", "share", "ops-hook", "svc:alerts"])
    for step in steps:
        assert main(["--config", str(file), *step]) == 0
    config = load_config(file)

    @dg.asset(key=["unify", "customer_profile"], group_name="unify")
    def customer_profile() -> pd.DataFrame:
        raise RuntimeError("duplicate CustomerId c-42 in 2 rows")

    return orchestration.build(config, dg.Definitions(assets=[customer_profile], resources=shared_resources(config)))


def test_the_failure_webhook_posts_through_the_shared_connection(tmp_path, monkeypatch, webhook, capfd):  # noqa: F811
    url, bodies = webhook
    defs = governed_failing_project(tmp_path, monkeypatch, url, share=True)
    run = notify(defs, "unify_only")
    [body] = bodies
    assert body["run_id"] == run.run_id and body["status"] == "FAILURE"
    out, err = capfd.readouterr()
    assert url not in out + err


def test_an_unshared_webhook_connection_is_reported_not_used(tmp_path, monkeypatch, webhook, caplog):  # noqa: F811
    url, bodies = webhook
    defs = governed_failing_project(tmp_path, monkeypatch, url, share=False)
    with caplog.at_level(logging.ERROR, logger="ci_pipeline"):
        notify(defs, "unify_only")
    assert bodies == []
    messages = [record.getMessage() for record in caplog.records]
    expected = "connection 'ops-hook' is not shared with 'svc:alerts'"
    assert any("webhook_connection: the notification was not delivered" in m and expected in m for m in messages)
    assert not any(url in m for m in messages)


def test_removing_the_webhook_connection_says_the_configuration_still_names_it(tmp_path, monkeypatch, capsys):
    governed_failing_project(tmp_path, monkeypatch, "https://hooks.example.com/x", share=False)
    capsys.readouterr()
    assert main(["--config", str(tmp_path / "ci_pipeline.yaml"), "connections", "remove", "ops-hook"]) == 0
    out = capsys.readouterr().out
    assert "Removed connection ops-hook." in out
    assert "Note: orchestration.notifications.webhook_connection in " in out and "failure notices go undelivered" in out
