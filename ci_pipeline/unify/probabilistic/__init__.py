"""Probabilistic record matching (Fellegi-Sunter): comparisons with levels, blocking, training, scoring, clusters.

A pure library on pandas frames of normalized records; it never imports dagster. The parts:

- ``Settings``: only describes the model (comparisons, blocking rules, threshold).
- ``comparisons``: the comparison library, named by algorithm and thresholds.
- ``blocking``: OR-ed blocking rules, pairs counted per rule, explosive rules refused.
- ``train`` / ``Model``: u from random pairs, m by EM, a serialisable model with its settings.
- ``predict`` / ``explain_pair``: match weights and probabilities; one pair's waterfall.
- ``clusters``: connected components over links with each cluster's density.
- ``default_settings``: comparisons and blocking chosen from semantic types, printable as YAML.
"""

from ci_pipeline.unify.probabilistic.blocking import BlockingRule, Key, block
from ci_pipeline.unify.probabilistic.clustering import clusters
from ci_pipeline.unify.probabilistic.comparisons import (
    LIBRARY,
    Comparison,
    DamerauLevenshteinAtThresholds,
    DateComparison,
    EmailComparison,
    ExactMatch,
    IdentifierComparison,
    JaroWinklerAtThresholds,
    LevenshteinAtThresholds,
    NameComparison,
    PlaceComparison,
    PostalCodeComparison,
    SettingsError,
    comparison_from_dict,
)
from ci_pipeline.unify.probabilistic.defaults import (
    default_columns,
    default_settings,
    default_strata,
    normalize_records,
    normalized_table,
    settings_yaml,
    trainable,
)
from ci_pipeline.unify.probabilistic.model import ConvergenceWarning, Model, TrainingError, train, training_notes
from ci_pipeline.unify.probabilistic.scoring import explain_pair, predict, predict_table, probability
from ci_pipeline.unify.probabilistic.settings import (
    DEFAULT_THRESHOLD,
    TRAINED_KEYS,
    Settings,
    option_path,
    option_problems,
    placeholder,
)
from ci_pipeline.unify.probabilistic.table import frame_of, prepare

__all__ = [
    "DEFAULT_THRESHOLD",
    "TRAINED_KEYS",
    "LIBRARY",
    "BlockingRule",
    "Comparison",
    "ConvergenceWarning",
    "DamerauLevenshteinAtThresholds",
    "DateComparison",
    "EmailComparison",
    "ExactMatch",
    "IdentifierComparison",
    "JaroWinklerAtThresholds",
    "Key",
    "LevenshteinAtThresholds",
    "Model",
    "NameComparison",
    "PlaceComparison",
    "PostalCodeComparison",
    "Settings",
    "SettingsError",
    "TrainingError",
    "block",
    "clusters",
    "comparison_from_dict",
    "default_columns",
    "default_settings",
    "default_strata",
    "explain_pair",
    "frame_of",
    "normalize_records",
    "normalized_table",
    "option_path",
    "option_problems",
    "placeholder",
    "predict",
    "predict_table",
    "prepare",
    "probability",
    "settings_yaml",
    "trainable",
    "train",
    "training_notes",
]
