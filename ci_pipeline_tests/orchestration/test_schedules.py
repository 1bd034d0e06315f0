"""Schedules built from the configuration fire at the configured local time across daylight-saving changes."""

from __future__ import annotations

from datetime import UTC, datetime
from itertools import islice

import dagster as dg
import pytest
import yaml
from dagster._utils.schedules import cron_string_iterator

from ci_pipeline.config import load_config
from ci_pipeline.defs import build_definitions
from ci_pipeline.defs.refresh import ingested_tables, plan, refresh_nodes
from ci_pipeline.defs.resources import LakeResource
from ci_pipeline.errors import UserError
from ci_pipeline.orchestration.refresh import record_step, table_fingerprint
from ci_pipeline.unify.probabilistic_method import MODEL_PATH
from ci_pipeline_tests.orchestration.conftest import build_project, write_project


def ticks(schedule: dg.ScheduleDefinition, start: datetime, count: int) -> list[datetime]:
    """The next tick times of a schedule, as the Dagster daemon computes them."""
    crons = schedule.cron_schedule if isinstance(schedule.cron_schedule, list) else [schedule.cron_schedule]
    times = set()
    for cron in crons:
        times.update(islice(cron_string_iterator(start.timestamp(), cron, schedule.execution_timezone), count))
    return sorted(times)[:count]


def local_run(schedule: dg.ScheduleDefinition, tick: datetime, lake: LakeResource | None = None) -> dg.RunRequest:
    result = evaluate(schedule, tick, lake)
    assert len(result.run_requests) == 1
    return result.run_requests[0]


def evaluate(schedule: dg.ScheduleDefinition, tick: datetime, lake: LakeResource | None = None):
    resources = {"lake": lake} if lake is not None else None
    with dg.build_schedule_context(scheduled_execution_time=tick, resources=resources) as context:
        return schedule.evaluate_tick(context)


def _schedules(tmp_path, section):
    config = load_config(write_project(tmp_path, section))
    return {s.name: s for s in build_project(config).schedules}


def test_the_refresh_schedule_runs_what_changed_since_the_last_run(tmp_path):
    config = load_config(write_project(tmp_path, {"refresh": {"at": "01:00"}}))
    (tmp_path / "crm" / "contacts.csv").write_text("id\n1\n")
    defs = build_project(config)
    refresh = next(s for s in defs.schedules if s.name == "refresh")
    lake = LakeResource.from_config(config)
    graph = defs.resolve_asset_graph()
    keys = defs.resolve_job_def("incremental_refresh").asset_layer.selected_asset_keys
    tick = datetime(2026, 3, 28, 0, tzinfo=UTC)
    # Nothing recorded in the lake yet: everything runs, as a full refresh.
    first = local_run(refresh, tick, lake)
    assert first.tags["ci_pipeline/mode"] == "full" and set(first.asset_selection) == set(keys)
    # That run succeeded: each step recorded what it computed from.
    nodes, tables = refresh_nodes(graph, keys, lake.get_lake()), ingested_tables(config)
    for path in nodes:
        versions = {path: table_fingerprint(lake.get_lake(), config, *tables[path])} if path in tables else {}
        record_step(lake.get_lake(), [path], nodes, versions, "r1")
    skipped = evaluate(refresh, tick, lake)
    assert not skipped.run_requests and skipped.skip_message == f"all {len(keys)} assets are up to date: nothing to run"
    # A changed file: its table and what depends on it run, the other source's tables do not.
    (tmp_path / "crm" / "contacts.csv").write_text("id\n1\n2\n")
    later = local_run(refresh, tick, lake)
    assert later.tags["ci_pipeline/mode"] == "incremental"
    chosen = {k.to_user_string() for k in later.asset_selection}
    assert {"crm/contacts", "crm/contacts_corrupt", "unify/customer_profile"} <= chosen
    assert not chosen & {"shop/orders", "shop/orders_corrupt"}


def test_daily_refresh_keeps_its_local_time_across_spring_forward(tmp_path):
    refresh = _schedules(tmp_path, {"timezone": "Europe/Amsterdam", "refresh": {"at": "01:00"}})["refresh"]
    assert (refresh.cron_schedule, refresh.execution_timezone) == ("0 1 * * *", "Europe/Amsterdam")
    found = ticks(refresh, datetime(2026, 3, 27, 12, tzinfo=UTC), 3)
    # Clocks go forward on 29 March 2026: the run stays at 01:00 local, one hour earlier in UTC.
    assert [t.astimezone(UTC) for t in found] == [
        datetime(2026, 3, 28, 0, tzinfo=UTC),
        datetime(2026, 3, 29, 0, tzinfo=UTC),
        datetime(2026, 3, 29, 23, tzinfo=UTC),
    ]
    lake = LakeResource.from_config(load_config(tmp_path / "ci_pipeline.yaml"))
    requests = [local_run(refresh, tick, lake) for tick in found]
    assert [r.tags["ci_pipeline/scheduled_for"] for r in requests] == [
        "2026-03-28T01:00+01:00",
        "2026-03-29T01:00+01:00",
        "2026-03-30T01:00+02:00",
    ]
    assert {r.tags["ci_pipeline/mode"] for r in requests} == {"full"}
    assert len({r.run_key for r in requests}) == 3


def test_a_time_skipped_or_repeated_by_dst_runs_exactly_once(tmp_path):
    refresh = _schedules(tmp_path, {"timezone": "Europe/Amsterdam", "refresh": {"at": "02:30"}})["refresh"]
    spring = ticks(refresh, datetime(2026, 3, 28, 12, tzinfo=UTC), 2)
    # 02:30 does not exist on 29 March: the run happens at 03:00 CEST instead of being lost.
    assert [t.isoformat() for t in spring] == ["2026-03-29T03:00:00+02:00", "2026-03-30T02:30:00+02:00"]
    autumn = ticks(refresh, datetime(2026, 10, 24, 12, tzinfo=UTC), 2)
    # 02:30 happens twice on 25 October: one run, not two.
    assert [t.isoformat() for t in autumn] == ["2026-10-25T02:30:00+01:00", "2026-10-26T02:30:00+01:00"]


def test_several_times_a_day_on_chosen_weekdays_in_new_york(tmp_path):
    refresh = _schedules(
        tmp_path, {"timezone": "America/New_York", "refresh": {"at": ["06:00", "18:30"], "days": ["sat", "sun"]}}
    )["refresh"]
    # US clocks go back on 1 November 2026 (a Sunday).
    found = ticks(refresh, datetime(2026, 10, 30, tzinfo=UTC), 4)
    assert [t.strftime("%a %H:%M %z") for t in found] == [
        "Sat 06:00 -0400",
        "Sat 18:30 -0400",
        "Sun 06:00 -0500",
        "Sun 18:30 -0500",
    ]


def test_item_schedules_target_their_selection(tmp_path):
    schedules = _schedules(
        tmp_path,
        {
            "schedules": [
                {"name": "weekly_export", "select": "group:publish", "cron": "0 6 * * 1", "timezone": "Asia/Tokyo"},
                {"name": "retrain_matching", "select": "key:unify/match_pairs", "at": "03:00", "days": ["sun"]},
            ]
        },
    )
    assert "refresh" not in schedules
    export = schedules["weekly_export"]
    assert (export.cron_schedule, export.execution_timezone, export.job_name) == (
        "0 6 * * 1",
        "Asia/Tokyo",
        "weekly_export_job",
    )
    assert schedules["retrain_matching"].cron_schedule == "0 3 * * 0"
    assert schedules["retrain_matching"].execution_timezone == "UTC"


def test_a_schedule_selecting_nothing_is_a_clear_error(tmp_path):
    config = load_config(
        write_project(tmp_path, {"schedules": [{"name": "export", "select": "group:exports", "at": "06:00"}]})
    )
    with pytest.raises(UserError, match=r"orchestration.schedules\[0\].select: 'group:exports' selects no assets"):
        build_project(config)


def test_a_schedule_of_one_table_takes_its_quarantine_table_along(tmp_path):
    section = {"schedules": [{"name": "crm_hourly", "select": "crm/contacts", "cron": "@hourly"}]}
    config = load_config(write_project(tmp_path, section))
    defs = build_project(config)
    job = defs.resolve_job_def("crm_hourly_job")
    assert sorted(key.path for key in job.asset_layer.selected_asset_keys) == [
        ["crm", "contacts"],
        ["crm", "contacts_corrupt"],
    ]


def test_a_retrained_match_model_makes_the_next_incremental_refresh_unify_again(tmp_path):
    """The model is retrained by its own job, outside the refresh: the refresh after it unifies with the new model
    although no source changed, and the one after that finds nothing to do."""
    file = write_project(tmp_path)
    data = yaml.safe_load(file.read_text())
    columns = {"name": "full_name", "email": "email"}
    data["unify"] = {
        "tables": [{"source": "crm", "table": "contacts", "columns": columns}],
        "match": {"method": "probabilistic"},
    }
    file.write_text(yaml.safe_dump(data))
    (tmp_path / "crm" / "contacts.csv").write_text("id,name,email\n1,Ann Lee,ann@example.com\n")
    config = load_config(file)
    defs = build_definitions(config)
    graph, lake = defs.resolve_asset_graph(), LakeResource.from_config(config).get_lake()
    keys = defs.resolve_job_def("incremental_refresh").asset_layer.selected_asset_keys
    lake.write_bytes(MODEL_PATH, b"{}")
    nodes, tables = refresh_nodes(graph, keys, lake), ingested_tables(config)
    for path in nodes:
        versions = {path: table_fingerprint(lake, config, *tables[path])} if path in tables else {}
        record_step(lake, [path], nodes, versions, "r1")
    assert plan(config, graph, keys, lake).stale == {}
    lake.write_bytes(MODEL_PATH, b'{"retrained": true}')
    stale = plan(config, graph, keys, lake).stale
    unified = {k for k in keys if k.path[0] == "unify"}
    assert {dg.AssetKey(list(p)) for p in stale} >= unified
    assert stale[("unify", "customer_profile")] == "unify/match_model was stored anew since it was computed"
    assert not any(p[0] == "crm" for p in stale)
