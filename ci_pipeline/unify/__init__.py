"""Unification: map, normalize, deduplicate, match, cluster, merge and keep CustomerIds stable (pure pandas)."""

from ci_pipeline.unify.attach import OUTCOMES
from ci_pipeline.unify.engine import UnifyResult, make_normalizer, unify
from ci_pipeline.unify.identity import assign_ids
from ci_pipeline.unify.normalize import Normalizer, phone_digits, read_alias_file
from ci_pipeline.unify.probabilistic_method import (
    MODEL_PATH,
    SETTINGS_PATH,
    TRAIN_STEP,
    ProbabilisticMatches,
    TrainingMatches,
    check_settings,
    configured_settings,
    model_json,
    read_model,
    train_from_tables,
)

__all__ = [
    "MODEL_PATH",
    "OUTCOMES",
    "SETTINGS_PATH",
    "TRAIN_STEP",
    "ProbabilisticMatches",
    "TrainingMatches",
    "Normalizer",
    "UnifyResult",
    "assign_ids",
    "check_settings",
    "configured_settings",
    "make_normalizer",
    "model_json",
    "phone_digits",
    "read_alias_file",
    "read_model",
    "train_from_tables",
    "unify",
]
