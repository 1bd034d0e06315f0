"""Scores for customers without a purchase: what customers without a purchase did in the training window.

A profile with no purchase history has no features the models can read, but it is still a customer a segment may
want to reach. It gets the population prior: among the customers who had no purchase at the training cutoff, the
share who bought nothing in the window after it (churn) and the spread of what they spent (lifetime value). The
customer list is today's and a customer table need not say when a customer joined, so the customers without a
purchase at the training cutoff include those who joined after it. Where customers usually buy when they sign up,
those newcomers make the prior more hopeful than it is for a customer who has been registered for long without
buying; the report's ``no_purchase_prior`` shows the prior learnt one window back next to what then happened.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from ci_pipeline.predictions.features import Encoded, future_purchases, purchasers_at

#: How the rows scored with the prior are marked (``Basis``), next to "model" for the others.
PRIOR = "population prior"
MODEL_BASIS = "model"


@dataclass(frozen=True)
class Prior:
    """The outcome of customers without a purchase at a cutoff, over the window after it."""

    customers: int
    bought: int
    mean_value: float
    low_value: float
    high_value: float
    days: float

    @property
    def p_no_purchase(self) -> float:
        """Share who bought nothing in the window, with add-one smoothing (0.5 when there was no one to learn from)."""
        return (self.customers - self.bought + 1) / (self.customers + 2)

    def as_dict(self) -> dict:
        """The prior for the report."""
        return {
            "customers_without_purchase": self.customers,
            "bought_in_window": self.bought,
            "p_no_purchase": round(self.p_no_purchase, 4),
            "mean_value": round(self.mean_value, 2),
        }


def fit_prior(purchases: pd.DataFrame | Encoded, customers: pd.Series, cutoff: pd.Timestamp, days: float) -> Prior:
    """What the customers of ``customers`` without a purchase at ``cutoff`` did in the ``days`` after it."""
    without = without_purchase(purchases, customers, cutoff)
    count, amount = future_purchases(purchases, without, cutoff, days)
    value = amount.clip(lower=0.0).to_numpy()
    low, high = np.quantile(value, [0.1, 0.9]) if len(value) else (0.0, 0.0)
    return Prior(
        customers=len(without),
        bought=int((count > 0).sum()),
        mean_value=float(value.mean()) if len(value) else 0.0,
        low_value=float(low),
        high_value=float(high),
        days=float(days),
    )


def without_purchase(purchases: pd.DataFrame | Encoded, customers: pd.Series | None, cutoff: pd.Timestamp) -> pd.Index:
    """The customers of ``customers`` with no purchase at or before ``cutoff``, sorted."""
    if customers is None:
        return pd.Index([], dtype="string", name="CustomerId")
    # In Arrow: pandas' unique, difference and sort of a million Arrow-backed ids go through Python objects. Arrow
    # sorts text by its UTF-8 bytes, which is the order of code points that Python's sort gives.
    every = pa.array(pd.Series(customers, dtype="string").array).drop_null().unique()
    bought = pa.array(purchasers_at(purchases, cutoff).array).cast(every.type)
    out = every.filter(pc.invert(pc.is_in(every, value_set=bought)))
    out = out.take(pc.sort_indices(out))
    return pd.Index(pd.array(out, dtype="string"), name="CustomerId")


def reason(prior: Prior, what: str) -> str:
    """Reason1 of a prior-scored customer, e.g. ``no purchase yet: population prior (812 of 1,000 ... )``."""
    return (
        f"no purchase yet: population prior ({what} of {prior.customers:,} customers without a purchase, "
        f"{prior.days:.0f} days)"
    )
