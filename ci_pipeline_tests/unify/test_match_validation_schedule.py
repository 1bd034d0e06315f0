"""The probabilistic match model's retraining schedule: monthly by default, configured like the predictions'."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from ci_pipeline.config import load_config
from ci_pipeline.config.model import ProjectConfig
from ci_pipeline.config.unify import MatchConfig, MatchTraining
from ci_pipeline.defs import build_definitions
from ci_pipeline_tests.conftest import SAMPLE_DIR


def with_match(config: ProjectConfig, **match) -> ProjectConfig:
    """The configuration with ``unify.match`` fields replaced."""
    unify = config.unify.model_copy(update={"match": config.unify.match.model_copy(update=match)})
    return config.model_copy(update={"unify": unify})


@pytest.fixture(scope="module")
def sample() -> ProjectConfig:
    return load_config(SAMPLE_DIR / "ci_pipeline.yaml")


def test_the_match_model_is_retrained_monthly_by_default_and_runs_in_between_only_score(sample):
    defs = build_definitions(with_match(sample, method="probabilistic"))
    schedule = defs.resolve_schedule_def("train_match_model")
    assert (schedule.cron_schedule, schedule.job_name) == ("0 2 1 * *", "train_match_model")
    assert schedule.execution_timezone == sample.orchestration.timezone
    assert "Retrains the probabilistic match model" in schedule.description
    trains = defs.resolve_job_def("train_match_model").asset_layer.selected_asset_keys
    assert [k.to_user_string() for k in trains] == ["unify/match_model"]


def test_the_retraining_schedule_takes_times_days_a_time_zone_and_can_be_stopped(sample):
    training = MatchTraining(at=["04:30"], days=["sun"], timezone="UTC", enabled=False)
    defs = build_definitions(with_match(sample, method="probabilistic", training=training))
    schedule = defs.resolve_schedule_def("train_match_model")
    assert (schedule.cron_schedule, schedule.execution_timezone) == ("30 4 * * 0", "UTC")
    assert schedule.default_status.value == "STOPPED"


def test_the_rules_method_has_no_model_to_retrain(sample):
    defs = build_definitions(sample)
    assert sample.unify.match.method == "rules"
    assert "train_match_model" not in {s.name for s in defs.schedules or []}
    with pytest.raises(ValidationError, match=r"is given but the method is 'rules'.*remove unify\.match\.training"):
        MatchConfig.model_validate({"training": {"cron": "0 1 * * *"}})
    with pytest.raises(ValidationError, match="give either 'cron' or 'at'"):
        MatchConfig.model_validate({"method": "probabilistic", "training": {"cron": "0 1 * * *", "at": "02:00"}})
