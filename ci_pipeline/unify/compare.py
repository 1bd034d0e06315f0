"""Blocking, candidate pairs and condition scores, shared by deduplication and matching.

Similarity of two normalized strings is ``(len - edit distance) / len`` of the longer one, where an edit is an
insertion, deletion, substitution or transposition of two adjacent characters (optimal string alignment, rapidfuzz
``OSA.normalized_similarity``: "Heahter" is one typo away from "Heather", not two), computed for all candidate pairs
of a rule in one vectorised call.
A missing value (null, empty, bypass, or a value too frequent to be trusted) scores 0 and never matches.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from rapidfuzz import process
from rapidfuzz.distance import OSA

from ci_pipeline.arrays import isin, pairs_sharing_code, unique
from ci_pipeline.config.unify import Condition, Rule
from ci_pipeline.side_by_side import each
from ci_pipeline.unify.normalize import Normalizer, default_normalizations, shared_values


@dataclass
class Prepared:
    """Normalized values of the record frame, computed once per (field, normalizations).

    Args:
        records: the record frame of :func:`ci_pipeline.unify.records.build_records`.
        normalizer: the configured normalizer.
        max_value_frequency: a normalized value held by more records than this is treated as missing.
    """

    records: pd.DataFrame
    normalizer: Normalizer
    max_value_frequency: int
    frequency_fields: tuple[str, ...] = ("email", "phone")
    max_block_size: int = 1000
    _codes: dict = field(default_factory=dict)
    _values: dict = field(default_factory=dict)
    _blocks: dict = field(default_factory=dict)
    #: (field, normalizations) -> {value: records holding it} for values over the frequency cap.
    frequent: dict = field(default_factory=dict)
    #: rule name -> {"blocks": n, "records": n} of blocking keys over ``max_block_size`` (no pairs formed).
    oversized_blocks: dict = field(default_factory=dict)
    #: Whether ``personal_phone`` masks the numbers that records of two or more first names hold, judged over
    #: these records (explain, which holds two records, judges them over all records instead).
    judge_shared: bool = True
    #: (field, normalizations) -> {value: first names holding it} of values ``personal_phone`` masked.
    shared: dict = field(default_factory=dict)

    def release(self) -> None:
        """Drop the cached normalized columns (they are the largest objects of a run once matching is done)."""
        self._values.clear()
        self._codes.clear()
        self._blocks.clear()
        self.normalizer.forget()

    def steps(self, cond: Condition) -> tuple[str, ...]:
        """The normalizations of a condition: its own, else the defaults of its field's semantic type."""
        return tuple(cond.normalize) if cond.normalize is not None else default_normalizations(cond.field)

    def normalized(self, cond: Condition) -> pd.Series:
        """The normalized column of a condition (``<NA>`` where missing, bypassed or too frequent)."""
        key = (cond.field, self.steps(cond))
        if key not in self._values:
            if cond.field in self.records.columns:
                raw = self.records[cond.field]
            else:
                raw = pd.Series(pd.NA, index=self.records.index, dtype="string")
            values = self.normalizer.apply(raw, key[1])
            if "personal_phone" in key[1] and self.judge_shared:
                found = shared_values(values, self.normalized(Condition(field="first_name")))
                self.shared[key] = {str(v): int(n) for v, n in found.items()}
                values = values.where(~values.isin(found.index))
            # Unmasked, the normalizer knows the codes already.
            known = self.normalizer.codes_of(values)
            if cond.field in self.frequency_fields:
                capped = self._cap(key, values, known)
                known = known if capped is values else None
                values = capped
            self._values[key] = values
            if known is not None:
                self._codes[key] = known
        return self._values[key]

    def _cap(self, key: tuple, values: pd.Series, codes: np.ndarray | None) -> pd.Series:
        """``values`` with those held by more records than the frequency cap masked (and noted in ``frequent``)."""
        if codes is not None and np.bincount(codes[codes >= 0]).max(initial=0) <= self.max_value_frequency:
            return values  # the common case, told by the codes without counting the text of every record
        if codes is None and _most_held(values) <= self.max_value_frequency:
            return values  # the same, counted by Arrow's hash (pandas' count makes every distinct value an object)
        counts = values.value_counts(dropna=True)
        too_many = counts[counts > self.max_value_frequency]
        if len(too_many):
            self.frequent[key] = {str(v): int(n) for v, n in too_many.items()}
            values = values.where(~values.isin(too_many.index))
        return values

    def ignore(self, cond: Condition, frequent: dict[str, int]) -> None:
        """Treat these normalized values of a condition as missing, as too frequent (``value -> records``)."""
        self.frequent[(cond.field, self.steps(cond))] = frequent
        self.mask(cond, list(frequent))

    def mask(self, cond: Condition, values: list[str]) -> None:
        """Treat these normalized values of a condition as missing."""
        key = (cond.field, self.steps(cond))
        current = self.normalized(cond)
        if values:
            self._values[key] = current.where(~current.isin(values))
            self._codes.pop(key, None)
            for blocked in [b for b in self._blocks if key in b]:
                del self._blocks[blocked]

    def warm(self, conds: list[Condition], at_once: int = 2) -> None:
        """Normalize and number the values of ``conds`` now, ``at_once`` fields at a time on threads (Arrow's
        kernels run outside Python's lock); a field's conditions in order, so each reuses the steps the one before
        it applied. The same columns and codes as computing them when first asked, and the masked values noted in
        the order of ``conds``."""
        groups: dict[str, list[Condition]] = {}
        for cond in conds:
            groups.setdefault(cond.field, []).append(cond)
        if any("personal_phone" in self.steps(c) for c in conds) and self.judge_shared:
            self.codes(Condition(field="first_name"))  # read by personal_phone: once, before the threads
        each(lambda group: [self.codes(c) for c in group], groups.values(), at_once, "unify-normalize")
        order = list(dict.fromkeys((c.field, self.steps(c)) for c in conds))
        for noted in (self.frequent, self.shared):
            ordered = {k: noted[k] for k in order if k in noted} | noted
            noted.clear()
            noted.update(ordered)

    def codes(self, cond: Condition) -> np.ndarray:
        """Integer codes of the normalized values (-1 = missing): equal codes = equal values."""
        key = (cond.field, self.steps(cond))
        if key not in self._codes:
            values = self.normalized(cond)
            if key not in self._codes:
                self._codes[key] = pd.factorize(values, use_na_sentinel=True)[0].astype(np.int64)
        return self._codes[key]

    def block_key(self, conds: list[Condition]) -> np.ndarray:
        """Per record, one integer per whole blocking key of ``conds`` (-1 = a value missing): records with equal
        keys are in one block. Computed once over every record for all the rules and tables blocking on it (the
        incremental plan's cap check, then each table's dedup rules and the match rules)."""
        wanted = tuple((c.field, self.steps(c)) for c in conds)
        if wanted not in self._blocks:
            codes = [self.codes(c) for c in conds]
            if len(codes) == 1:
                self._blocks[wanted] = codes[0]
            else:
                at = np.flatnonzero(np.logical_and.reduce([c >= 0 for c in codes]))
                key = codes[0][at]
                for more in codes[1:]:
                    # Both factors stay below the record count, so the product fits an int64.
                    key = pd.factorize(key * (int(more.max(initial=0)) + 1) + more[at])[0].astype(np.int64)
                whole = np.full(len(self.records), -1, dtype=np.int64)
                whole[at] = key
                self._blocks[wanted] = whole
        return self._blocks[wanted]


def _most_held(values: pd.Series) -> int:
    """How many records hold the most frequent present value of a text column."""
    counts = pc.value_counts(pa.array(values.array)).flatten()
    present = pc.is_valid(counts[0])
    return int(pc.max(pc.filter(counts[1], present)).as_py() or 0)


def candidate_pairs(
    prep: Prepared, rule: Rule, subset: np.ndarray, touched: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Pairs ``(i, j)``, ``i < j``, of records in ``subset`` that agree on the rule's whole blocking key.

    With ``touched`` (per record), only pairs with a touched record are formed; block sizes still count every
    record of ``subset``, so a pair is formed exactly when it would be without ``touched``.
    """
    key = prep.block_key(rule.blocking_fields())[subset]
    valid = key >= 0
    idx = subset[valid]
    key = key[valid]
    if len(idx) == 0:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    sizes = np.bincount(key)[key]
    big = sizes > prep.max_block_size
    if big.any():
        found = prep.oversized_blocks.setdefault(rule.name, {"blocks": 0, "records": 0})
        found["blocks"] += int(len(unique(key[big])))
        found["records"] += int(big.sum())
    kept = (sizes > 1) & ~big
    idx, key = idx[kept], key[kept]
    if touched is not None:
        hot = isin(key, unique(key[touched[idx]]))
        idx, key = idx[hot], key[hot]
    codes = np.full(len(prep.records), -1, dtype=np.int64)
    codes[idx] = key
    left, right = pairs_sharing_code(codes)
    if touched is not None:
        keep = touched[left] | touched[right]
        left, right = left[keep], right[keep]
    return left, right


def score(prep: Prepared, cond: Condition, left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """Similarity in [0, 1] of one condition for each pair; 0 where either value is missing (NaN when the condition
    allows missing values: it then holds).

    A fuzzy condition with the ``name`` normalization scores the best of the nickname-folded, the plain and the
    alternatively folded spelling, so a typo in a nickname ("Jamiie" vs "Jamie") is not punished twice and a
    nickname of two formal names (Sam: Samuel or Samantha) matches either.
    """
    if len(left) == 0:
        return np.empty(0, dtype=np.float64)
    codes = prep.codes(cond)
    cl, cr = codes[left], codes[right]
    present = (cl >= 0) & (cr >= 0)
    if cond.is_exact:
        sims = (present & (cl == cr)).astype(np.float64)
    else:
        sims = _fuzzy(prep, cond, left, right, present)
        for other in name_variants(cond, prep.steps(cond)):
            sims = np.maximum(sims, _fuzzy(prep, other, left, right, present))
        sims[present & (cl == cr)] = 1.0
    if cond.allow_missing:
        sims[~present] = np.nan
    return sims


def name_variants(cond: Condition, steps: tuple[str, ...]) -> list[Condition]:
    """The other spellings a fuzzy condition with the ``name`` normalization (among its ``steps``) is scored on: the
    plain name and its alternative nickname reading (see :func:`score`); none without ``name``."""
    if "name" not in steps:
        return []
    return [
        cond.model_copy(update={"normalize": [variant if s == "name" else s for s in steps]})
        for variant in ("name_plain", "name_alt")
    ]


def _fuzzy(prep: Prepared, cond: Condition, left: np.ndarray, right: np.ndarray, present: np.ndarray) -> np.ndarray:
    """OSA similarity of the condition's normalized values where ``present``, once per distinct pair of values:
    candidate pairs repeat value pairs a lot (a block of one surname compares a few first names many times)."""
    sims = np.zeros(len(left), dtype=np.float64)
    idx = np.flatnonzero(present)
    if not len(idx):
        return sims
    normalized, codes = prep.normalized(cond), prep.codes(cond)
    cl, cr = codes[left[idx]], codes[right[idx]]
    coded = (cl >= 0) & (cr >= 0)
    if not coded.all():
        # A variant spelling missing where the condition's own value is not: compared as the values are.
        odd = idx[~coded]
        a, b = (normalized.array.take(side[odd]).to_numpy(dtype=object) for side in (left, right))
        sims[odd] = process.cpdist(a, b, scorer=OSA.normalized_similarity, workers=-1)
        idx, cl, cr = idx[coded], cl[coded], cr[coded]
    width = np.int64(codes.max(initial=0)) + 1
    inverse, distinct = pd.factorize(cl * width + cr)
    # One record per code holds its text: only the distinct values compared become Python strings.
    holder = np.zeros(int(width), dtype=np.int64)
    held = np.flatnonzero(codes >= 0)
    holder[codes[held]] = held
    a, b = (
        normalized.array.take(holder[side]).to_numpy(dtype=object) for side in (distinct // width, distinct % width)
    )
    sims[idx] = process.cpdist(a, b, scorer=OSA.normalized_similarity, workers=-1)[inverse]
    return sims


def passes(cond: Condition, sims: np.ndarray) -> np.ndarray:
    """Whether each score meets the condition (a missing value passes only with ``allow_missing``)."""
    return np.isnan(sims) | (sims >= cond.threshold - 1e-9)


def score_names(rule: Rule) -> list[str]:
    """Condition labels for a rule's score JSON (the field, suffixed when a rule compares a field twice)."""
    names, seen = [], {}
    for c in rule.conditions:
        n = seen.get(c.field, 0)
        seen[c.field] = n + 1
        names.append(c.field if n == 0 else f"{c.field}_{n + 1}")
    return names


def evaluate_rules(
    prep: Prepared, rules: list[Rule], subset: np.ndarray, across_ranks: bool, touched: np.ndarray | None = None
) -> pd.DataFrame:
    """Try the rules in order on the records of ``subset``.

    Args:
        across_ranks: True for matching (only pairs from different tables), False for deduplication.
        touched: per record, whether pairs with it are wanted (an incremental run: new and changed records); None
            for every pair.

    Returns:
        One row per (candidate pair, rule evaluated): ``left, right`` (record positions, left from the earlier
        table), ``rule`` (position), ``scores`` (JSON), ``strength`` (the mean of the conditions' scores, a missing
        one left out; 0 when all are missing) and ``accepted``. A pair accepted by a rule is not tried on later
        rules.
    """
    ranks = prep.records["rank"].to_numpy()
    n = len(prep.records)
    done = np.empty(0, dtype=np.int64)
    frames = []
    for r, rule in enumerate(rules):
        left, right = candidate_pairs(prep, rule, subset, touched)
        keep = (ranks[left] != ranks[right]) if across_ranks else np.ones(len(left), dtype=bool)
        left, right = left[keep], right[keep]
        pair_id = left * n + right
        fresh = np.flatnonzero(~isin(pair_id, done))
        # In the order the stage's pairs are kept in (table, rule, records): that final sort then takes each rule's
        # rows in runs instead of gathering millions of score texts at random.
        fresh = fresh[np.lexsort([right[fresh], left[fresh], ranks[left[fresh]]])]
        left, right, pair_id = left[fresh], right[fresh], pair_id[fresh]
        accepted = np.ones(len(left), dtype=bool)
        scores = []
        for cond in rule.conditions:
            s = score(prep, cond, left, right)
            accepted &= passes(cond, s)
            scores.append(s)
        done = np.concatenate([done, pair_id[accepted]])
        frames.append(
            pd.DataFrame(
                {
                    "left": left,
                    "right": right,
                    "rule": np.full(len(left), r, dtype=np.int64),
                    "scores": scores_json(score_names(rule), scores, len(left)),
                    "strength": np.nan_to_num(np.nanmean(np.vstack(scores), axis=0), nan=0.0)
                    if len(left)
                    else np.empty(0),
                    "accepted": accepted,
                }
            )
        )
    if not frames:
        return pd.DataFrame(
            {
                "left": np.empty(0, np.int64),
                "right": np.empty(0, np.int64),
                "rule": np.empty(0, np.int64),
                "scores": pd.Series([], dtype="string"),
                "strength": np.empty(0),
                "accepted": np.empty(0, bool),
            }
        )
    return pd.concat(frames, ignore_index=True)


#: Scores of pairs are written with three decimals; those of [-1, 1] (every similarity) are looked up among these
#: texts, ``str()`` of each value (index 0: a missing score, 1: minus zero, then -1.000 to 1.000).
_SCORE_RANGE = 1000
_SCORE_TEXTS = ["null", "-0.0"] + [str(k / 1000) for k in range(-_SCORE_RANGE, _SCORE_RANGE + 1)]


def scores_json(names: list[str], scores: list[np.ndarray], n: int) -> pd.Series:
    """``{"email": 1.0, "first_name": 0.857}`` per pair (``null`` for a missing score).

    A score is written as ``str()`` writes the float rounded to three decimals. Each condition's texts, its name
    and the braces included, are taken from the few thousand a score can have, and the conditions joined, in
    Arrow: no Python string per pair (a score outside [-1, 1] is the rare exception written by ``str()``).
    """
    if n == 0:
        return pd.Series([], dtype="string")
    if not names:
        return pd.Series(["{}"] * n, dtype="string")
    last = len(names) - 1
    parts = []
    for c, (name, values) in enumerate(zip(names, scores, strict=True)):
        head, tail = ("{" if c == 0 else "") + f'"{name}": ', "}" if c == last else ""
        parts.append(_score_texts(np.asarray(values, np.float64), head, tail))
    whole = pc.binary_join_element_wise(*parts, pa.scalar(", ", pa.large_string())) if len(parts) > 1 else parts[0]
    return pd.Series(pd.arrays.ArrowStringArray(whole))


def _score_texts(values: np.ndarray, head: str, tail: str) -> pa.Array:
    """``head + str(round(value, 3)) + tail`` per value (``null`` for NaN), as :func:`np.round` rounds."""
    missing = np.isnan(values)
    thousandths = np.rint(np.where(missing, 0.0, values) * 1000)  # np.round(values, 3) before its division
    outside = ~missing & ~(np.abs(thousandths) <= _SCORE_RANGE)
    position = np.where(np.signbit(thousandths) & (thousandths == 0), 1, thousandths + _SCORE_RANGE + 2)
    position = np.where(missing | outside, 0, position).astype(np.int64)
    texts = pa.array([head + t + tail for t in _SCORE_TEXTS], pa.large_string()).take(pa.array(position))
    if outside.any():
        odd = [head + str(v) + tail for v in np.round(values[outside], 3).tolist()]
        texts = pc.replace_with_mask(texts, pa.array(outside), pa.array(odd, pa.large_string()))
    return texts
