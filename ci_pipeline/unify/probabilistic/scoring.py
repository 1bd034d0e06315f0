"""Scoring with a trained model: candidate pairs, their match weights and probabilities, and an explanation."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ci_pipeline.unify.probabilistic.blocking import block
from ci_pipeline.unify.probabilistic.comparisons import NULL, Comparison
from ci_pipeline.unify.probabilistic.model import ComparisonParameters, Model, Stratum, chunks, gamma_matrix
from ci_pipeline.unify.probabilistic.settings import Settings
from ci_pipeline.unify.probabilistic.table import Table, prepare


def probability(weight: np.ndarray | float) -> np.ndarray:
    """Match probability from a match weight (log2 odds)."""
    return 1.0 / (1.0 + np.exp2(-np.clip(weight, -1000, 1000)))


def _fits(model: Model, table: Table, left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """Per pair, the fit that weighs it: the first stratum it belongs to (its index in ``model.strata``), else the
    main fit (``len(model.strata)``)."""
    fit = np.full(len(left), len(model.strata), dtype=np.intp)
    # The last stratum first, so that an earlier stratum overwrites it: a pair belongs to the first that holds it.
    for k in range(len(model.strata) - 1, -1, -1):
        fit[model.strata[k].members(table, left, right)] = k
    return fit


def _adjustment(fit: Model | Stratum, params: ComparisonParameters, comparison: Comparison, table: Table) -> float:
    """The numerator of the term-frequency adjustment of exact agreement on ``comparison`` in ``fit``: agreeing on
    value v weighs log2(numerator / f(v)) instead of its level's weight; nan when there is none. The main fit has
    m / f(v) in place of m / u (numerator u). A stratum adjusts only on its own name columns (among pairs of one
    name, a rare name is likelier one person than a common one), relative to the chance that two random records
    agree on the column's value (the main fit's u does not hold it: it is that of pairs outside the strata). Not on
    a place: how many people share a street is not how often it is written, and among the pairs of one street a
    rare one's adjustment outweighed two housemates' different first names."""
    if not (comparison.term_frequency and comparison.levels[0] == "exact"):
        return np.nan
    if isinstance(fit, Model):
        return params.u[0]
    if comparison.column not in fit.columns or comparison.kind != "name":
        return np.nan
    column = table.column(comparison.column)
    if column.non_null < 2:
        return np.nan
    counts = column.counts.astype(np.float64)
    return float((counts * (counts - 1)).sum() / (column.non_null * (column.non_null - 1.0)))


def _tables(model: Model, table: Table) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per fit (each stratum, then the main fit): its prior weight; per comparison and fit, the weight of the null
    level (0: no evidence) then of each level, so that level g of fit k is entry ``k * width + g + 1``; and per
    fit and comparison, the term-frequency numerator (nan: none)."""
    comparisons = model.settings.comparisons
    fits = (*model.strata, model)
    width = max(len(c.levels) for c in comparisons) + 1
    levels = np.zeros((len(comparisons), len(fits), width))
    numerator = np.full((len(fits), len(comparisons)), np.nan)
    for k, fit in enumerate(fits):
        for j, (comparison, params) in enumerate(zip(comparisons, fit.parameters, strict=True)):
            # An inactive comparison carries no evidence in that fit: its weights stay 0, unadjusted.
            if params.active:
                levels[j, k, 1 : len(params.levels) + 1] = params.weights
                numerator[k, j] = _adjustment(fit, params, comparison, table)
    return np.asarray([f.prior_weight for f in fits]), levels.reshape(len(comparisons), -1), numerator


def match_weights(model: Model, table: Table, gamma: np.ndarray, left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """Each pair's match weight: its prior weight plus each comparison's weight (:class:`_Weights`), without holding
    a weight per pair and comparison: at millions of pairs, that matrix's fresh memory costs more than the gathers
    that fill it. A chunk of pairs at a time (:func:`chunks`), for the same reason."""
    tables = _tables(model, table)
    out = np.empty(len(left))
    for chunk in chunks(len(left)):
        weights = _Weights(model, table, gamma[chunk], left[chunk], right[chunk], tables)
        total, column = np.zeros(len(weights.fit)), np.empty(len(weights.fit))
        for j in range(gamma.shape[1]):
            total += weights.of(j, column)
        out[chunk] = weights.prior[weights.fit] + total
    return out


class _Weights:
    """The weights of one comparison at a time for a set of pairs: the log2 Bayes factor of the level each pair
    reached (term-frequency adjusted), from the fit that weighs the pair (its first stratum, else the main fit),
    and each pair's prior weight (``prior[fit]``). Every weight is a gather from a small table per fit and
    comparison."""

    def __init__(self, model: Model, table: Table, gamma: np.ndarray, left: np.ndarray, right: np.ndarray, tables=None):
        """``tables``: :func:`_tables` of ``model`` and ``table`` when the caller has them (one per chunk of pairs)."""
        self.model, self.table, self.gamma, self.left = model, table, gamma, left
        self.fit = _fits(model, table, left, right)
        self.prior, self.levels, self.numerator = tables if tables is not None else _tables(model, table)
        self.start = self.fit * (self.levels.shape[1] // len(self.prior)) + 1
        # One index buffer for every comparison: millions of fresh pages per comparison cost more than the gather.
        self.at = np.empty(len(left), dtype=np.intp)

    def of(self, j: int, out: np.ndarray) -> np.ndarray:
        """Fill ``out`` with comparison ``j``'s weight of each pair; returns it."""
        g = self.gamma[:, j]
        np.add(self.start, g, out=self.at)
        self.levels[j].take(self.at, out=out, mode="clip")
        adjusts = ~np.isnan(self.numerator[:, j])
        if adjusts.any():
            fit = self.fit
            exact = np.flatnonzero((g == 0) & adjusts[fit])
            column = self.table.column(self.model.settings.comparisons[j].column)
            # The chance that another record holds the value: the records holding it but the pair's first one, over
            # all records but that one. Counting the record itself would make a value two records share look
            # commoner than it is, the more so the rarer it is, and weigh down the pairs of one person most.
            others = np.maximum(column.counts[column.codes[self.left[exact]]] - 1, 1)
            share = others / max(column.non_null - 1, 1)
            # The weight grows as the agreed value gets rarer.
            out[exact] += np.log2(self.numerator[fit[exact], j] / share)
        return out


def weigh(model: Model, table: Table, left: np.ndarray, right: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The levels (pairs x comparisons) and match weights of the pairs (``left[i]``, ``right[i]``) of ``table``."""
    gamma = gamma_matrix(table, model.settings.comparisons, left, right)
    return gamma, match_weights(model, table, gamma, left, right)


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
    prepared = round(time.perf_counter() - started, 3)
    frame = predict_table(model, table, settings)
    frame.attrs["seconds"] = {"prepare": prepared, **frame.attrs["seconds"]}
    return frame


@dataclass(frozen=True)
class Candidates:
    """Candidate pairs (record positions ``left``, ``right``), the index of the first blocking rule that found each
    and the level each reached per comparison (``gamma``: pairs x comparisons, -1 = null)."""

    left: np.ndarray
    right: np.ndarray
    rule: np.ndarray
    gamma: np.ndarray

    def __len__(self) -> int:
        return len(self.left)


@dataclass(frozen=True)
class Scored:
    """Scored candidate pairs (``left < right``, by ``left`` then ``right``): the candidates, each pair's match weight,
    probability and whether it links (probability at or over the threshold), and the seconds of blocking and of
    comparing and weighing."""

    pairs: Candidates
    weight: np.ndarray
    probability: np.ndarray
    link: np.ndarray
    seconds: dict


def score_pairs(
    model: Model,
    table: Table,
    settings: Settings | None = None,
    touched: np.ndarray | None = None,
    kept: Candidates | None = None,
) -> Scored:
    """Block ``table`` with the settings' rules, compare and weigh every candidate pair.

    Incrementally, ``touched`` marks the new and changed records and ``kept`` holds the last run's candidate pairs
    of two untouched records (at this run's positions; ``left`` may now come after ``right``): only the pairs
    holding a touched record are blocked and compared, the kept ones keep their levels, and every pair is weighed
    afresh (term frequencies count every record). The same result as scoring every pair: a pair's levels and first
    blocking rule depend on its two records alone.
    """
    settings = settings or model.settings
    model.check_fits(settings)
    settings.check_columns(table.columns)
    started = time.perf_counter()
    link_only = settings.link_type == "link_only"
    blocked = block(table, settings.blocking, settings.max_pairs_per_rule, link_only, touched)
    blocked_at = time.perf_counter()
    gamma = gamma_matrix(table, model.settings.comparisons, blocked.left, blocked.right)
    pairs = Candidates(blocked.left, blocked.right, blocked.rule, gamma)
    if kept is not None:
        pairs = _with_kept(model, table, pairs, kept)
    weight = match_weights(model, table, pairs.gamma, pairs.left, pairs.right)
    scored = time.perf_counter()
    chance = probability(weight)
    seconds = {"block": round(blocked_at - started, 3), "score": round(scored - blocked_at, 3)}
    return Scored(pairs, weight, chance, chance >= settings.threshold, seconds)


def predict_table(model: Model, table: Table, settings: Settings | None = None) -> pd.DataFrame:
    """``predict`` on records already prepared (``prepare``, or ``normalized_table`` of raw records);
    ``frame.attrs["seconds"]`` holds the seconds of blocking and scoring."""
    settings = settings or model.settings
    scored = score_pairs(model, table, settings)
    pairs = scored.pairs
    frame = pd.DataFrame(
        {
            "left": pairs.left,
            "right": pairs.right,
            "rule": pd.Categorical.from_codes(pairs.rule, [str(r) for r in settings.blocking]),
            "match_weight": scored.weight,
            "match_probability": scored.probability,
            "link": scored.link,
            **{f"gamma_{c.name}": pairs.gamma[:, j] for j, c in enumerate(settings.comparisons)},
        }
    )
    frame.attrs["seconds"] = scored.seconds
    return frame


def _with_kept(model: Model, table: Table, found: Candidates, kept: Candidates) -> Candidates:
    """The pairs found now and the kept ones together, by ``left`` then ``right`` as blocking orders them. A kept
    pair whose two records changed places in the record order is compared again the right way round (a
    comparison need not be symmetric).

    The kept pairs are in order already when the untouched records kept their order (records that arrive or go
    do not move the others around them): the found ones are then put in their places by one search, without
    sorting millions of pairs or gathering them more than once."""
    turned = np.flatnonzero(kept.left > kept.right)
    low, high, gamma = kept.left, kept.right, kept.gamma
    if len(turned):
        low, high, gamma = np.minimum(low, high), np.maximum(low, high), gamma.copy()
        gamma[turned] = gamma_matrix(table, model.settings.comparisons, low[turned], high[turned])
    n = np.int64(table.n)
    keys = low * n + high
    found_keys = found.left * n + found.right
    if len(keys) > 1 and not bool(np.all(keys[1:] > keys[:-1])):
        order = np.argsort(np.concatenate([found_keys, keys]), kind="stable")
        return Candidates(
            *(np.concatenate([a, b])[order] for a, b in zip(_arrays(found), (low, high, kept.rule, gamma), strict=True))
        )
    is_found = np.zeros(len(found) + len(kept), dtype=bool)
    is_found[np.searchsorted(keys, found_keys) + np.arange(len(found))] = True
    merged = []
    for a, b in zip(_arrays(found), (low, high, kept.rule, gamma), strict=True):
        out = np.empty((len(is_found), *a.shape[1:]), dtype=a.dtype)
        out[is_found], out[~is_found] = a, b
        merged.append(out)
    return Candidates(*merged)


def _arrays(pairs: Candidates) -> tuple:
    return pairs.left, pairs.right, pairs.rule, pairs.gamma


def explain_pair(model: Model, records: pd.DataFrame, left: int, right: int, source: str | None = None) -> pd.DataFrame:
    """A waterfall of one pair: per comparison the two values, the level reached and its weight.

    Returns:
        One row per comparison (``comparison``, ``left_value``, ``right_value``, ``values_of``: the column those
        values are of where a place's general level shows another (``same_city``: the cities), ``level``,
        ``weight`` and ``term_frequency``, the part of the weight that the agreed value's own frequency adds or
        takes away, nan where there is none) after a ``prior`` row and before a ``total`` row whose weight is the
        match weight; ``probability`` on the total row.
    """
    settings = model.settings
    table = prepare(records, settings.columns, source)
    a, b = np.asarray([left], np.int64), np.asarray([right], np.int64)
    gamma = gamma_matrix(table, settings.comparisons, a, b)
    fit = _Weights(model, table, gamma, a, b)
    prior = float(fit.prior[fit.fit[0]])
    weights = np.asarray([fit.of(j, np.empty(1))[0] for j in range(len(settings.comparisons))])
    rows = [{"comparison": "prior", "weight": prior}]
    for j, comparison in enumerate(settings.comparisons):
        level_weight = float(fit.levels[j][fit.start[0] + gamma[0, j]])
        adjusted = gamma[0, j] == 0 and not np.isnan(fit.numerator[fit.fit[0], j])
        level = "null" if gamma[0, j] == NULL else comparison.levels[gamma[0, j]]
        # A pair that reached a general place's level (same_city) agreed on that place: its values are shown.
        shown = next((c for c in getattr(comparison, "then", ()) if level == f"same_{c}"), comparison.column)
        rows.append(
            {
                "comparison": comparison.name,
                "left_value": records[shown].iloc[left],
                "right_value": records[shown].iloc[right],
                # Named where they are not the compared column's, so that they do not read as its values.
                "values_of": shown if shown != comparison.column else None,
                "level": level,
                "weight": float(weights[j]),
                "term_frequency": float(weights[j]) - level_weight if adjusted else np.nan,
            }
        )
    total = prior + float(weights.sum())
    rows.append({"comparison": "total", "weight": total, "probability": float(probability(total))})
    return pd.DataFrame(rows)
