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

from ci_pipeline.predictions.features import describe

#: Reasons given per customer.
TOP_REASONS = 3


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


def contributions(predict: Callable[[pd.DataFrame], np.ndarray], X: pd.DataFrame, typical: dict) -> np.ndarray:
    """customers x features: prediction minus the prediction with that feature set to its typical value.

    Only customers whose value differs from the typical one are predicted again (for the others the difference is
    0 by definition); counts such as purchases in the last 30 days are at their median for most customers.
    """
    base = predict(X)
    out = np.zeros((len(X), X.shape[1]))
    for j, column in enumerate(X.columns):
        values = X[column]
        usual = typical[column]
        same = values.isna().to_numpy() if pd.isna(usual) else (values == usual).fillna(False).to_numpy(dtype=bool)
        rows = np.flatnonzero(~same)
        if not len(rows):
            continue
        changed = X.iloc[rows].copy()
        if isinstance(values.dtype, pd.CategoricalDtype):
            changed[column] = pd.Categorical([usual] * len(rows), categories=values.cat.categories)
        else:
            changed[column] = usual
        out[rows, j] = base[rows] - predict(changed)
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
    value = np.char.mod(fmt, contrib[rows[:, None], order]).astype(object) if len(X) else phrase
    out = pd.DataFrame(index=X.index)
    for r in range(top):
        out[f"Reason{r + 1}"] = pd.Series(phrase[:, r] + ": " + value[:, r], index=X.index, dtype="string")
    return out


def importance(contrib: np.ndarray, features: list[str]) -> dict[str, float]:
    """Global importance: mean absolute contribution per feature, largest first."""
    mean = np.abs(contrib).mean(axis=0) if len(contrib) else np.zeros(len(features))
    pairs = sorted(zip(features, mean, strict=True), key=lambda p: -p[1])
    return {name: round(float(value), 4) for name, value in pairs}
