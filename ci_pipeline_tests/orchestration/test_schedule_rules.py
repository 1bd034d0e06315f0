"""Schedule expressions and their configuration: cron, times of day, weekdays, time zones, clear errors."""

from __future__ import annotations

import pytest
import yaml
from dagster._utils.schedules import is_valid_cron_string

from ci_pipeline.config import load_config
from ci_pipeline.errors import ConfigError
from ci_pipeline.orchestration.schedule import cron_for_times, parse_cron, validate_cron, validate_timezone
from ci_pipeline_tests.conftest import ROOT
from ci_pipeline_tests.orchestration.conftest import write_project

VALID = ["0 2 * * *", "*/15 6-18 * * mon-fri", "30 1 1,15 * *", "0 0 29 2 *", "5 4 * jan,jul sun", "@daily"]


@pytest.mark.parametrize("expression", VALID)
def test_valid_cron_is_accepted_here_and_by_dagster(expression):
    validate_cron(expression)
    assert is_valid_cron_string(expression)


@pytest.mark.parametrize(
    ("expression", "complaint"),
    [
        ("0 2 * *", "has 4 fields"),
        ("61 2 * * *", "minute 61 is outside 0-59"),
        ("0 24 * * *", "hour 24 is outside 0-23"),
        ("0 0 31 2 *", "never runs"),
        ("0 0 30,31 feb *", "never runs"),
        ("0 0 * * funday", "day of week 'funday' is not a number"),
        ("0 5-2 * * *", "runs backwards"),
        ("*/0 * * * *", "step '0' must be a positive whole number"),
    ],
)
def test_impossible_cron_is_rejected_with_the_reason(expression, complaint):
    with pytest.raises(ValueError, match=complaint):
        parse_cron(expression)


def test_day_of_month_and_weekday_together_run_on_either():
    # cron semantics: "the 31st of February or any Monday" does run.
    assert parse_cron("0 0 31 2 mon").weekdays == {1}


def test_times_of_day_and_weekdays_become_cron():
    assert cron_for_times(["02:00"]) == ["0 2 * * *"]
    assert cron_for_times(["06:00", "18:00", "12:30"], ["monday", "fri"]) == ["0 6,18 * * 1,5", "30 12 * * 1,5"]
    assert cron_for_times(["7:05"], ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]) == ["5 7 * * *"]
    for expression in cron_for_times(["06:00", "18:00", "12:30"], ["sat"]):
        assert is_valid_cron_string(expression)


def test_unknown_time_zone_suggests_a_real_one():
    assert validate_timezone("Europe/Amsterdam") == "Europe/Amsterdam"
    with pytest.raises(ValueError, match="unknown time zone 'Amsterdam'.*did you mean Europe/Amsterdam"):
        validate_timezone("Amsterdam")


def test_configuration_with_schedules_loads(tmp_path):
    config = load_config(
        write_project(
            tmp_path,
            {
                "timezone": "America/New_York",
                "refresh": {"at": ["02:00", "14:00"], "days": ["mon", "wed", "fri"]},
                "schedules": [
                    {"name": "weekly_export", "select": "group:publish", "cron": "0 6 * * 1", "timezone": "UTC"}
                ],
                "notifications": {"webhook_url": "env:CI_WEBHOOK"},
            },
        )
    )
    orchestration = config.orchestration
    assert orchestration.refresh.cron_schedules() == ["0 2,14 * * 1,3,5"]
    assert orchestration.timezone_of(orchestration.refresh) == "America/New_York"
    assert orchestration.timezone_of(orchestration.schedules[0]) == "UTC"


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ({"refresh": {"cron": "0 0 31 2 *"}}, "orchestration.refresh.cron: cron '0 0 31 2 *' never runs"),
        ({"timezone": "Mars/Olympus"}, "orchestration.timezone: unknown time zone 'Mars/Olympus'"),
        (
            {"schedules": [{"name": "x", "select": "*", "at": "9:00", "timezone": "CET2"}]},
            "orchestration.schedules[0].timezone: unknown time zone 'CET2'",
        ),
        ({"refresh": {"at": "25:00"}}, "orchestration.refresh.at: time '25:00' is not HH:MM"),
        ({"refresh": {"at": "02:00", "cron": "0 2 * * *"}}, "orchestration.refresh: give either 'cron' or 'at'"),
        ({"refresh": {"at": "02:00", "days": ["someday"]}}, "orchestration.refresh.days[0]"),
        ({"notifications": {"webhook_url": "hooks.example"}}, "orchestration.notifications.webhook_url"),
        (
            {"schedules": [{"name": "a", "select": "*", "at": "1:00"}, {"name": "a", "select": "*", "at": "2:00"}]},
            "orchestration.schedules[1].name: 'a' is used twice",
        ),
        (
            {"schedules": [{"name": "train_match_model", "select": "*", "at": "1:00"}]},
            "orchestration.schedules[0].name: 'train_match_model' is the name of the pipeline's own schedule",
        ),
    ],
)
def test_bad_schedules_are_reported_with_their_key_path(tmp_path, section, message):
    with pytest.raises(ConfigError) as raised:
        load_config(write_project(tmp_path, section))
    assert any(problem.startswith(message) for problem in raised.value.problems), raised.value.problems


def test_the_sample_section_loads(tmp_path):
    template = ROOT / "ci_pipeline" / "generate" / "templates" / "orchestration.yaml"
    section = yaml.safe_load(template.read_text())["orchestration"]
    config = load_config(write_project(tmp_path, section))
    assert config.orchestration.refresh.cron_schedules() == ["0 2 * * *"]
    assert config.orchestration.timezone == "Europe/Amsterdam"
