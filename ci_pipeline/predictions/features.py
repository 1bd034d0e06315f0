"""Per-customer features at a cutoff and labels from the window after it.

Features read only purchases at or before the cutoff: :func:`purchase_features` filters first, so nothing that
happens later can reach them (ci_pipeline_tests/predictions/test_features.py alters every later purchase to prove it).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from ci_pipeline.errors import UserError

_NS_PER_DAY = 86_400 * 10**9
_EPOCH = pd.Timestamp("1970-01-01", tz="UTC")
#: Text profile fields with more distinct values than this are refused (an id or free text is not a feature).
MAX_CATEGORIES = 50

#: How each purchase feature reads in a reason ("no purchase for 143 days: +0.21"), as a %-format of its value.
DESCRIPTIONS = {
    "days_since_last_purchase": "no purchase for %.0f days",
    "days_since_first_purchase": "first purchase %.0f days ago",
    "purchase_days": "bought on %.0f different days",
    "total_amount": "spent %.2f in total",
    "mean_amount": "average purchase %.2f",
    "purchases_last_30_days": "%.0f purchases in the last 30 days",
    "purchases_last_90_days": "%.0f purchases in the last 90 days",
    "purchases_last_365_days": "%.0f purchases in the last 365 days",
    "amount_last_90_days": "spent %.2f in the last 90 days",
    "amount_last_365_days": "spent %.2f in the last 365 days",
    "mean_days_between_purchases": "%.0f days between purchases on average",
    "last_gap_days": "%.0f days between the last two purchases",
    "overdue_ratio": "%.1f times the usual gap since the last purchase",
    "returns": "%.0f returns",
    "bgnbd_p_no_purchase": "BG/NBD chance of no purchase %.2f",
    "bgnbd_p_alive": "BG/NBD chance still active %.2f",
    "bgnbd_expected_purchases": "BG/NBD expects %.1f purchases",
    "gamma_gamma_expected_value": "Gamma-Gamma expects %.2f per purchase",
}
#: How a missing value reads (purchase features are missing for customers with too few purchases).
MISSING_DESCRIPTIONS = {
    "days_since_last_purchase": "no purchase yet",
    "days_since_first_purchase": "no purchase yet",
    "mean_amount": "no purchase yet",
    "mean_days_between_purchases": "bought on one day only",
    "last_gap_days": "bought on one day only",
    "overdue_ratio": "bought on one day only",
}
PURCHASE_FEATURES = [f for f in DESCRIPTIONS if not f.startswith(("bgnbd_", "gamma_gamma_"))]


def days(times: pd.Series) -> np.ndarray:
    """Timestamps as float days since the Unix epoch."""
    return ((pd.to_datetime(times, utc=True) - _EPOCH) / pd.Timedelta(days=1)).to_numpy(dtype=np.float64)


def _day_of(cutoff: pd.Timestamp) -> float:
    return cutoff.value / _NS_PER_DAY


def purchase_features(purchases: pd.DataFrame, customers: pd.Index, cutoff: pd.Timestamp) -> pd.DataFrame:
    """One row per customer of ``customers``: purchase features at ``cutoff`` (:data:`PURCHASE_FEATURES`).

    Customers without a purchase at or before the cutoff get missing purchase features (counts and sums are 0).

    Args:
        purchases: the purchases frame (``data.PURCHASE_COLUMNS``).
        customers: the customers to describe, in output order.
        cutoff: features use purchases at or before this time only.
    """
    past = purchases[purchases["Time"] <= cutoff]
    now = _day_of(cutoff)
    t = days(past["Time"])
    frame = pd.DataFrame(
        {
            "CustomerId": past["CustomerId"].to_numpy(),
            "t": t,
            "day": np.floor(t),
            "amount": past["Amount"].to_numpy(dtype=np.float64),
        }
    )
    age = now - frame["t"]
    for span in (30, 90, 365):
        frame[f"n{span}"] = (age <= span).astype(np.int64)
    for span in (90, 365):
        frame[f"a{span}"] = np.where(age <= span, frame["amount"], 0.0)
    frame["ret"] = (frame["amount"] < 0).astype(np.int64)
    g = frame.groupby("CustomerId", observed=True, sort=False)
    agg = g.agg(
        last=("t", "max"),
        first=("t", "min"),
        purchase_days=("day", "nunique"),
        total_amount=("amount", "sum"),
        mean_amount=("amount", "mean"),
        purchases_last_30_days=("n30", "sum"),
        purchases_last_90_days=("n90", "sum"),
        purchases_last_365_days=("n365", "sum"),
        amount_last_90_days=("a90", "sum"),
        amount_last_365_days=("a365", "sum"),
        returns=("ret", "sum"),
    )
    out = pd.DataFrame(index=customers)
    agg = agg.reindex(customers)
    out["days_since_last_purchase"] = now - agg["last"]
    out["days_since_first_purchase"] = now - agg["first"]
    out["purchase_days"] = agg["purchase_days"].fillna(0.0)
    out["total_amount"] = agg["total_amount"].fillna(0.0)
    out["mean_amount"] = agg["mean_amount"]
    for column in [c for c in PURCHASE_FEATURES if c.startswith(("purchases_last", "amount_last")) or c == "returns"]:
        out[column] = agg[column].fillna(0.0).astype(np.float64)
    gaps = out["purchase_days"] - 1
    out["mean_days_between_purchases"] = ((agg["last"] - agg["first"]) / gaps).where(gaps > 0)
    out["overdue_ratio"] = out["days_since_last_purchase"] / out["mean_days_between_purchases"].clip(lower=1.0)
    out["last_gap_days"] = _last_gap(frame).reindex(customers)
    return out[PURCHASE_FEATURES].astype(np.float64)


def _last_gap(frame: pd.DataFrame) -> pd.Series:
    """Days between each customer's last two purchase days (missing with a single purchase day)."""
    days_ = frame[["CustomerId", "day"]].drop_duplicates().sort_values(["CustomerId", "day"], kind="stable")
    gap = days_["day"] - days_.groupby("CustomerId", observed=True, sort=False)["day"].shift(1)
    return gap.groupby(days_["CustomerId"].to_numpy(), sort=False).last()


def signal_features(signals: pd.DataFrame, customers: pd.Index, cutoff: pd.Timestamp, activities) -> pd.DataFrame:
    """Per activity of ``activities``: days since the customer's last one and how many in the last 90 days.

    Args:
        signals: CustomerId, Time, Activity of the other activities (``data.signals_from_facts``).
        customers: the customers to describe, in output order.
        cutoff: only activities at or before it are read.
        activities: the activity names, in feature order.
    """
    past = signals[signals["Time"] <= cutoff]
    frame = pd.DataFrame(
        {
            "CustomerId": past["CustomerId"].to_numpy(),
            "Activity": past["Activity"].to_numpy(),
            "age": _day_of(cutoff) - days(past["Time"]),
        }
    )
    frame["recent"] = (frame["age"] <= 90).astype(np.int64)
    g = frame.groupby(["Activity", "CustomerId"], observed=True, sort=False).agg(
        age=("age", "min"), recent=("recent", "sum")
    )
    out = pd.DataFrame(index=customers)
    for activity in activities:
        rows = g.xs(activity, level="Activity") if activity in g.index.get_level_values(0) else g.iloc[:0].droplevel(0)
        rows = rows.reindex(customers)
        out[f"{activity}.days_since_last"] = rows["age"].astype(np.float64)
        out[f"{activity}.last_90_days"] = rows["recent"].fillna(0).astype(np.float64)
    return out


@dataclass(frozen=True)
class Context:
    """What features may read besides purchases: chosen profile fields and other activities (signals)."""

    profile: pd.DataFrame | None = None
    profile_fields: tuple[str, ...] = ()
    signals: pd.DataFrame | None = None
    signal_activities: tuple[str, ...] = ()

    def features(self, purchases: pd.DataFrame, customers: pd.Index, cutoff: pd.Timestamp) -> pd.DataFrame:
        """Purchase features, then signal features, then profile features of ``customers`` at ``cutoff``."""
        out = purchase_features(purchases, customers, cutoff)
        if self.signal_activities:
            if self.signals is None:
                raise UserError("predictions.signal_activities is set but no activities were given for them")
            out = out.join(signal_features(self.signals, customers, cutoff, self.signal_activities))
        if self.profile_fields:
            out = out.join(profile_features(self.profile, customers, list(self.profile_fields)))
        return out

    def available(self) -> list[str]:
        """Every feature name the given frames can provide (checked against a stored model's features)."""
        names = list(PURCHASE_FEATURES)
        if self.signals is not None:
            for activity in sorted(self.signals["Activity"].dropna().unique()):
                names += [f"{activity}.days_since_last", f"{activity}.last_90_days"]
        if self.profile is not None:
            names += [f"profile.{c}" for c in self.profile.columns]
        return names

    def without_frames(self) -> Context:
        """The same choice of fields, without the data (what a model keeps)."""
        return replace(self, profile=None, signals=None)


def profile_features(profile: pd.DataFrame | None, customers: pd.Index, fields: list[str]) -> pd.DataFrame:
    """The chosen CustomerProfile columns per customer: numbers as floats, booleans as 0/1, text as categories."""
    if profile is None:
        raise UserError("predictions.profile_fields is set but no CustomerProfile table was given")
    missing = [f for f in fields if f not in profile.columns]
    if missing:
        raise UserError(
            f"predictions.profile_fields: CustomerProfile has no column {', '.join(missing)}; "
            "remove it or name a profile column"
        )
    rows = profile.drop_duplicates("CustomerId").set_index(
        profile.drop_duplicates("CustomerId")["CustomerId"].astype("string")
    )
    rows = rows.reindex(customers)
    out = pd.DataFrame(index=customers)
    for field in fields:
        values = rows[field]
        if pd.api.types.is_bool_dtype(values.dtype) or pd.api.types.is_numeric_dtype(values.dtype):
            out[f"profile.{field}"] = pd.to_numeric(values.astype("Float64"), errors="coerce").astype(np.float64)
            continue
        text = values.astype("string")
        levels = sorted(text.dropna().unique())
        if len(levels) > MAX_CATEGORIES:
            raise UserError(
                f"predictions.profile_fields: CustomerProfile.{field} has {len(levels)} distinct values "
                f"(at most {MAX_CATEGORIES} can be a feature); remove it or use a coarser column"
            )
        out[f"profile.{field}"] = pd.Categorical(text, categories=levels)
    return out


def purchasers_at(purchases: pd.DataFrame, cutoff: pd.Timestamp) -> pd.Index:
    """Customers with at least one purchase at or before the cutoff, sorted."""
    ids = purchases.loc[purchases["Time"] <= cutoff, "CustomerId"].unique()
    return pd.Index(np.sort(np.asarray(ids, dtype=object)), dtype="string", name="CustomerId")


def future_purchases(purchases: pd.DataFrame, customers: pd.Index, cutoff: pd.Timestamp, days_ahead: float):
    """(purchase count, amount) per customer in (cutoff, cutoff + days_ahead]."""
    end = cutoff + pd.Timedelta(days=days_ahead)
    window = purchases[(purchases["Time"] > cutoff) & (purchases["Time"] <= end)]
    g = window.groupby("CustomerId", observed=True)
    count = g.size().reindex(customers, fill_value=0).astype(np.int64)
    amount = g["Amount"].sum().reindex(customers, fill_value=0.0).astype(np.float64)
    return count, amount


def describe(feature: str, values: pd.Series) -> np.ndarray:
    """A feature's values as short phrases (vectorised)."""
    activity, _, kind = feature.rpartition(".")
    signal = bool(activity) and not activity.startswith("profile")
    template = DESCRIPTIONS.get(feature)
    missing_text = MISSING_DESCRIPTIONS.get(feature, f"{feature} unknown")
    if signal and kind == "days_since_last":
        template, missing_text = f"no {activity} for %.0f days", f"no {activity} yet"
    elif signal and kind == "last_90_days":
        template = f"%.0f {activity} in the last 90 days"
    if template:
        text = np.char.mod(template, np.nan_to_num(values.to_numpy(dtype=np.float64))).astype(object)
    else:
        text = (feature + " is " + values.astype("string").fillna("")).to_numpy(dtype=object)
    text[values.isna().to_numpy()] = missing_text
    return text
