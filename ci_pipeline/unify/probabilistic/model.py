"""The Fellegi-Sunter model and its training (u from random pairs, m by EM over blocked pairs); ``scoring`` weighs
pairs with it.

For each comparison level, m is the probability that two records of one person reach it and u the probability that
two records of different people do. A pair's match weight is the prior log2-odds that two records match plus, per
comparison, log2(m / u) of the level it reached (a null level adds nothing); its match probability is
``2**w / (1 + 2**w)``.

Training:
- u comes from a seeded sample of random record pairs (almost all of them are non-matches), the few matches among
  them taken out once m and the prior are known (:func:`_without_matches`).
- m comes from expectation maximisation over the blocked candidate pairs, unsupervised: both m and u are fitted
  there (the blocked non-matches agree more often than random pairs, so their own u is needed to separate the two
  classes), then m is kept and u is taken from the random sample for scoring. Labelled pairs, when given, seed m.
- The prior is the expected number of matches among blocked pairs over the number of all possible pairs.
- Strata (``Settings.strata``): pairs agreeing on a key that ties fields together among non-matches are fitted
  apart (``Stratum``). Pairs sharing an e-mail address, a phone or a street are mostly one person or housemates,
  who share a surname and an address as well; pairs of one name are one person or namesakes, whose e-mail user
  names are made of that name. Their fields cannot be weighed as independent evidence with the u of random pairs,
  so each stratum has its own match share, m and u, all by EM. The main fit leaves their pairs out.

Term-frequency adjustment: for a comparison with ``term_frequency``, exact agreement on value v gets the Bayes
factor m / f(v) instead of m / u, f(v) being the chance that another record holds v (v's share of the known values
but the pair's own): agreeing on a rare surname counts for more than agreeing on "smith", on a placeholder birth
date for less than on one nobody else has.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ci_pipeline.arrays import unique
from ci_pipeline.errors import UserError
from ci_pipeline.grammar.comparisons import bands
from ci_pipeline.side_by_side import each
from ci_pipeline.unify.probabilistic.blocking import Blocked, BlockingRule, Key, block, pair_count
from ci_pipeline.unify.probabilistic.comparisons import NULL, Comparison, SettingsError
from ci_pipeline.unify.probabilistic.settings import Settings, stratum_columns
from ci_pipeline.unify.probabilistic.table import Table, prepare

#: Candidate pairs from which :func:`gamma_matrix` runs comparisons side by side. A comparison's work on many pairs
#: (hashing the value pairs, gathering codes and levels, rapidfuzz) runs outside Python's lock, so two comparisons
#: keep two cores busy: 20 million pairs took 0.65 of the time one after another did, 650,000 pairs 0.7; on a few
#: thousand pairs the Python between those steps holds the lock and threads gain nothing.
PARALLEL_PAIRS = 250_000
#: Comparisons computed at once (each holds its pairs' keys and levels: a few bytes per pair).
COMPARISONS_AT_ONCE = 2
#: Pairs a comparison takes at a time. A comparison's arrays for 20 million pairs (keys, masks, the value pairs'
#: hash table) are hundreds of megabytes each, fresh pages every time; a million pairs' are a few megabytes that
#: the allocator hands out again from chunk to chunk. At a million people (20 million pairs) the levels came 1.3
#: times as fast this way, although a value pair that recurs in several chunks is measured once in each.
CHUNK_PAIRS = 1 << 20

#: Pseudo-count added to each level when probabilities are estimated from counts (Jeffreys prior): a level never
#: seen gets a small probability, not zero, so no weight is infinite.
PSEUDO_COUNT = 0.5

#: A fit in which exact agreement halves the odds of a match (or worse) is wrong, not a weak field.
SANE_EXACT_WEIGHT = -1.0
#: Comparison kinds of fields that describe a person rather than identify one (a company, a town, a tier, a
#: gender): where exact agreement on one comes out less likely for matches than for non-matches, it is switched off
#: with a warning rather than failing training (see ``_judge_fit``).
DESCRIBING_KINDS = frozenset({"exact", "jaro_winkler", "levenshtein", "damerau_levenshtein"})
#: A cause of training failures the other hints miss: no duplicates, so no match class for EM to find.
FEW_DUPLICATES = (
    "If the records hold few or no duplicates (a table already deduplicated), the model has nothing to learn "
    "from: use unify.match.method rules, or train it on data that holds duplicates; where each system holds a "
    "person at most once, link the systems' tables across each other only (unify.match.probabilistic.link_type: "
    "link_only; bench linkage --source COLUMN)"
)

#: Pairs of one person's records the model may expect per record (over the main fit and every stratum) below which
#: the data hold next to no duplicates to learn from: a clean export of 5,727 distinct people trains to 0.0002 a
#: record, while data with duplicates expect tenths to whole pairs a record. A sanity bound, far from both.
FEW_MATCHES_PER_RECORD = 0.001

#: The share of a stratum's matches that must know a comparison on both sides for the main fit to keep the
#: stratum's m of it: fewer, and its m says little about one person's records (see ``train``).
MIN_SUPPORT = 0.5

#: Version of the serialised model layout (2: strata).
FORMAT = 2

#: A stratum of fewer pairs than this is too few to fit its own two classes: its pairs are weighed by the main fit.
MIN_STRATUM_PAIRS = 200

#: A stratum's EM runs to convergence (accelerated) when at least this many active comparisons read none of its
#: key columns. Its two classes are told apart by those alone (on its keys every pair agrees), with m and u both
#: free: a mixture of two classes is identifiable from three independent indicators, not fewer. From one or two,
#: EM drifts along a ridge of equally likely fits and, run to the end, may lose a class altogether; there it runs
#: plain for at most :data:`WEAK_STRATUM_STEPS` steps from its starting values (the random pairs' u, the seed m),
#: which keeps it near them.
MIN_FREE_COMPARISONS = 3

#: The plain EM steps of a stratum that fewer than :data:`MIN_FREE_COMPARISONS` comparisons describe.
WEAK_STRATUM_STEPS = 100

#: Said of a stratum left to the main fit: the model is sound without it, the note only explains its weights.
NOTHING_TO_DO = "no action needed"
#: A stratum's fit whose match share comes out below this (or above one minus it) has lost a class: not sane.
MIN_SHARE = 1e-6

#: SQUAREM's jumps tried per cycle, each halfway back towards the two plain EM steps from the one before.
JUMP_TRIES = 3


class TrainingError(UserError):
    """Training could not produce a usable model; the message names the comparison and what to change."""


class NoPersonFit(TrainingError):
    """EM's match class differs in every name as strangers do: it is not one person's records (``_judge_fit``)."""


class ConvergenceWarning(UserWarning):
    """EM stopped at its iteration limit; the model kept its last (sane) parameters."""


#: Where training's warnings go while :func:`training_notes` collects them on this thread; None: to ``warnings``.
_NOTES: ContextVar[list[str] | None] = ContextVar("training_notes", default=None)


@contextmanager
def training_notes() -> Iterator[list[str]]:
    """Collect what training on this thread warns, as text, instead of warning. ``warnings.catch_warnings`` would
    change the whole process's warning state: a step training beside others on the threaded executor would take
    their warnings as its own and could drop theirs or its own when another step's block ended first."""
    notes: list[str] = []
    token = _NOTES.set(notes)
    try:
        yield notes
    finally:
        _NOTES.reset(token)


def _warn(message: str, category: type[Warning] = UserWarning, stacklevel: int = 2) -> None:
    """A warning of training: collected by :func:`training_notes` when active, else warned (``stacklevel`` as for
    ``warnings.warn`` from the caller)."""
    notes = _NOTES.get()
    if notes is None:
        warnings.warn(message, category, stacklevel=stacklevel + 1)
    else:
        notes.append(message)


@dataclass(frozen=True)
class ComparisonParameters:
    """Trained m and u per level of one comparison; ``note`` says why a comparison carries no evidence."""

    name: str
    levels: tuple[str, ...]
    m: tuple[float, ...]
    u: tuple[float, ...]
    note: str | None = None

    @property
    def active(self) -> bool:
        """Whether the comparison adds evidence (its field is neither null nor constant everywhere)."""
        return self.note is None

    @property
    def weights(self) -> np.ndarray:
        """log2(m / u) per level (0 for an inactive comparison)."""
        if not self.active:
            return np.zeros(len(self.levels))
        return np.log2(np.asarray(self.m) / np.asarray(self.u))


@dataclass(frozen=True)
class Iteration:
    """One EM iteration (in a stratum's fit, one SQUAREM cycle): the share of blocked pairs taken as matches, the
    largest parameter change of one plain EM step, and the log-likelihood."""

    iteration: int
    match_share: float
    change: float
    log_likelihood: float


@dataclass(frozen=True)
class Stratum:
    """Pairs agreeing exactly on one of a few keys, with their own fit.

    The model takes its comparisons as independent evidence, which fails where fields go together among
    non-matches. Among random pairs, two records holding one e-mail address are nearly always one person; among the
    pairs that do hold one, the non-matches are the other members of a household (or the staff of a company), who
    share its surname and street too and differ in first name and birth date. Among pairs of one name, the
    non-matches are namesakes, whose e-mail user names are made of that name too. Such pairs get their own two
    classes: a match share and m and u per level, all fitted by EM over every pair of the stratum.

    Args:
        keys: a pair belongs to the stratum when it agrees exactly on every column of one key (and belongs to no
            earlier stratum).
        share: the share of matches among the stratum's pairs (its prior).
        parameters: m and u per comparison within the stratum.
        pairs: the stratum's pairs at training.
        converged: whether its EM converged.
    """

    keys: tuple[tuple[str, ...], ...]
    share: float
    parameters: tuple[ComparisonParameters, ...]
    pairs: int
    converged: bool = True
    #: Per comparison, the expected matches at training that know it on both sides (:func:`_support`): what the
    #: main fit reads to know which m the stratum learnt well. Not stored with the model: only training reads it.
    support: tuple[float, ...] = field(default=(), compare=False, repr=False)

    def learnt_from_few(self) -> set[int]:
        """The comparisons fewer than :data:`MIN_SUPPORT` of the stratum's matches know on both sides (from
        ``support``): its m of them comes from a few pairs."""
        learnt = self.share * self.pairs * MIN_SUPPORT
        return {j for j, held in enumerate(self.support) if held < learnt}

    @property
    def prior_weight(self) -> float:
        """log2 of the odds that a pair of the stratum matches."""
        return float(np.log2(self.share / (1 - self.share)))

    @property
    def columns(self) -> set[str]:
        """Every column of its keys."""
        return set(stratum_columns(self.keys))

    def members(self, table: Table, left: np.ndarray, right: np.ndarray) -> np.ndarray:
        """Whether each pair (``left[i]``, ``right[i]``) agrees exactly on every column of one of the keys."""
        return _agree(table, self.keys, left, right)

    def to_dict(self) -> dict:
        """A JSON-able description."""
        return {
            "keys": [list(k) for k in self.keys],
            "share": self.share,
            "pairs": self.pairs,
            "converged": self.converged,
            "parameters": [_parameters_dict(p) for p in self.parameters],
        }

    @classmethod
    def from_dict(cls, data: dict) -> Stratum:
        """The stratum of ``to_dict``'s description."""
        return cls(
            tuple(tuple(k) for k in data["keys"]),
            float(data["share"]),
            tuple(_read_parameters(p) for p in data["parameters"]),
            int(data["pairs"]),
            bool(data["converged"]),
        )


def _agree(table: Table, keys, left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """Whether each pair agrees exactly (known on both sides) on every part of one of ``keys``: a column, or a
    blocking key of one (``nickname(first_name)``: the names agree once nicknames are folded)."""
    inside = np.zeros(len(left), dtype=bool)
    for key in keys:
        agree = np.ones(len(left), dtype=bool)
        for part in key:
            codes = Key.parse(part, "strata").codes(table)
            agree &= (codes[left] == codes[right]) & (codes[left] >= 0)
        inside |= agree
    return inside


def _parameters_dict(p: ComparisonParameters) -> dict:
    return {"name": p.name, "levels": list(p.levels), "m": list(p.m), "u": list(p.u), "note": p.note}


def _read_parameters(p: dict) -> ComparisonParameters:
    return ComparisonParameters(p["name"], tuple(p["levels"]), tuple(p["m"]), tuple(p["u"]), p.get("note"))


@dataclass(frozen=True)
class Model:
    """A trained Fellegi-Sunter model with the settings it was trained on.

    Args:
        settings: the settings trained on.
        parameters: m and u per comparison, in the settings' order.
        prior: the probability that two random records match.
        converged: whether EM converged within ``settings.max_iterations``.
        trace: the EM iterations.
        training: figures of the training run (records, pairs per blocking rule, random pairs sampled).
        strata: the fits of the pairs of each stratum of ``settings.strata`` (those that could be fitted); the
            main fit is that of the other pairs.
    """

    settings: Settings
    parameters: tuple[ComparisonParameters, ...]
    prior: float
    converged: bool
    trace: tuple[Iteration, ...]
    training: dict = field(default_factory=dict)
    strata: tuple[Stratum, ...] = ()

    @property
    def prior_weight(self) -> float:
        """log2 of the prior odds that two records match."""
        return float(np.log2(self.prior / (1 - self.prior)))

    def check_fits(self, settings: Settings) -> None:
        """Refuse settings whose comparisons or strata differ from those the model was trained on (retrain)."""
        trained = {c.name: c.to_dict() for c in self.settings.comparisons}
        wanted = {c.name: c.to_dict() for c in settings.comparisons}
        same_strata = settings.strata == self.settings.strata
        if trained == wanted and same_strata:
            return
        changes = [] if same_strata else ["strata changed"]
        changes += [f"{n!r} added" for n in wanted if n not in trained]
        changes += [f"{n!r} removed" for n in trained if n not in wanted]
        changes += [f"{n!r} changed" for n in wanted if n in trained and wanted[n] != trained[n]]
        if not changes:
            changes = ["the comparisons are in another order"]
        raise SettingsError(
            f"the stored model was trained with other comparisons ({'; '.join(changes)}): retrain the model with "
            "the current settings"
        )

    def to_dict(self) -> dict:
        """A JSON-able description with the settings trained on; ``Model.from_dict`` reads it back."""
        return {
            "format": FORMAT,
            "settings": self.settings.to_dict(),
            "prior": self.prior,
            "converged": self.converged,
            "parameters": [_parameters_dict(p) for p in self.parameters],
            "trace": [vars(i) for i in self.trace],
            "training": self.training,
            "strata": [s.to_dict() for s in self.strata],
        }

    @classmethod
    def from_dict(cls, data: dict) -> Model:
        """A model from ``to_dict``'s description; a description of another layout is a clear error."""
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise UserError(
                f"the stored model has layout {data.get('format') if isinstance(data, dict) else None!r}, this "
                f"version reads layout {FORMAT}: retrain the model"
            )
        settings = Settings.from_dict(data["settings"])
        parameters = tuple(_read_parameters(p) for p in data["parameters"])
        strata = tuple(Stratum.from_dict(s) for s in data.get("strata", []))
        expected = [(c.name, c.levels) for c in settings.comparisons]
        fitted = [parameters] + [s.parameters for s in strata]
        if any([(p.name, p.levels) for p in fit] != expected for fit in fitted):
            raise UserError(f"the stored model's parameters do not fit its own settings ({_unfit(expected, fitted)})")
        return cls(
            settings=settings,
            parameters=parameters,
            prior=float(data["prior"]),
            converged=bool(data["converged"]),
            trace=tuple(Iteration(**i) for i in data["trace"]),
            training=dict(data.get("training", {})),
            strata=strata,
        )


def _total_pairs(table: Table, link_only: bool) -> int:
    if not link_only:
        return table.n * (table.n - 1) // 2
    sizes = np.bincount(table.source).astype(np.int64)
    return int((sizes.sum() ** 2 - (sizes**2).sum()) // 2)


def _random_pairs(table: Table, settings: Settings) -> tuple[np.ndarray, np.ndarray]:
    """A seeded sample of distinct-record pairs (of different sources for link-only)."""
    rng = np.random.default_rng(settings.seed)
    size = int(min(settings.u_sample_pairs, max(_total_pairs(table, settings.link_type == "link_only"), 1)))
    left, right = rng.integers(0, table.n, size), rng.integers(0, table.n, size)
    keep = left != right
    if settings.link_type == "link_only":
        keep &= table.source[left] != table.source[right]
    return left[keep], right[keep]


def _frequencies(levels: int, gamma: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """Smoothed share of each level among the non-null values of ``gamma``."""
    known = gamma >= 0
    return _smoothed(np.bincount(gamma[known], weights=None if weights is None else weights[known], minlength=levels))


def _smoothed(counts: np.ndarray) -> np.ndarray:
    """Each level's share of ``counts`` (one per level), every level given :data:`PSEUDO_COUNT` more."""
    return (counts + PSEUDO_COUNT) / (counts.sum() + PSEUDO_COUNT * len(counts))


def _without_matches(levels: int, gamma: np.ndarray, m: np.ndarray, prior: float) -> np.ndarray:
    """u from the random pairs' levels ``gamma`` with the matches among them taken out: ``prior`` of the pairs
    are matches, whose levels fall as ``m`` says.

    Random pairs are nearly all non-matches, but where people have several records the few matches among them
    are most of the agreement on a field that strangers rarely share: with a few records a person, a random pair
    is one person's about once in ten thousand, which is more often than two strangers share a birth date, so the
    raw share of agreeing random pairs is mostly matches and the field's weight came out bits too low (measured:
    the birth date's exact u 0.0029 raw, 0.0008 without the matches, on 1,000 records of 181 people)."""
    known = gamma >= 0
    counts = np.bincount(gamma[known], minlength=levels).astype(np.float64)
    return _smoothed(np.maximum(counts - prior * known.sum() * np.asarray(m, dtype=np.float64), 0.0))


def _inactive_reason(table: Table, comparison: Comparison) -> str | None:
    column = table.column(comparison.column)
    if column.non_null == 0:
        return f"column {comparison.column!r} is null in every record: it carries no evidence (map another column)"
    if len(column.values) == 1:
        return f"column {comparison.column!r} holds the same value in every record: it carries no evidence"
    return None


def gamma_matrix(table: Table, comparisons: tuple[Comparison, ...], left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """Levels reached by each pair (rows) in each comparison (columns), -1 = null.

    From :data:`PARALLEL_PAIRS` pairs on, the comparisons run :data:`COMPARISONS_AT_ONCE` at a time on threads;
    each fills its own column, :data:`CHUNK_PAIRS` pairs at a time, so the result is the same."""
    out = np.empty((len(left), len(comparisons)), dtype=np.int8)

    def one(j: int) -> None:
        for chunk in chunks(len(left)):
            out[chunk, j] = comparisons[j].gamma(table, left[chunk], right[chunk])

    each(one, range(len(comparisons)), COMPARISONS_AT_ONCE if len(left) >= PARALLEL_PAIRS else 1, "comparisons")
    _count_swaps_once(comparisons, out)
    return out


def chunks(n: int) -> list[slice]:
    """Consecutive slices of ``n`` pairs, :data:`CHUNK_PAIRS` at a time."""
    return [slice(start, start + CHUNK_PAIRS) for start in range(0, n, CHUNK_PAIRS)]


def _count_swaps_once(comparisons: tuple[Comparison, ...], gamma: np.ndarray) -> None:
    """A swap of two name columns is one event: the first of two comparisons naming each other in ``swap_with``
    weighs it, and the other is null (no evidence) where it is swapped too. Counted in both, the two ``swapped``
    levels, which always go together, would add the same evidence twice."""
    first = {}
    for j, comparison in enumerate(comparisons):
        other = getattr(comparison, "swap_with", None)
        if other is None or "swapped" not in comparison.levels:
            continue
        if (other, comparison.column) in first:
            gamma[gamma[:, j] == comparison.levels.index("swapped"), j] = NULL
        else:
            first[(comparison.column, other)] = j


def _seed_m(table: Table, settings: Settings, labels: pd.DataFrame | None) -> list[np.ndarray]:
    """Starting m per comparison: from labelled matching pairs when given, else most mass on the top level."""
    starts = []
    for comparison in settings.comparisons:
        levels = len(comparison.levels)
        start = np.full(levels, 0.1 / max(levels - 1, 1))
        start[0] = 0.9
        starts.append(start)
    if labels is None:
        return starts
    missing = {"left", "right", "match"} - set(labels.columns)
    if missing:
        raise UserError(f"labelled pairs need columns left, right and match; missing {', '.join(sorted(missing))}")
    left, right = labels["left"].to_numpy(np.int64), labels["right"].to_numpy(np.int64)
    bad = np.flatnonzero((left < 0) | (left >= table.n) | (right < 0) | (right >= table.n) | (left == right))
    if len(bad):
        raise UserError(
            f"labelled pair row {int(bad[0])}: ({left[bad[0]]}, {right[bad[0]]}) is no pair of two of the "
            f"{table.n} records; give record positions 0..{table.n - 1}, two different ones"
        )
    match = labels["match"].astype(bool).to_numpy()
    if not match.any():
        return starts
    gamma = gamma_matrix(table, settings.comparisons, left[match], right[match])
    return [_frequencies(len(c.levels), gamma[:, j]) for j, c in enumerate(settings.comparisons)]


class _Patterns:
    """Distinct level patterns (rows: -1 = null) as positions in one flat table of every comparison's levels, so
    that one EM iteration is a gather per comparison and one ``bincount`` for all of them.

    A null level points at a slot past the table whose log-probability is 0: it adds nothing, as a null level
    adds no evidence. Sums run in the order of the comparisons, pattern by pattern, as they would one comparison
    at a time, so the fitted parameters are the same to the last bit.
    """

    def __init__(self, patterns: np.ndarray, sizes: list[int], columns: np.ndarray):
        self.sizes = sizes
        self.starts = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
        self.width = int(sum(sizes))
        levels = patterns.astype(np.int64)
        self.index = np.where(levels >= 0, levels + self.starts, self.width)
        self.columns = columns
        # Pattern by pattern, the levels of the trained comparisons (for their counts in one bincount).
        self.flat = self.index[:, columns].ravel()
        self.rows = len(patterns)
        # Comparison by comparison, each pattern's slot: one gather for all of them.
        self.by_comparison = np.ascontiguousarray(self.index[:, columns].T)

    def log_table(self, probabilities: list[np.ndarray]) -> np.ndarray:
        """log of every level's probability, flat, then 0 for the null slot."""
        return np.append(np.log(np.concatenate(probabilities)), 0.0)

    def posterior(self, share, m: list[np.ndarray], u: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """Per pattern, the probability of a match and the log-likelihood, under the match share(s) and m, u."""
        log_m = self._summed(np.log(share), self.log_table(m))
        log_u = self._summed(np.log1p(-share), self.log_table(u))
        top = np.maximum(log_m, log_u)
        evidence = top + np.log(np.exp(log_m - top) + np.exp(log_u - top))
        return np.exp(log_m - evidence), evidence

    def _summed(self, first, table: np.ndarray) -> np.ndarray:
        """Per pattern, ``first`` plus the log-probability of each comparison's level, added in the order of the
        comparisons (a reduction over the first axis adds row after row)."""
        terms = np.empty((len(self.columns) + 1, self.rows))
        terms[0] = first
        np.take(table, self.by_comparison, out=terms[1:])
        return np.add.reduce(terms, axis=0)

    def frequencies(self, weights: np.ndarray) -> list[np.ndarray | None]:
        """Per comparison, the smoothed share of each level among the known levels of the patterns, each pattern
        counting ``weights`` (as ``_frequencies``); None for an untrained comparison."""
        counts = np.bincount(self.flat, weights=np.repeat(weights, len(self.columns)), minlength=self.width + 1)
        out: list[np.ndarray | None] = [None] * len(self.sizes)
        for j in self.columns:
            out[j] = _smoothed(counts[self.starts[j] : self.starts[j] + self.sizes[j]])
        return out


def _largest_change(new: list, old: list, columns) -> float:
    return max((float(np.abs(new[j] - old[j]).max()) for j in columns), default=0.0)


def _em(patterns, counts, session, m, u, settings: Settings, active, fixed: frozenset = frozenset()):
    """EM for m over level patterns (``counts`` pairs each), ``session`` the session of each pattern (one per
    training rule that found pairs, see :func:`_sessions`), u held fixed (and the m of the comparisons in
    ``fixed``).

    Each session has its own match share (an e-mail rule finds mostly matches, a postal-code rule mostly not); the
    comparisons on its rule's own columns are masked in its patterns, so what is left compares like random pairs
    among its non-matches and the u of random pairs holds for them. Each m is held to :func:`exact_first`.
    """
    trace = []
    sessions = int(session.max()) + 1
    pairs_per_session = np.bincount(session, weights=counts, minlength=sessions)
    shares = np.full(sessions, 0.1)
    columns = np.flatnonzero(active)
    trained = [j for j in columns if j not in fixed]
    flat = _Patterns(patterns, [len(x) for x in m], columns)
    converged = False
    for iteration in range(1, settings.max_iterations + 1):
        posterior, evidence = flat.posterior(shares[session], m, u)
        matched = posterior * counts
        new_shares = np.bincount(session, weights=matched, minlength=sessions) / pairs_per_session
        new_shares = np.clip(new_shares, 1e-9, 1 - 1e-9)
        new_m = flat.frequencies(matched)
        for j in trained:
            new_m[j] = exact_first(new_m[j])
        change = max(float(np.abs(new_shares - shares).max()), _largest_change(new_m, m, trained))
        for j in trained:
            m[j] = new_m[j]
        shares = new_shares
        share = float(matched.sum() / counts.sum())
        trace.append(Iteration(iteration, share, change, float((evidence * counts).sum())))
        if change < settings.tolerance:
            converged = True
            break
    return m, shares, converged, trace


def exact_first(m: np.ndarray) -> np.ndarray:
    """``m`` with exact agreement at least as likely as each other level but the last (``else``): the levels EM
    gave more than the exact one are pooled with it (all of them the mean of their shares), which is the
    maximum-likelihood m under that order for these level counts.

    One person's records write a field the same way at least as often as they show any one kind of difference.
    EM's estimate can say otherwise when a field's m is learnt only from pairs agreeing on two other fields and a
    copy's errors exclude one another (one altered field per copy, as test-data generators make them): the matches
    there all differ in this field, and on RLdata10000 the birth date's exact level came out at 0.002 against a
    one-digit typo's 0.6 (truly 0.61 and 0.34). The last level is left free: a field may differ entirely more
    often than it agrees (an e-mail address changed)."""
    m = np.array(m, dtype=np.float64)
    if len(m) <= 2:
        return m
    order = 1 + np.argsort(-m[1:-1], kind="stable")
    pooled, total = [0], float(m[0])
    for k in order:
        if m[k] <= total / len(pooled):
            break
        pooled.append(int(k))
        total += float(m[k])
    m[pooled] = total / len(pooled)
    return m


def monotone(m: np.ndarray, u: np.ndarray, levels: tuple[str, ...]) -> np.ndarray:
    """``m`` with the weight log2(m / u) never rising along a run of bands of one measure (:func:`bands`): where a
    less alike band came out weighing more than a more alike one, the two are pooled (adjacent violators, as
    isotonic regression pools them), each then weighing their joint m over their joint u; m keeps its sum.

    A band's weight is learnt from the pairs that reach it, and a rare band's from few: EM gave dates five years
    apart more weight than dates a year apart (+1.3 bits against -0.8) on records whose matches never differ by
    years, so that a pair was linked for being further apart."""
    m = np.array(m, dtype=np.float64)
    u = np.asarray(u, dtype=np.float64)
    for run in bands(levels):
        blocks: list[list[int]] = []
        for i in run:
            blocks.append([i])
            while len(blocks) > 1 and _ratio(m, u, blocks[-2]) < _ratio(m, u, blocks[-1]):
                blocks[-2:] = [blocks[-2] + blocks[-1]]
        for pooled in blocks:
            m[pooled] = u[pooled] * _ratio(m, u, pooled)
    return m


def _ratio(m: np.ndarray, u: np.ndarray, levels: list[int]) -> float:
    return float(m[levels].sum() / u[levels].sum())


def _masked(gamma: np.ndarray, settings: Settings, rule: BlockingRule) -> tuple[np.ndarray, np.ndarray]:
    """Distinct level patterns of ``gamma`` and their counts, the rule's own comparisons masked (null)."""
    own = set(rule.columns)
    masked = gamma.copy()
    for j, comparison in enumerate(settings.comparisons):
        if own & set(comparison.masked_by):
            masked[:, j] = NULL
    distinct, count = _distinct_rows(masked)
    return distinct, count.astype(np.float64)


def _distinct_rows(gamma: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The distinct rows of a level matrix and how often each occurs (rows packed into one integer when they fit:
    sorting integers is much faster than sorting rows)."""
    if gamma.shape[1] * 5 > 62 or gamma.size == 0 or gamma.max() >= 31:
        return np.unique(gamma, axis=0, return_counts=True)
    shift = np.arange(gamma.shape[1] - 1, -1, -1, dtype=np.int64) * 5
    packed = ((gamma.astype(np.int64) + 1) << shift).sum(axis=1)
    keys, count = np.unique(packed, return_counts=True)
    rows = ((keys[:, None] >> shift) & 31) - 1
    return rows.astype(np.int8), count


def _sessions(table: Table, settings: Settings, blocked: Blocked, gamma: np.ndarray):
    """Per training rule finding pairs: the distinct patterns of all its pairs, its own comparisons masked."""
    patterns, counts, sessions, rules = [], [], [], []
    for index, rule in enumerate(settings.training_rules):
        codes = rule.codes(table)
        found = (codes[blocked.left] == codes[blocked.right]) & (codes[blocked.left] >= 0)
        if not found.any():
            continue
        distinct, count = _masked(gamma[found], settings, rule)
        patterns.append(distinct)
        counts.append(count)
        sessions.append(np.full(len(distinct), len(rules), dtype=np.int64))
        rules.append(index)
    return np.concatenate(patterns), np.concatenate(counts), np.concatenate(sessions), rules


def _expected_matches(settings, blocked: Blocked, gamma, rules, shares, m, u, active) -> float:
    """Expected matches among the blocked pairs: each pair weighed in the session of the rule that found it first
    (its own comparisons masked, that rule's match share), where u of random pairs holds for its non-matches."""
    total, columns = 0.0, np.flatnonzero(active)
    for session, index in enumerate(rules):
        first = blocked.rule == index
        if first.any():
            distinct, count = _masked(gamma[first], settings, settings.training_rules[index])
            posterior, _ = _Patterns(distinct, [len(x) for x in m], columns).posterior(shares[session], m, u)
            total += float((posterior * count).sum())
    return total


def train(
    records: pd.DataFrame,
    settings: Settings,
    source: str | None = None,
    labels: pd.DataFrame | None = None,
    table: Table | None = None,
) -> Model:
    """Train a Fellegi-Sunter model on normalized records, unsupervised.

    Args:
        records: one row per record, normalized, with every column the settings read.
        settings: what to compare and how to block.
        source: column naming each record's table (needed for ``link_type: link_only``).
        labels: optional labelled pairs (``left``, ``right`` record positions, ``match`` bool) seeding m.
        table: ``records`` already prepared (``prepare``, with every column the settings read), when the caller
            has it; ``source`` is then the table's.

    Returns:
        The model; it warns (``ConvergenceWarning``, with the trace) when EM stops at its iteration limit.

    Raises:
        TrainingError: the fit is not sane (exact agreement halves the odds of a match or worse), naming the
            comparison; a comparison every training rule reads; no comparison carries evidence.

    Example:
        >>> import pandas as pd
        >>> from ci_pipeline.unify.probabilistic.defaults import default_settings
        >>> frame = pd.DataFrame({
        ...     "first_name": ["anna", "anna", "ben", "ben", "carl", "dora"],
        ...     "birth_date": ["1980-01-02", "1980-01-02", "1975-03-04", "1975-03-04", "1990-05-06", "1985-07-08"],
        ... })
        >>> settings, notes = default_settings(frame, {"first_name": "first_name", "birth_date": "birth_date"})
        >>> model = train(frame, settings)
        >>> [(p.name, p.active) for p in model.parameters]
        [('first_name', True), ('birth_date', True)]
    """
    settings.check_columns(records.columns)
    if table is None:
        table = prepare(records, settings.columns, source)
    link_only = settings.link_type == "link_only"
    if link_only and len(unique(table.source)) < 2:
        raise SettingsError("link_type link_only needs records of two or more tables (name their column in source)")
    comparisons = settings.comparisons
    notes = [_inactive_reason(table, c) for c in comparisons]
    active = np.asarray([n is None for n in notes])
    if not active.any():
        raise TrainingError("no comparison carries evidence: " + "; ".join(notes))
    for note in filter(None, notes):
        _warn(note, UserWarning, stacklevel=2)
    sample_left, sample_right = _random_pairs(table, settings)
    sample = gamma_matrix(table, comparisons, sample_left, sample_right)
    seed = _seed_m(table, settings, labels)
    u_all = [_frequencies(len(c.levels), sample[:, j]) for j, c in enumerate(comparisons)]
    strata = _fit_strata(table, settings, _strata_keys(table, settings), seed, u_all, notes)
    every_key = tuple(k for stratum in strata for k in stratum.keys)

    # The main fit is that of the pairs outside the strata: random pairs and blocked pairs of a stratum are left
    # out (each stratum has its own fit).
    outside = ~_agree(table, every_key, sample_left, sample_right)
    random_levels = sample
    sample_left, sample = sample_left[outside], sample[outside]
    u_random = [_frequencies(len(c.levels), sample[:, j]) for j, c in enumerate(comparisons)]

    where = "training_blocking" if settings.training_blocking else "blocking"
    blocked: Blocked = block(table, settings.training_rules, settings.max_pairs_per_rule, link_only, where=where)
    unseen = _unseen_levels(table, settings, random_levels, blocked)
    keep = ~_agree(table, every_key, blocked.left, blocked.right)
    blocked = Blocked(blocked.left[keep], blocked.right[keep], blocked.rule[keep], blocked.counts)
    seed, fixed = _held_from_first(strata, comparisons, seed)
    fit = _MainFit(table, settings, blocked, seed, u_random, fixed, strata, sample)
    m, u_random, prior, converged, trace, expected_matches, strata = fit.sane(active, notes)
    m = [_settled(m[j], u_random[j], c.levels, unseen[j]) for j, c in enumerate(comparisons)]
    strata = tuple(_settled_stratum(stratum, unseen) for stratum in strata)
    parameters = tuple(
        ComparisonParameters(
            c.name, c.levels, tuple(float(x) for x in m[j]), tuple(float(x) for x in u_random[j]), notes[j]
        )
        for j, c in enumerate(comparisons)
    )
    training = {
        "records": table.n,
        "random_pairs": len(sample_left),
        "blocked_pairs": len(blocked.left),
        # Found by the training rules but weighed by a stratum's fit: the main fit's pairs are the others.
        "blocked_pairs_in_strata": int((~keep).sum()),
        "em_pairs": min(len(blocked.left), settings.em_sample_pairs),
        "pairs_per_rule": [vars(c) for c in blocked.counts],
        "expected_matches": float(expected_matches),
        "strata_pairs": [s.pairs for s in strata],
    }
    _expected_everywhere(training, strata, table.n)
    return Model(settings, parameters, prior, converged, tuple(trace), training, strata)


def _unfit(expected: list[tuple[str, tuple[str, ...]]], fitted: list[tuple[ComparisonParameters, ...]]) -> str:
    """What differs between the comparisons' levels and those a stored model has parameters for, and what to do."""
    for fit in fitted:
        had = {p.name: p.levels for p in fit}
        for name, levels in expected:
            if name in had and had[name] != levels:
                return (
                    f"comparison {name!r} has the levels {', '.join(levels)} in this version, the model was trained "
                    f"on {', '.join(had[name])}: retrain the model"
                )
    return "other comparisons: retrain the model"


def _expected_everywhere(training: dict, strata: list, records: int) -> None:
    """Add to ``training`` the matches expected in all (the main fit's and each stratum's share of its pairs) and,
    when they are too few to learn from, a warning kept as ``few_duplicates`` (None otherwise) for a caller that
    refuses such a model."""
    everywhere = float(training["expected_matches"] + sum(s.share * s.pairs for s in strata))
    training["expected_matches_all"] = everywhere
    training["few_duplicates"] = None
    if everywhere < FEW_MATCHES_PER_RECORD * records:
        training["few_duplicates"] = (
            f"the model expects {everywhere:,.1f} pair(s) of one person's records among {records:,} records: too few "
            f"duplicates to learn from, so the few links it makes are its least certain. {FEW_DUPLICATES}"
        )
        _warn(training["few_duplicates"], UserWarning, stacklevel=3)


#: Comparison kinds tried without, one at a time, when a fit's match class is no person's: fields several people
#: share (a country, a region code, a town) can draw EM's match class to the pairs sharing them.
SUSPECT_KINDS = DESCRIBING_KINDS | {"identifier", "postal_code", "place"}
#: Share of a match class's pairs agreeing exactly on the birth date from which it is one person's records, whatever
#: their names: households, namesakes and people of one town mostly differ in it.
PERSON_AGREEMENT = 0.5
#: Comparison kinds of where a person lives or was born.
PLACE_KINDS = frozenset({"postal_code", "place"})


@dataclass(frozen=True)
class _MainFit:
    """The main fit over the training pairs outside the strata, judged; see :meth:`sane`."""

    table: Table
    settings: Settings
    blocked: Blocked
    seed: list
    u_random: list
    fixed: set
    strata: tuple
    sample: np.ndarray

    def once(self, active: np.ndarray, notes: list, strict: bool = False) -> tuple:
        """EM, then u without the matches among the random pairs, the prior, and the judgement (raising
        :class:`TrainingError`); ``active`` and ``notes`` take the comparisons switched off."""
        comparisons, link_only = self.settings.comparisons, self.settings.link_type == "link_only"
        m, _, converged, trace, expected_matches = _fit_main(
            self.table,
            self.settings,
            self.blocked,
            self.seed,
            self.u_random,
            active,
            notes,
            self.fixed,
            bool(self.strata),
        )
        strata = tuple(_with_main_m(stratum, m) for stratum in self.strata)
        outside_pairs = _total_pairs(self.table, link_only) - sum(s.pairs for s in strata)
        prior = float(np.clip(expected_matches / max(outside_pairs, 1), 1e-12, 0.5))
        u = [_without_matches(len(c.levels), self.sample[:, j], m[j], prior) for j, c in enumerate(comparisons)]
        _judge_fit(comparisons, m, u, active, notes, trace, converged, self.settings.tolerance, strict)
        return m, u, prior, converged, trace, expected_matches, strata

    def sane(self, active: np.ndarray, notes: list) -> tuple:
        """:meth:`once`; when its match class is no person's (:class:`NoPersonFit`), the same without one field
        several people share (tried in order), then without all of them (a country and a region can each hold the
        class alone), the first sane fit kept and those fields switched off with a warning; else the first refusal.
        (A field whose own agreement comes out against a match still stops training: there it means a column
        holding something else.)"""
        try:
            return self.once(active, notes)
        except NoPersonFit as refused:
            comparisons = self.settings.comparisons
            suspects = [j for j, c in enumerate(comparisons) if active[j] and c.kind in SUSPECT_KINDS]
            # All of them only where other comparisons remain to fit.
            together = [suspects] if 1 < len(suspects) < active.sum() else []
            for left_out in [[j] for j in suspects] + together:
                if (fitted := self._without(left_out, active, notes)) is not None:
                    return fitted
            raise refused

    def _without(self, left_out: list[int], active: np.ndarray, notes: list) -> tuple | None:
        """:meth:`once` without the comparisons ``left_out``, judged strictly: when sane, those are switched off in
        ``active`` and ``notes`` with a warning and the fit returned; else None."""
        tried, told = active.copy(), list(notes)
        tried[left_out] = False
        try:
            with training_notes() as said:  # the notes of a fit not kept are not told
                # Judged strictly: without the field, EM may find a class agreeing on a middle initial alone
                # (soldiers of one file, deduplicated where they should be linked across systems).
                fitted = self.once(tried, told, strict=True)
        except TrainingError:
            return None
        for note in said:
            _warn(note, UserWarning, stacklevel=5)
        active[:], notes[:] = tried, told
        comparisons = self.settings.comparisons
        for j in left_out:
            notes[j] = (
                f"column {comparisons[j].column!r} is not compared: with it, EM's match class was the pairs sharing "
                f"it rather than one person's records (the fit was not sane); without "
                f"{'it' if len(left_out) == 1 else ', '.join(comparisons[i].column for i in left_out)} the fit is"
            )
            _warn(notes[j], UserWarning, stacklevel=5)
        return fitted


def _fit_main(
    table: Table, settings: Settings, blocked: Blocked, seed, u_random, active, notes: list, fixed, stratified: bool
):
    """EM over the blocked pairs outside the strata (a sample of at most ``em_sample_pairs``): m (but the ``fixed``
    comparisons'), each training rule's match share, convergence, trace and the expected matches among all those
    pairs. Without such pairs the main fit keeps the first stratum's m and expects no match outside the strata (and
    warns). A comparison whose column no pair holds on both sides is switched off (in ``active`` and ``notes``)."""
    comparisons = settings.comparisons
    if len(blocked.left) == 0:
        if not stratified:
            raise TrainingError(
                f"the training blocking rules found no candidate pair to train on: add a rule. {FEW_DUPLICATES}"
            )
        # Every pair they find agrees on a stratum's key, so nothing tells how likely a match is among the other
        # pairs: the model expects none there and links next to none of them (its prior comes out at 1e-12). Right
        # where every match shares such a key; said, since a hand-written training rule can do it by mistake.
        keys = ", ".join(f"[{', '.join(k)}]" for stratum in settings.strata for k in stratum)
        _warn(
            f"every pair the training blocking rules find agrees on a key of the strata ({keys}), whose pairs are "
            "fitted apart, so the model expects no match among the other pairs and links only pairs that agree on "
            "such a key: if one person's records may differ on all of them, add a training rule on other fields (a "
            "birth date, a postal code with a first name) or remove training_blocking to train on the blocking rules",
            UserWarning,
            stacklevel=3,
        )
        return list(seed), np.zeros(0), True, [], 0.0
    blocked, sampled = _em_sample(blocked, settings)
    gamma = gamma_matrix(table, comparisons, blocked.left, blocked.right)
    patterns, counts, session, rules = _sessions(table, settings, blocked, gamma)
    # A comparison whose m the first stratum gives needs no training pair here.
    untrained = [j for j in range(len(comparisons)) if active[j] and j not in fixed and not (patterns[:, j] >= 0).any()]
    sparse = [j for j in untrained if not (gamma[:, j] >= 0).any()]
    for j in sparse:
        # A column few records fill (a middle name, a second phone): no pair to learn from is no error of the
        # settings, and the other comparisons can still be trained.
        column = comparisons[j].column
        renamed = f" (a custom column other tables hold under another name: map theirs as custom:{column})"
        notes[j] = (
            f"column {column!r} is known on both sides of none of the {len(blocked.left):,} pairs training weighs: "
            f"it carries no evidence until a training finds pairs that hold it{renamed}"
        )
        active[j] = False
        _warn(notes[j], UserWarning, stacklevel=3)
    if misread := [comparisons[j] for j in untrained if j not in sparse]:
        masked = {column for c in misread for column in c.masked_by}
        others = list(dict.fromkeys(col for c in comparisons for col in c.columns if col not in masked))
        example = f", such as [{', '.join(others)}] (the pairs alike in all else)" if others else ""
        raise TrainingError(
            f"comparison(s) {', '.join(repr(c.name) for c in misread)}: every training blocking rule reads the "
            f"compared column, so its m cannot be trained; add a rule that does not read it to "
            f"unify.match.probabilistic.training_blocking beside the blocking rules{example}. {FEW_DUPLICATES}"
        )
    if not active.any():
        raise TrainingError("no comparison carries evidence: " + "; ".join(filter(None, notes)))
    m, shares, converged, trace = _em(patterns, counts, session, seed, u_random, settings, active, fixed)
    expected = _expected_matches(settings, blocked, gamma, rules, shares, m, u_random, active) / sampled
    return m, shares, converged, trace, expected


def _unseen_levels(table: Table, settings: Settings, random_levels: np.ndarray, blocked: Blocked) -> list:
    """Per comparison, whether each level is reached by no random pair and no training pair (of EM's sample).

    Such a level's m and u are both their smoothing's alone, and they differ by the ratio of the two samples'
    sizes (a million random pairs against a few thousand expected matches): a level no data showed would weigh
    many bits (a year of birth alone on data with whole dates only: +9.8). It weighs nothing instead (m = u), so
    that a stored model meeting such values later does not take them for evidence."""
    comparisons = settings.comparisons
    unseen = []
    for j, comparison in enumerate(comparisons):
        seen = np.zeros(len(comparison.levels), dtype=bool)
        seen[random_levels[:, j][random_levels[:, j] >= 0]] = True
        unseen.append(~seen)
    # Only the comparisons with a level no random pair reaches are compared on the training pairs (a date's rare
    # levels, mostly): the others have no level left to find.
    rare = [j for j in range(len(comparisons)) if unseen[j].any()]
    if rare:
        sampled, _ = _em_sample(blocked, settings)
        training = gamma_matrix(table, tuple(comparisons[j] for j in rare), sampled.left, sampled.right)
        for k, j in enumerate(rare):
            unseen[j][training[:, k][training[:, k] >= 0]] = False
    return unseen


def _settled(m, u, levels: tuple[str, ...], unseen: np.ndarray) -> np.ndarray:
    """``m`` as the model keeps it: a level no pair reached weighs nothing (m = u, see :func:`_unseen_levels`), and
    no band weighs more than a more alike one (:func:`monotone`)."""
    return monotone(np.where(unseen, u, m), u, levels)


def _settled_stratum(stratum: Stratum, unseen: list) -> Stratum:
    """``stratum`` with each m :func:`_settled` against its own u."""
    parameters = tuple(
        dataclasses.replace(p, m=tuple(float(x) for x in _settled(p.m, p.u, p.levels, unseen[j])))
        for j, p in enumerate(stratum.parameters)
    )
    return dataclasses.replace(stratum, parameters=parameters)


def _em_sample(blocked: Blocked, settings: Settings) -> tuple[Blocked, float]:
    """At most ``settings.em_sample_pairs`` of the blocked pairs, a seeded uniform sample when they are more, and
    the share of them kept. EM's match shares and m are shares among pairs, which a uniform sample estimates
    without bias; counting every pair of a large data set only costs time (millions of pairs at a million
    people, where a sample of two million still holds thousands of matches)."""
    n = len(blocked.left)
    if n <= settings.em_sample_pairs:
        return blocked, 1.0
    rng = np.random.default_rng((settings.seed, 1))  # apart from the random pairs' stream
    kept = np.sort(rng.choice(n, settings.em_sample_pairs, replace=False))
    return Blocked(blocked.left[kept], blocked.right[kept], blocked.rule[kept], blocked.counts), len(kept) / n


def _strata_keys(table: Table, settings: Settings) -> list[tuple[tuple[str, ...], ...]]:
    """Per stratum, the keys whose pairs can be enumerated: a key whose values would pair more records than
    ``max_pairs_per_rule`` is left out with a warning (its pairs are then weighed by a later fit)."""
    usable = []
    link_only = settings.link_type == "link_only"
    for keys in settings.strata:
        kept = []
        for key in keys:
            rule = BlockingRule(tuple(Key.parse(c, "strata") for c in key))
            codes = rule.codes(table)
            if len(unique(codes[codes >= 0])) < 2:
                continue  # null or constant everywhere: nothing to fit apart (its comparison, if any, says so)
            count, _ = pair_count(codes, table.source, link_only)
            if count > settings.max_pairs_per_rule:
                _warn(
                    f"strata: key [{rule}] left out: records agreeing on it form {count:,} pairs, more than "
                    f"max_pairs_per_rule {settings.max_pairs_per_rule:,}",
                    UserWarning,
                    stacklevel=3,
                )
            else:
                kept.append(key)
        usable.append(tuple(kept))
    return usable


def _outside(table: Table, keys, left: np.ndarray, right: np.ndarray):
    """The pairs that agree on none of ``keys``."""
    keep = ~_agree(table, keys, left, right)
    return left[keep], right[keep]


def _fit_strata(table: Table, settings: Settings, strata_keys, m_start, u_random, notes: list) -> tuple:
    """The fits of the strata, in order; a stratum that cannot be fitted is left out (with a warning), its pairs
    left to the later fits."""
    fitted, earlier = [], ()
    for keys in strata_keys:
        stratum = _fit_stratum(table, settings, keys, earlier, m_start, u_random, notes) if keys else None
        if stratum is not None:
            fitted.append(stratum)
            earlier += keys
    return tuple(fitted)


def _fit_stratum(table: Table, settings: Settings, keys, earlier, m_start, u_random, notes: list):
    """Fit the stratum of pairs agreeing on one of ``keys`` and on none of the ``earlier`` strata's keys (see
    ``Stratum``); None when there are too few such pairs or no fit is sane (a warning says so, and the next fit
    weighs them)."""
    link_only = settings.link_type == "link_only"
    rules = tuple(BlockingRule(tuple(Key.parse(c, "strata") for c in key)) for key in keys)
    pairs = block(table, rules, settings.max_pairs_per_rule, link_only, where=f"strata {list(map(list, keys))}: key")
    left, right = _outside(table, earlier, pairs.left, pairs.right)
    said = "pairs agreeing on " + " or ".join(f"[{r}]" for r in rules)
    if len(left) < MIN_STRATUM_PAIRS:
        _warn(
            f"{said}: {len(left)} pair(s), too few to fit apart (at least {MIN_STRATUM_PAIRS}); they are weighed "
            f"with all other pairs, as without strata ({NOTHING_TO_DO})",
            UserWarning,
            stacklevel=4,
        )
        return None
    active = np.asarray([n is None for n in notes])
    held = set(stratum_columns(keys + earlier))
    bound = [bool(held & set(c.columns)) for c in settings.comparisons]
    own = set(stratum_columns(keys))
    free = [c.name for j, c in enumerate(settings.comparisons) if active[j] and not own & set(c.columns)]
    weak = len(free) < MIN_FREE_COMPARISONS
    patterns, counts = _distinct_rows(gamma_matrix(table, settings.comparisons, left, right))
    weights = counts.astype(np.float64)
    # Two starts for u, the better sane fit kept: the u of random pairs, right where most of the stratum's pairs
    # match (one name in two files), and the levels of all its pairs as if none matched, right where its
    # non-matches agree on much (housemates share a surname and a street: from random pairs' u every pair would
    # look like a match and EM would stay there).
    starts = (
        u_random,
        [_frequencies(len(c.levels), patterns[:, j], weights) for j, c in enumerate(settings.comparisons)],
    )
    fits = [_em_both(patterns, weights, m_start, u, active, settings, accelerate=not weak) for u in starts]
    # A comparison known on both sides of none of its pairs (a field one table holds, under link_only) says
    # nothing of the fit: its m stays where it started, as its u does.
    known = active & (patterns >= 0).any(axis=0)
    judged = [(_stratum_insanity(settings.comparisons, fit, known, bound, u_random), fit) for fit in fits]
    sane = [fit for insane, fit in judged if insane is None]
    if not sane:
        _warn(
            f"{said}: their fit apart is not sane: it could not tell one person's records from different people's "
            f"({judged[-1][0]}); they are weighed with all other pairs, as without strata ({NOTHING_TO_DO})",
            UserWarning,
            stacklevel=4,
        )
        return None
    share, m, u, trace = max(sane, key=lambda fit: fit[3][-1].log_likelihood)
    converged = trace[-1].change < settings.tolerance
    if not converged:
        why = (
            f" (only {len(free)} comparison(s) read none of its key columns: {', '.join(free) or 'none'}; fewer "
            f"than {MIN_FREE_COMPARISONS} cannot pin its two classes down, so EM stops after {WEAK_STRATUM_STEPS} "
            "steps near its starting values)"
            if weak
            else ""
        )
        _warn(
            f"{said}: EM did not converge after {len(trace)} iteration(s){why} (last change {trace[-1].change:.2g}, "
            f"tolerance {settings.tolerance:g}; match share per iteration: "
            + ", ".join(f"{t.match_share:.4g}" for t in trace[-5:])
            + "); the last parameters are kept (they are sane"
            + (f"; {NOTHING_TO_DO})" if weak else ")"),
            ConvergenceWarning,
            stacklevel=4,
        )
    parameters = tuple(
        ComparisonParameters(c.name, c.levels, tuple(float(x) for x in m[j]), tuple(float(x) for x in u[j]), notes[j])
        for j, c in enumerate(settings.comparisons)
    )
    support = tuple(float(x) for x in _support(patterns, weights, share, m, u, active))
    return Stratum(tuple(keys), share, parameters, len(left), converged, support)


def _held_from_first(strata: tuple, comparisons, seed: list) -> tuple[list, frozenset]:
    """The main fit's starting m and the comparisons whose m it keeps from the first stratum.

    A stratum's two classes are well apart (housemates differ in first name and birth date), so its m is the
    cleaner estimate of how a person's records differ; the main fit keeps it for every comparison on no column of
    the first stratum (outside it, the levels of those mean something else), where the stratum learnt it from most
    of its matches: a field that one of the tables lacks (a birth date the payroll file does not hold) is known on
    few of them, which may all be housemates."""
    if not strata:
        return seed, frozenset()
    first = strata[0]
    few = first.learnt_from_few()
    fixed = frozenset(j for j, c in enumerate(comparisons) if not first.columns & set(c.columns) and j not in few)
    return [np.asarray(p.m) for p in first.parameters], fixed


def _with_main_m(stratum: Stratum, m: list) -> Stratum:
    """``stratum`` with the main fit's ``m`` for each comparison that fewer than :data:`MIN_SUPPORT` of its matches
    know on both sides. Its own m of such a comparison comes from a few pairs, which where one of the tables lacks
    the field are housemates (census records of one address, each a different person): a birth date differing by a
    few years came out as likely for one person as for two, and housemates were joined."""
    weak = stratum.learnt_from_few()
    if not weak:
        return stratum
    parameters = tuple(
        dataclasses.replace(p, m=tuple(float(x) for x in m[j])) if j in weak else p
        for j, p in enumerate(stratum.parameters)
    )
    return dataclasses.replace(stratum, parameters=parameters)


def _support(patterns, weights, share: float, m, u, active) -> np.ndarray:
    """Per comparison, the stratum's expected matches on which it is known on both sides: how many of one
    person's pairs its m was learnt from."""
    columns = np.flatnonzero(active)
    posterior, _ = _Patterns(patterns, [len(x) for x in m], columns).posterior(share, m, u)
    matched = posterior * weights
    return np.asarray([float(matched[patterns[:, j] >= 0].sum()) for j in range(patterns.shape[1])])


def _stratum_insanity(comparisons, fit, active: np.ndarray, bound: list[bool], u_random) -> str | None:
    """What makes a stratum's fit insane, or None. Within a stratum its own fields (and an earlier stratum's) may
    agree more often among non-matches (housemates share a street that a person who moved no longer holds); the
    others must still agree more often among matches, none of them halving the odds.

    Nor may its non-matches share a birth date (a ``date`` comparison on no stratum column) as one person's
    records do. People who share a contact, an address or a name are one person or others (housemates,
    colleagues, namesakes), and others are born on other days. Where a stratum holds only one person's records
    (one e-mail address per person), EM still splits it in two, taking the records with more errors for the other
    class; their birth dates give them away: weighed with the stratum's m against the u of random pairs, they
    count for a match.

    Nor may its matches differ entirely in a name (a ``name`` comparison on no stratum column) more often than they
    agree on it exactly: one person's records nearly always give one first name. A stratum of a group's members and
    strangers (a street string housemates share with people of other towns) can otherwise split by surname, the
    housemates taken for one person.

    Nor may one class vanish (a match share of next to nothing, or of nearly every pair): EM then explains the
    stratum with one class, which says nothing about which of its pairs match."""
    share, m, u, _ = fit
    if not MIN_SHARE <= share <= 1 - MIN_SHARE:
        return f"one of its two classes vanished (match share {share:.2g})"
    exact = {j: float(np.log2(m[j][0] / u[j][0])) for j in np.flatnonzero(active) if not bound[j]}
    # A describing field (an employer) may differ between one person's records more often than between others', and
    # so may a place: namesakes share one (a father and son of one name at one address, people of one name born in
    # one town) that one person's records, kept across a move, do not.
    insane = [
        f"{comparisons[j].name!r} (m {m[j][0]:.3g}, u {u[j][0]:.3g})"
        for j, w in exact.items()
        if w < SANE_EXACT_WEIGHT and comparisons[j].kind not in DESCRIBING_KINDS | PLACE_KINDS
    ]
    if insane:
        return f"exact agreement on {', '.join(insane)} came out no more likely for matches than for non-matches"
    if sum(exact.values()) <= 0:
        return "exact agreement on the other fields came out no more likely for matches than for non-matches"
    alike = [
        f"{comparisons[j].name!r} (weight {weight:+.1f})"
        for j in exact
        if comparisons[j].kind == "date" and (weight := float((u[j] * np.log2(m[j] / u_random[j])).sum())) >= 0
    ]
    if alike:
        return f"its non-matches share a date as one person's records do: {', '.join(alike)}, on average"
    unlike = [
        f"{comparisons[j].name!r} (m exact {m[j][0]:.3g}, else {m[j][-1]:.3g})"
        for j in exact
        if comparisons[j].kind == "name" and m[j][0] <= m[j][-1]
    ]
    if unlike:
        return f"its matches differ in name more often than they agree, as different people do: {', '.join(unlike)}"
    return None


def _em_both(patterns, counts, m_start, u_start, active: np.ndarray, settings: Settings, accelerate: bool = True):
    """EM over level patterns fitting the match share and both m and u, from the starting m and u.

    Accelerated by SQUAREM (Varadhan and Roland, 2008): two EM steps give a direction, the parameters jump along it
    as far as the steps' shrinking suggests, and one EM step from there stabilises the jump; a jump that lowers the
    likelihood, or leaves the probabilities, is dropped for the two plain steps. EM within a stratum creeps where
    its classes overlap (hundreds of steps, each changing the match share by a few in 100,000); SQUAREM reaches the
    same fixed point in a few dozen cycles. An iteration of the trace is a cycle; it converged when one plain EM
    step from its parameters moves none by ``settings.tolerance`` or more. Without ``accelerate``, plain EM steps,
    at most :data:`WEAK_STRATUM_STEPS` of them (see :data:`MIN_FREE_COMPARISONS`)."""
    columns = np.flatnonzero(active)
    flat = _Patterns(patterns, [len(x) for x in m_start], columns)
    m = [np.array(x, dtype=np.float64) for x in m_start]
    u = [np.array(x, dtype=np.float64) for x in u_start]
    sizes = [len(m[j]) for j in columns]

    def packed(share: float, m: list, u: list) -> np.ndarray:
        return np.concatenate([[share], *(m[j] for j in columns), *(u[j] for j in columns)])

    def unpacked(theta: np.ndarray) -> tuple[float, list, list]:
        parts = np.split(theta[1:], np.cumsum(sizes + sizes)[:-1])
        new_m, new_u = list(m), list(u)
        for k, j in enumerate(columns):
            new_m[j], new_u[j] = parts[k], parts[len(columns) + k]
        return float(theta[0]), new_m, new_u

    def step(theta: np.ndarray) -> tuple[np.ndarray, float]:
        """One EM step from ``theta``, and the log-likelihood at ``theta``."""
        share, m_now, u_now = unpacked(theta)
        posterior, evidence = flat.posterior(share, m_now, u_now)
        matched = posterior * counts
        new_share = float(np.clip(matched.sum() / counts.sum(), 1e-9, 1 - 1e-9))
        return packed(new_share, flat.frequencies(matched), flat.frequencies(counts - matched)), float(
            (evidence * counts).sum()
        )

    theta, trace = packed(0.5, m, u), []
    limit = settings.max_iterations if accelerate else min(settings.max_iterations, WEAK_STRATUM_STEPS)
    for iteration in range(1, limit + 1):
        one, likelihood = step(theta)
        change = float(np.abs(one - theta).max())
        theta = _squarem(step, theta, one, likelihood) if accelerate and change >= settings.tolerance else one
        trace.append(Iteration(iteration, float(theta[0]), change, likelihood))
        if change < settings.tolerance:
            break
    share, m, u = unpacked(theta)
    return share, m, u, trace


def _squarem(step, theta: np.ndarray, one: np.ndarray, likelihood: float) -> np.ndarray:
    """One SQUAREM cycle from the packed parameters ``theta`` (``one``: an EM step from them, ``likelihood``: at
    them): the jump along the two plain steps' direction, stabilised by one more step; the second plain step where
    no jump (of :data:`JUMP_TRIES`) keeps the probabilities and the likelihood."""
    two, _ = step(one)
    r, v = one - theta, two - 2 * one + theta
    alpha = min(-float(np.sqrt((r @ r) / (v @ v))), -1.0) if v @ v > 0 else -1.0
    for _ in range(JUMP_TRIES if alpha < -1.0 else 0):
        jumped = theta - 2 * alpha * r + alpha**2 * v
        if _probabilities(jumped):
            landed, at_jump = step(jumped)
            if at_jump >= likelihood and _probabilities(landed):
                return landed
        alpha = (alpha - 1.0) / 2  # halfway back towards the plain steps
    return two


def _probabilities(theta: np.ndarray) -> bool:
    """Whether packed parameters (share, m..., u...) hold a share strictly between 0 and 1 and only positive level
    probabilities (a jump may overshoot)."""
    return bool(0 < theta[0] < 1 and (theta[1:] > 0).all())


def _judge_fit(
    comparisons, m, u_random, active: np.ndarray, notes: list, trace, converged: bool, tolerance: float, strict=False
):
    """Refuse an insane fit; switch off (in ``active`` and ``notes``) comparisons whose agreement carries no
    evidence; warn when EM stopped at its iteration limit with sane parameters. ``strict`` (a fit tried again
    without a field): refused also where half of the names or more differ more often than they agree."""
    exact_weight = [float(np.log2(m[j][0] / u_random[j][0])) for j in range(len(comparisons))]
    for j, c in enumerate(comparisons):
        if active[j] and exact_weight[j] < SANE_EXACT_WEIGHT and c.kind in DESCRIBING_KINDS:
            # A field that describes rather than identifies (an employer, a town, a tier) may differ between one
            # person's records more often than between others': two payroll forms of one person name two employers.
            notes[j] = (
                f"exact agreement on column {c.column!r} came out rarer among one person's records (m {m[j][0]:.3g}) "
                f"than among different people's (u {u_random[j][0]:.3g}): one person's records give different values "
                "of it (two employers, two towns), so it is not compared"
            )
            active[j] = False
            _warn(notes[j], UserWarning, stacklevel=3)
    insane = [
        f"{c.name!r} (m {m[j][0]:.3g}, u {u_random[j][0]:.3g})"
        for j, c in enumerate(comparisons)
        if active[j] and exact_weight[j] < SANE_EXACT_WEIGHT
    ]
    summary = "EM had no blocked pair outside the strata to run on (the first stratum's m is kept)"
    if trace:
        summary = (
            f"EM {'converged' if converged else 'did not converge'} after {trace[-1].iteration} iteration(s) "
            f"(last change {trace[-1].change:.2g}, tolerance {tolerance:g}; match share per iteration: "
            + ", ".join(f"{t.match_share:.4g}" for t in trace[-5:])
            + ")"
        )
    if insane:
        raise TrainingError(
            f"{summary}; the fit is not sane: exact agreement on {', '.join(insane)} came out less likely for "
            "matches than for non-matches. Check that the column holds what its comparison expects, add blocking "
            f"rules that find more true matches, or remove the comparison. {FEW_DUPLICATES}"
        )
    names = [j for j, c in enumerate(comparisons) if active[j] and c.kind == "name"]
    differ = [j for j in names if m[j][0] <= m[j][-1]]
    born = [j for j, c in enumerate(comparisons) if active[j] and c.kind == "date" and m[j][0] >= PERSON_AGREEMENT]
    if names and not born and (len(differ) == len(names) or (strict and 2 * len(differ) >= len(names))):
        # One person's records nearly always agree on a name. Where EM's match class agrees on none more often than
        # it differs in it entirely, it has found some other group (people of one sex and town in a file without
        # duplicates), and its links would join strangers. Unless most of its pairs agree on the birth date, which
        # no such group does: then they are one person's records under other names (a sanctions list's aliases).
        said = ", ".join(f"{comparisons[j].name!r} (m exact {m[j][0]:.3g}, else {m[j][-1]:.3g})" for j in names)
        raise NoPersonFit(
            f"{summary}; the fit is not sane: its matches differ entirely in every name more often than they agree on "
            f"it, as different people do: {said}. {FEW_DUPLICATES}"
        )
    for j, c in enumerate(comparisons):
        if active[j] and exact_weight[j] <= 0:
            # A near-constant field (one country for nearly everyone): agreement is as common among non-matches.
            notes[j] = (
                f"exact agreement on column {c.column!r} is about as likely for non-matches (u {u_random[j][0]:.3g}) "
                f"as for matches (m {m[j][0]:.3g}): it carries no evidence"
            )
            active[j] = False
            _warn(notes[j], UserWarning, stacklevel=3)
    if not converged:
        _warn(f"{summary}; the last parameters are kept (they are sane)", ConvergenceWarning, stacklevel=3)
