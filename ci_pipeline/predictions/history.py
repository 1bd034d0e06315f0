"""One run's purchases with what a model reads at each cutoff, each computed once.

A training run reads the same cutoffs several times: the backtest trains at L - 2 windows on customers taken at
up to six cutoffs one window apart, the final fit at L - 1 window on the same cutoffs shifted by one, the
evaluation reads L - 1 window again and scoring reads L. Features at a cutoff read only purchases at or before it
and labels only the window after it, so a cutoff's features, BTYD summary and labels are the same whichever step
asks for them; :class:`History` keeps them. Churn training at 100,000 people computed features 14 times for 8
distinct cutoffs.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ci_pipeline.arrays import unique
from ci_pipeline.predictions.btyd import rfm_summary
from ci_pipeline.predictions.features import Context, Encoded, future_purchases, purchasers_at


class History:
    """The purchases and the feature context of one run; per cutoff: the purchasers, their features, their BTYD
    summary and what they bought in the window after it. Frames it returns are shared: do not change them.

    Args:
        purchases: the purchases frame (``data.PURCHASE_COLUMNS``).
        context: the profile fields, signal activities and measures the features read.
    """

    def __init__(self, purchases: pd.DataFrame, context: Context):
        self.purchases = purchases
        self.encoded = Encoded.of(purchases)
        self.context = context
        self._population: dict[pd.Timestamp, pd.Index] = {}
        self._features: dict[pd.Timestamp, pd.DataFrame] = {}
        self._summary: dict[pd.Timestamp, pd.DataFrame] = {}
        self._future: dict[tuple[pd.Timestamp, float], tuple[pd.Series, pd.Series]] = {}

    @property
    def first(self) -> pd.Timestamp:
        """The time of the first purchase row."""
        return pd.Timestamp(int(self.encoded.ns.min()), tz="UTC")

    def population(self, cutoff: pd.Timestamp) -> pd.Index:
        """Customers with a purchase at or before ``cutoff``, sorted (``features.purchasers_at``)."""
        if cutoff not in self._population:
            self._population[cutoff] = purchasers_at(self.encoded, cutoff)
        return self._population[cutoff]

    def features(self, cutoff: pd.Timestamp) -> pd.DataFrame:
        """The features of :meth:`population` at ``cutoff`` (``Context.features``)."""
        if cutoff not in self._features:
            self._features[cutoff] = self.context.features(self.encoded, self.population(cutoff), cutoff)
        return self._features[cutoff]

    def summary(self, cutoff: pd.Timestamp) -> pd.DataFrame:
        """The BTYD summary of :meth:`population` at ``cutoff`` (``btyd.rfm_summary``)."""
        if cutoff not in self._summary:
            self._summary[cutoff] = rfm_summary(self.encoded, self.population(cutoff), cutoff)
        return self._summary[cutoff]

    def future(self, cutoff: pd.Timestamp, days: float) -> tuple[pd.Series, pd.Series]:
        """(purchase count, amount net of returns) of :meth:`population` in the ``days`` after ``cutoff``."""
        key = (cutoff, float(days))
        if key not in self._future:
            self._future[key] = future_purchases(self.encoded, self.population(cutoff), cutoff, days)
        return self._future[key]

    def customers_active(self, start: pd.Timestamp, end: pd.Timestamp) -> np.ndarray:
        """Codes of the customers with a purchase row in (start, end]."""
        p = self.encoded
        return unique(p.code[(p.ns > start.value) & (p.ns <= end.value) & (p.code >= 0)])
