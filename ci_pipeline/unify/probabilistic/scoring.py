"""Scoring with a trained model: candidate pairs, their match weights and probabilities, and an explanation."""

from __future__ import annotations

import time

import numpy as np
import pandas as pd

from ci_pipeline.unify.probabilistic.blocking import block
from ci_pipeline.unify.probabilistic.comparisons import NULL
from ci_pipeline.unify.probabilistic.model import Model, gamma_matrix, shared_weights
from ci_pipeline.unify.probabilistic.settings import Settings
from ci_pipeline.unify.probabilistic.table import Table, prepare


def probability(weight: np.ndarray | float) -> np.ndarray:
    """Match probability from a match weight (log2 odds)."""
    return 1.0 / (1.0 + np.exp2(-np.clip(weight, -1000, 1000)))


def _weights(model: Model, table: Table, gamma: np.ndarray, left: np.ndarray) -> np.ndarray:
    """Per pair and comparison, the log2 Bayes factor of the level reached (term-frequency adjusted)."""
    out = np.zeros(gamma.shape, dtype=np.float64, order="F")
    for j, (comparison, params) in enumerate(zip(model.settings.comparisons, model.parameters, strict=True)):
        if not params.active:
            continue
        g = gamma[:, j]
        # A table lookup: the null level -1 reads the appended 0 (no evidence).
        out[:, j] = np.append(params.weights, 0.0)[g]
        if comparison.term_frequency and comparison.levels[0] == "exact":
            column = table.column(comparison.column)
            exact = g == 0
            share = column.counts[column.codes[left[exact]]] / column.non_null
            # m / f(v) instead of m / u: the weight grows as the agreed value gets rarer.
            out[exact, j] += np.log2(params.u[0] / share)
    return out


def weigh(model: Model, table: Table, left: np.ndarray, right: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The levels (pairs x comparisons) and match weights of the pairs (``left[i]``, ``right[i]``) of ``table``."""
    gamma = gamma_matrix(table, model.settings.comparisons, left, right)
    weights = _weights(model, table, gamma, left)
    prior = shared_weights(model, table, gamma, left, right, weights)
    return gamma, prior + weights.sum(axis=1)


def predict(
    model: Model,
    records: pd.DataFrame,
    settings: Settings | None = None,
    source: str | None = None,
) -> pd.DataFrame:
    """Score every candidate pair of ``records`` with ``model``.

    Args:
        model: a trained model.
        records: normalized records, one per row (positions are the pair ids).
        settings: settings to block and threshold with (default: the model's own); their comparisons must be
            those the model was trained on.
        source: column naming each record's table (for ``link_only``).

    Returns:
        One row per candidate pair: ``left``, ``right`` (positions, left < right), ``rule`` (the first blocking
        rule that found it), ``match_weight``, ``match_probability``, ``link`` (probability >= threshold) and
        ``gamma_<comparison>`` (the level index reached, -1 = null). ``frame.attrs["seconds"]`` holds the seconds
        of preparing the records, blocking and scoring (comparisons and weights), for throughput figures.
    """
    settings = settings or model.settings
    model.check_fits(settings)
    settings.check_columns(records.columns)
    started = time.perf_counter()
    table = prepare(records, settings.columns, source)
    prepared = time.perf_counter()
    blocked = block(table, settings.blocking, settings.max_pairs_per_rule, settings.link_type == "link_only")
    blocked_at = time.perf_counter()
    gamma, weight = weigh(model, table, blocked.left, blocked.right)
    scored = time.perf_counter()
    chance = probability(weight)
    frame = pd.DataFrame(
        {
            "left": blocked.left,
            "right": blocked.right,
            "rule": pd.Categorical.from_codes(blocked.rule, [str(r) for r in settings.blocking]),
            "match_weight": weight,
            "match_probability": chance,
            "link": chance >= settings.threshold,
        }
    )
    for j, comparison in enumerate(settings.comparisons):
        frame[f"gamma_{comparison.name}"] = gamma[:, j]
    frame.attrs["seconds"] = {
        "prepare": round(prepared - started, 3),
        "block": round(blocked_at - prepared, 3),
        "score": round(scored - blocked_at, 3),
    }
    return frame


def explain_pair(model: Model, records: pd.DataFrame, left: int, right: int, source: str | None = None):
    """A waterfall of one pair: per comparison the two values, the level reached and its weight.

    Returns:
        One row per comparison (``comparison``, ``left_value``, ``right_value``, ``level``, ``weight``) after a
        ``prior`` row and before a ``total`` row whose weight is the match weight; ``probability`` on the total row.
    """
    settings = model.settings
    table = prepare(records, settings.columns, source)
    a, b = np.asarray([left], np.int64), np.asarray([right], np.int64)
    gamma = gamma_matrix(table, settings.comparisons, a, b)
    weights = _weights(model, table, gamma, a)
    prior = float(shared_weights(model, table, gamma, a, b, weights)[0])
    weights = weights[0]
    rows = [{"comparison": "prior", "weight": prior}]
    for j, comparison in enumerate(settings.comparisons):
        g = int(gamma[0, j])
        rows.append(
            {
                "comparison": comparison.name,
                "left_value": records[comparison.column].iloc[left],
                "right_value": records[comparison.column].iloc[right],
                "level": "null" if g == NULL else comparison.levels[g],
                "weight": float(weights[j]),
            }
        )
    total = prior + float(weights.sum())
    rows.append({"comparison": "total", "weight": total, "probability": float(probability(total))})
    return pd.DataFrame(rows)
