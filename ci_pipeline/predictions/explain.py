"""Per-customer reasons: how much each feature moves this customer's prediction.

The method is occlusion against a typical customer: a feature's contribution is the prediction minus the
prediction with that one feature set to its training median (the most frequent level for a category), all other
features kept. It is exact for the model as fitted (no surrogate), costs one prediction per feature, and reads
plainly ("no purchase for 143 days: +0.21" = this customer's churn probability is 0.21 higher than with a typical
recency). Contributions do not add up to the score when features interact; they are reasons, not a decomposition.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd
from sklearn.base import is_classifier
from sklearn.utils._openmp_helpers import _openmp_effective_n_threads

from ci_pipeline.predictions.features import describe, formatted
from ci_pipeline.side_by_side import each

#: Reasons given per customer.
TOP_REASONS = 3
#: Customers from which :func:`contributions` works on two features at a time, on threads: re-evaluating the
#: trees and NumPy's gathers run outside Python's lock. Each feature fills its own column: the same result.
PARALLEL_ROWS = 200_000
#: Features worked on at once (each holds a copy of its changed rows' features).
FEATURES_AT_ONCE = 2


def typical_values(X: pd.DataFrame) -> dict:
    """Median of each numeric feature, most frequent level of each category (missing when all are missing)."""
    out = {}
    for column in X.columns:
        values = X[column]
        if isinstance(values.dtype, pd.CategoricalDtype):
            counts = values.value_counts(sort=True)
            out[column] = counts.index[0] if len(counts) else np.nan
        else:
            out[column] = float(values.median()) if values.notna().any() else np.nan
    return out


class BoostedTrees:
    """The trees of a fitted scikit-learn histogram gradient boosting model (a regressor or a two-class
    classifier) evaluated on every row of ``X``, to predict again with one feature set to its typical value.

    A tree's output can change only for the rows whose path through it meets a split on that feature which the
    typical value takes the other way. Each row's leaf in each tree is kept, and which leaves' paths the typical
    value of each feature turns away from; a prediction with one feature made typical evaluates only the trees
    that split on it, on only those rows. A row's tree outputs are then added one after the other from the
    baseline, in the order scikit-learn adds them, so each prediction is the number ``predict``
    (``predict_proba``) gives, to the last bit: the reasons depend on it, as ties between contributions are common.

    Args:
        estimator: a fitted ``HistGradientBoostingRegressor`` or two-class ``HistGradientBoostingClassifier``.
        X: the features the estimator reads, one row per customer.
        typical: the typical value of each feature (:func:`typical_values`).
    """

    def __init__(self, estimator, X: pd.DataFrame, typical: dict):
        if estimator.n_trees_per_iteration_ != 1:
            raise ValueError("BoostedTrees reads a regressor or a two-class classifier (one tree per iteration)")
        self.estimator = estimator
        # OpenMP threads per tree evaluation, as limited where the trees are built: a limit set on one thread does
        # not reach the threads that work on several features at once (:func:`contributions`).
        self.threads = _openmp_effective_n_threads()
        # The estimator's own conversion of the frame (categories to codes) and its bitsets of known categories.
        self.data = estimator._preprocess_X(X, reset=False)
        self.bitsets, self.category_map = estimator._bin_mapper.make_known_categories_bitsets()
        self.trees = [iteration[0] for iteration in estimator._predictors]
        # The converted frame holds the categorical columns first, then the others (scikit-learn's preprocessor).
        categorical = estimator.is_categorical_
        order = np.arange(X.shape[1])
        if categorical is not None:
            order = np.r_[np.flatnonzero(categorical), np.flatnonzero(~categorical)]
        self.position = {column: at for at, column in enumerate(X.columns[order])}
        usual = np.full(X.shape[1], np.nan)
        numeric = np.ones(X.shape[1], dtype=bool)
        for column, at in self.position.items():
            numeric[at] = not isinstance(X[column].dtype, pd.CategoricalDtype)
            usual[at] = typical[column] if numeric[at] and not pd.isna(typical[column]) else np.nan
        # rows x (baseline, each tree's output), then per tree each row's leaf (numbered across the trees), each
        # leaf's output, and per feature which leaves' paths its typical value turns off.
        self.terms = np.empty((len(X), 1 + len(self.trees)), dtype=np.float64)
        self.terms[:, 0] = estimator._baseline_prediction.ravel()[0]
        self.leaf = np.empty((len(self.trees), len(X)), dtype=np.int32)
        outputs, turns, start = [], [], 0
        for k, tree in enumerate(self.trees):
            self.terms[:, 1 + k] = self._evaluate(k, self.data)
            leaf, known, turned = _turns(tree.nodes, self.terms[:, 1 + k], usual, numeric)
            self.leaf[k] = start + leaf
            outputs.append(known)
            turns.append(turned)
            start += len(known)
        self.output_of = np.concatenate(outputs)
        self.turned = np.concatenate(turns).T.copy()
        self.splits_on = [[k for k, t in enumerate(turns) if t[:, at].any()] for at in range(X.shape[1])]
        self.raw = _added(self.terms)

    def _evaluate(self, k: int, data: np.ndarray) -> np.ndarray:
        return self.trees[k].predict(data, self.bitsets, self.category_map, self.threads)

    def output(self, rows: np.ndarray | None = None, changed: pd.DataFrame | None = None, column=None) -> np.ndarray:
        """The estimator's prediction (for a classifier the probability of its second class) of every row, or of
        the ``rows`` of ``X`` given as ``changed``: those rows with ``column`` set to its typical value."""
        if changed is None:
            return self._link(self.raw)
        at = self.position[column]
        data = self.data[rows]
        data[:, at] = self.estimator._preprocess_X(changed.iloc[:1], reset=False)[0, at]
        changes = []
        for k in self.splits_on[at]:
            leaves = self.leaf[k, rows]
            turned = np.flatnonzero(self.turned[at][leaves])
            if len(turned):
                new = self._evaluate(k, data[turned])
                differs = new != self.output_of[leaves[turned]]
                changes.append((k, turned[differs], new[differs]))
        # Rows whose every tree gives the output it gave before keep their sum; the others are added up again.
        raw = self.raw[rows]
        # Marked, not sorted: np.unique sorts every changed row of every tree (a third of the reasons at a million
        # customers); the marks give the same rows in the same order.
        marked = np.zeros(len(rows), dtype=bool)
        for _, where, _ in changes:
            marked[where] = True
        again = np.flatnonzero(marked)
        if len(again):
            raw[again] = self._added_again(rows[again], [(k, np.searchsorted(again, w), n) for k, w, n in changes])
        return self._link(raw)

    def _added_again(self, rows: np.ndarray, changes: list) -> np.ndarray:
        """The sums of ``rows`` with each change (tree k, positions among ``rows`` in order, its new outputs) in
        place of the terms it changes, :data:`ADDED_ROWS` rows at a time: each block of terms is gathered, changed
        and added up while it is in the processor's cache, instead of a copy of every row's terms at once (at a
        million customers that copy and its additions were half the time of the reasons)."""
        bounds = np.append(np.arange(0, len(rows), ADDED_ROWS), len(rows))
        cuts = [np.searchsorted(positions, bounds) for _, positions, _ in changes]
        total = np.empty(len(rows), dtype=np.float64)
        for c, start in enumerate(bounds[:-1]):
            block = self.terms[rows[start : bounds[c + 1]]]
            for (k, positions, new), cut in zip(changes, cuts, strict=True):
                block[positions[cut[c] : cut[c + 1]] - start, 1 + k] = new[cut[c] : cut[c + 1]]
            total[start : bounds[c + 1]] = np.add.accumulate(block, axis=1)[:, -1]
        return total

    def _link(self, raw: np.ndarray) -> np.ndarray:
        if is_classifier(self.estimator):
            return self.estimator._loss.predict_proba(raw[:, None])[:, 1]
        return self.estimator._loss.link.inverse(raw)


#: Customers whose mean absolute contributions make a model's global importance, at most. At 100,000 people (47,206
#: purchasers) the sample's importances were within 3% of everyone's for churn and 7% for CLV (currency, heavy
#: tailed), in the same order; explaining everyone only for the report took a sixth to a quarter of training them.
IMPORTANCE_ROWS = 20_000

#: Rows added up at a time by :func:`_added` (their running sums stay in the processor's cache).
ADDED_ROWS = 4096


def _added(terms: np.ndarray) -> np.ndarray:
    """Each row's terms added one after the other, left to right (scikit-learn's sum over its trees).

    A running sum along each row (``np.add.accumulate`` adds strictly in order, so the last one is the same number
    to the bit) over a few thousand rows at a time: adding the matrix column by column reads a row's terms a whole
    row apart in memory, once per tree."""
    total = np.empty(len(terms), dtype=np.float64)
    for start in range(0, len(terms), ADDED_ROWS):
        total[start : start + ADDED_ROWS] = np.add.accumulate(terms[start : start + ADDED_ROWS], axis=1)[:, -1]
    return total


def _turns(nodes: np.ndarray, values: np.ndarray, usual: np.ndarray, numeric: np.ndarray):
    """(each row's leaf, leaves x features: whether the feature's ``usual`` value turns off the leaf's path at a
    split on it) of one tree, the rows known by their output ``values``.

    A categorical split counts as turning. When two leaves share a value, a row's leaf is unknown: every leaf
    counts as turned at every split of the tree.
    """
    turns = np.zeros((len(nodes), len(usual)), dtype=bool)
    splits = np.zeros(len(usual), dtype=bool)
    todo = [0]
    while todo:
        node = todo.pop()
        if nodes["is_leaf"][node]:
            continue
        at = nodes["feature_idx"][node]
        splits[at] = True
        value = usual[at]
        if not numeric[at]:
            goes_left = None
        elif np.isnan(value):
            goes_left = bool(nodes["missing_go_to_left"][node])
        else:
            goes_left = bool(value <= nodes["num_threshold"][node])
        for child, left in ((nodes["left"][node], True), (nodes["right"][node], False)):
            turns[child] = turns[node]
            turns[child, at] |= goes_left is None or goes_left != left
            todo.append(child)
    leaves = np.flatnonzero(nodes["is_leaf"])
    order = np.argsort(nodes["value"][leaves], kind="stable")
    known = nodes["value"][leaves][order]
    if len(np.unique(known)) < len(known):
        return np.zeros(len(values), dtype=np.int32), np.full(1, np.nan), splits[None, :].copy()
    return np.searchsorted(known, values).astype(np.int32), known, turns[leaves[order]]


def contributions(predict: Callable, X: pd.DataFrame, typical: dict, trees: BoostedTrees | None = None) -> np.ndarray:
    """customers x features: prediction minus the prediction with that feature set to its typical value.

    Only customers whose value differs from the typical one are predicted again (for the others the difference is
    0 by definition); counts such as purchases in the last 30 days are at their median for most customers.

    Args:
        predict: the model's prediction of a frame of features, ``predict(frame)``; with ``trees``,
            ``predict(frame, boosted)``, given its boosted trees' output for the frame's rows.
        X: the features, one row per customer.
        typical: the typical value of each feature (:func:`typical_values`).
        trees: the model's boosted trees on ``X`` and ``typical`` (:class:`BoostedTrees`): each changed feature
            then re-evaluates only the trees, and rows, it can change.
    """
    base = predict(X) if trees is None else predict(X, trees.output())
    out = np.zeros((len(X), X.shape[1]))

    def one(j: int) -> None:
        column = X.columns[j]
        values = X[column]
        usual = typical[column]
        same = values.isna().to_numpy() if pd.isna(usual) else (values == usual).fillna(False).to_numpy(dtype=bool)
        rows = np.flatnonzero(~same)
        if not len(rows):
            return
        changed = X.take(rows)  # a new frame (pandas copies on write): a second copy of the rows is not needed
        if isinstance(values.dtype, pd.CategoricalDtype):
            changed[column] = pd.Categorical([usual] * len(rows), categories=values.cat.categories)
        else:
            changed[column] = usual
        if trees is None:
            out[rows, j] = base[rows] - predict(changed)
        else:
            out[rows, j] = base[rows] - predict(changed, trees.output(rows, changed, column))

    each(one, range(X.shape[1]), FEATURES_AT_ONCE if len(X) >= PARALLEL_ROWS else 1, "reasons")
    return out


def top_reasons(X: pd.DataFrame, contrib: np.ndarray, fmt: str = "%+.2f") -> pd.DataFrame:
    """Reason1..3 per customer: "<feature phrase>: <signed contribution>", largest absolute contribution first.

    Each feature is described only for the customers whose top reasons it is among (three phrases per customer,
    not one per feature): turning numbers into text is the slow part of explaining every score.
    """
    top = min(TOP_REASONS, X.shape[1])
    order = np.argsort(-np.abs(contrib), axis=1, kind="stable")[:, :top]
    rows = np.arange(len(X))
    phrase = np.empty(order.shape, dtype=object)
    for j, column in enumerate(X.columns):
        owner, rank = np.nonzero(order == j)
        if len(owner):
            phrase[owner, rank] = describe(column, X[column].iloc[owner])
    value = formatted(fmt, contrib[rows[:, None], order].ravel()).reshape(order.shape) if len(X) else phrase
    out = pd.DataFrame(index=X.index)
    for r in range(top):
        out[f"Reason{r + 1}"] = pd.Series(phrase[:, r] + ": " + value[:, r], index=X.index, dtype="string")
    return out


def importance(contrib: np.ndarray, features: list[str]) -> dict[str, float]:
    """Global importance: mean absolute contribution per feature, largest first."""
    mean = np.abs(contrib).mean(axis=0) if len(contrib) else np.zeros(len(features))
    pairs = sorted(zip(features, mean, strict=True), key=lambda p: -p[1])
    return {name: round(float(value), 4) for name, value in pairs}


def importance_rows(count: int, seed: int) -> np.ndarray:
    """Positions (in order) of the customers of ``count`` whose contributions make a model's global importance:
    every one up to :data:`IMPORTANCE_ROWS`, else a sample drawn with the model's seed. The same rows whether the
    model scored everyone (its reasons) or only them (training alone)."""
    if count <= IMPORTANCE_ROWS:
        return np.arange(count)
    return np.sort(np.random.default_rng([seed, count]).choice(count, IMPORTANCE_ROWS, replace=False))


def importance_of(contrib: np.ndarray, features: list[str], seed: int) -> dict[str, float]:
    """:func:`importance` over the :func:`importance_rows` of everyone's contributions (a model that scored
    everyone)."""
    return importance(contrib[importance_rows(len(contrib), seed)], features)


def sampled_importance(estimator, predict: Callable, X: pd.DataFrame, typical: dict, seed: int) -> dict[str, float]:
    """:func:`importance` over the :func:`importance_rows` of ``X`` only: a model trained by its own step scores no
    one else (the scoring step scores everyone with the stored model). ``estimator`` is the model's boosted trees'
    estimator (see :class:`BoostedTrees`); a customer's contributions do not depend on the other rows, so these are
    the values :func:`importance` gives over the same rows of everyone's contributions."""
    X = X.iloc[importance_rows(len(X), seed)]
    return importance(contributions(predict, X, typical, BoostedTrees(estimator, X, typical)), list(X.columns))
