"""Per-customer features at a cutoff and labels from the window after it.

Features read only purchases at or before the cutoff: :func:`purchase_features` filters first, so nothing that
happens later can reach them (ci_pipeline_tests/predictions/test_features.py alters every later purchase to prove it).
Signal activities and customer measures are read the same way: measures are recomputed at each cutoff.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from ci_pipeline.arrays import unique
from ci_pipeline.arrow_text import text_positions
from ci_pipeline.config.measures import MeasuresConfig
from ci_pipeline.errors import UserError
from ci_pipeline.measures.compute import compute_measures
from ci_pipeline.measures.facts import FactIndex

_NS_PER_DAY = 86_400 * 10**9
#: The recent period whose purchase rate is compared with the customer's earlier rate.
RECENT_DAYS = 180
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
    "purchases_last_180_days": "%.0f purchases in the last 180 days",
    "recent_rate_ratio": "bought %.1f times as often in the last 180 days as before",
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
    "recent_rate_ratio": "first purchase in the last 180 days",
}
PURCHASE_FEATURES = [f for f in DESCRIPTIONS if not f.startswith(("bgnbd_", "gamma_gamma_"))]
#: The features of each signal activity, as ``<activity>.<kind>``.
SIGNAL_FEATURES = ("days_since_last", "last_90_days", "last_365_days")


def days(times: pd.Series) -> np.ndarray:
    """Timestamps as float days since the Unix epoch."""
    return ((pd.to_datetime(times, utc=True) - _EPOCH) / pd.Timedelta(days=1)).to_numpy(dtype=np.float64)


def _day_of(cutoff: pd.Timestamp) -> float:
    return cutoff.value / _NS_PER_DAY


@dataclass(frozen=True)
class Encoded:
    """The purchases as arrays, each customer an integer code (its position in the sorted ids), rows in the given
    order.

    Grouping by an integer is many times cheaper than by text, and the times are converted once: a run computes
    features at up to eight cutoffs. Every function here takes the purchases frame or this (:func:`encoded`).
    """

    #: The distinct CustomerIds, sorted; a row's code is its id's position.
    ids: pd.Index
    code: np.ndarray
    #: Nanoseconds since the epoch (compared with a cutoff exactly).
    ns: np.ndarray
    #: Days since the epoch.
    t: np.ndarray
    amount: np.ndarray

    def __len__(self) -> int:
        return len(self.code)

    @staticmethod
    def of(purchases: pd.DataFrame) -> Encoded:
        """Encode a purchases frame (``data.PURCHASE_COLUMNS``)."""
        codes, ids = pd.factorize(purchases["CustomerId"].astype("string"), sort=True)
        times = pd.to_datetime(purchases["Time"], utc=True).astype("datetime64[ns, UTC]")
        ns = times.array.asi8
        return Encoded(
            ids=pd.Index(ids, dtype="string", name="CustomerId"),
            code=codes.astype(np.int64),
            ns=ns,
            t=ns / _NS_PER_DAY,
            amount=purchases["Amount"].to_numpy(dtype=np.float64),
        )

    def at(self, cutoff: pd.Timestamp) -> np.ndarray:
        """Rows at or before ``cutoff``."""
        return self.ns <= cutoff.value

    def bought(self) -> np.ndarray:
        """True for purchase rows, False for returns (:func:`is_purchase`)."""
        return ~(self.amount < 0)

    def positions(self, customers: pd.Index) -> np.ndarray:
        """The code of each of ``customers``; ``len(ids)``, a code no row has, for a customer without purchase rows
        (rows without a CustomerId have code -1 and belong to no customer)."""
        codes = text_positions(pd.Index(customers, dtype="string"), self.ids)
        return np.where(codes < 0, len(self.ids), codes)


def encoded(purchases: pd.DataFrame | Encoded) -> Encoded:
    """``purchases`` as :class:`Encoded` (encoded now when it is a frame)."""
    return purchases if isinstance(purchases, Encoded) else Encoded.of(purchases)


def per_customer(values: pd.DataFrame | pd.Series, codes: np.ndarray, customers: pd.Index):
    """Rows of ``values`` (indexed by customer code) for ``customers`` (their ``codes``), indexed by customer."""
    out = values.reindex(codes)
    out.index = customers
    return out


def is_purchase(purchases: pd.DataFrame) -> np.ndarray:
    """True for purchase rows, False for returns (negative amounts): a return is not an occasion to buy.

    A row with a missing amount is a purchase of unknown value.
    """
    return ~(purchases["Amount"].to_numpy(dtype=np.float64) < 0)


def purchase_features(purchases: pd.DataFrame | Encoded, customers: pd.Index, cutoff: pd.Timestamp) -> pd.DataFrame:
    """One row per customer of ``customers``: purchase features at ``cutoff`` (:data:`PURCHASE_FEATURES`).

    Customers without a purchase at or before the cutoff get missing purchase features (counts and sums are 0).
    Returns (negative amounts) reduce the amounts; recency, frequency and the gaps read purchases only.
    Engagement that fades before a customer leaves shows as a recent rate below the customer's own earlier rate
    (``recent_rate_ratio``) and a last gap longer than the usual one.

    Args:
        purchases: the purchases frame (``data.PURCHASE_COLUMNS``) or its :class:`Encoded` form.
        customers: the customers to describe, in output order.
        cutoff: features use purchases at or before this time only.
    """
    p = encoded(purchases)
    past = p.at(cutoff)
    now = _day_of(cutoff)
    t = p.t[past]
    amount = p.amount[past]
    bought = ~(amount < 0)
    frame = pd.DataFrame({"code": p.code[past], "t": np.where(bought, t, np.nan), "amount": amount})
    frame["day"] = np.floor(frame["t"])
    frame["spend"] = frame["amount"].where(bought)
    age = now - frame["t"]
    for span in (30, 90, 180, 365):
        frame[f"n{span}"] = (age <= span).astype(np.int64)
    for span in (90, 365):
        frame[f"a{span}"] = np.where(now - t <= span, frame["amount"], 0.0)
    frame["ret"] = (~bought).astype(np.int64)
    g = frame.groupby("code", sort=False)
    agg = g.agg(
        last=("t", "max"),
        first=("t", "min"),
        purchase_days=("day", "nunique"),
        total_amount=("amount", "sum"),
        mean_amount=("spend", "mean"),
        purchases_last_30_days=("n30", "sum"),
        purchases_last_90_days=("n90", "sum"),
        purchases_last_180_days=("n180", "sum"),
        purchases_last_365_days=("n365", "sum"),
        amount_last_90_days=("a90", "sum"),
        amount_last_365_days=("a365", "sum"),
        returns=("ret", "sum"),
        purchases=("t", "count"),
    )
    codes = p.positions(customers)
    out = pd.DataFrame(index=customers)
    agg = per_customer(agg, codes, customers)
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
    out["last_gap_days"] = per_customer(_last_gap(frame["code"].to_numpy(), frame["day"].to_numpy()), codes, customers)
    # Purchases per day in the last 180 days over the rate before them (missing for customers newer than that).
    earlier_days = out["days_since_first_purchase"] - RECENT_DAYS
    earlier_rate = (agg["purchases"] - agg["purchases_last_180_days"]) / earlier_days.clip(lower=RECENT_DAYS)
    recent_rate = agg["purchases_last_180_days"] / RECENT_DAYS
    out["recent_rate_ratio"] = (recent_rate / earlier_rate.clip(lower=1 / 3650)).where(earlier_days > 0)
    return out[PURCHASE_FEATURES].astype(np.float64)


def _last_gap(code: np.ndarray, day: np.ndarray) -> pd.Series:
    """Days between each customer's last two purchase days, by customer code (missing with a single purchase day).

    ``day`` is missing on returns, which are not purchases.
    """
    keep = ~np.isnan(day)
    code, day = code[keep], day[keep]
    order = np.lexsort((day, code))
    code, day = code[order], day[order]
    last = np.flatnonzero(np.r_[code[1:] != code[:-1], True]) if len(code) else np.zeros(0, dtype=np.int64)
    # The previous distinct day of the same customer: skip back over repeats of the last day.
    first_of_last = np.flatnonzero(np.r_[True, (code[1:] != code[:-1]) | (day[1:] != day[:-1])])
    run_start = first_of_last[np.searchsorted(first_of_last, last, side="right") - 1]
    before = run_start - 1
    same = (before >= 0) & (code[np.maximum(before, 0)] == code[last])
    gap = np.where(same, day[last] - day[np.maximum(before, 0)], np.nan)
    return pd.Series(gap, index=code[last])


def signal_features(signals: pd.DataFrame, customers: pd.Index, cutoff: pd.Timestamp, activities) -> pd.DataFrame:
    """Per activity of ``activities``: days since the customer's last one, how many in the last 90 and 365 days.

    The two counts together show visits thinning out (few in the last 90 days of many in the year).

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
    frame["year"] = (frame["age"] <= 365).astype(np.int64)
    g = frame.groupby(["Activity", "CustomerId"], observed=True, sort=False).agg(
        age=("age", "min"), recent=("recent", "sum"), year=("year", "sum")
    )
    out = pd.DataFrame(index=customers)
    for activity in activities:
        rows = g.xs(activity, level="Activity") if activity in g.index.get_level_values(0) else g.iloc[:0].droplevel(0)
        rows = rows.reindex(customers)
        out[f"{activity}.days_since_last"] = rows["age"].astype(np.float64)
        out[f"{activity}.last_90_days"] = rows["recent"].fillna(0).astype(np.float64)
        out[f"{activity}.last_365_days"] = rows["year"].fillna(0).astype(np.float64)
    return out


@dataclass(frozen=True)
class Measures:
    """What customer measures are recomputed from at a cutoff: the measures section and the activity facts."""

    config: MeasuresConfig
    facts: pd.DataFrame


def measure_features(measures: Measures | None, customers: pd.Index, cutoff: pd.Timestamp, names) -> pd.DataFrame:
    """The chosen customer measures (``measures.attributes``) of ``customers``, recomputed at ``cutoff``.

    The published CustomerMeasure holds values at the run date, which would tell a backtest what happened after
    its cutoff. So each measure is computed again from the activities before the cutoff, its windows ending there,
    by the measures stage's own code. Scores rank the given customers.
    """
    if measures is None:
        raise UserError("predictions.measure_fields is set but no measures section and activities were given")
    known = measures.config.attributes
    unknown = [n for n in names if n not in known]
    if unknown:
        raise UserError(
            f"predictions.measure_fields: no customer measure {', '.join(unknown)} in measures.attributes "
            f"(it has {', '.join(sorted(known)) or 'none'}); remove it or name a measure"
        )
    wanted, todo = set(), list(names)
    while todo:
        name = todo.pop()
        if name in known and name not in wanted:
            wanted.add(name)
            todo += sorted(known[name].references())
    config = MeasuresConfig(attributes={n: known[n] for n in sorted(wanted)})
    index = FactIndex(measures.facts, customers, cutoff)
    values = compute_measures(config, pd.Series(customers), measures.facts, cutoff.date(), index).attributes
    values = values.set_index(values["CustomerId"].astype("string")).reindex(customers)
    out = pd.DataFrame(index=customers)
    for name in names:
        out[f"measure.{name}"] = pd.to_numeric(values[name], errors="coerce").astype(np.float64)
    return out


@dataclass(frozen=True)
class Context:
    """What features may read besides purchases: profile fields, other activities (signals), customer measures."""

    profile: pd.DataFrame | None = None
    profile_fields: tuple[str, ...] = ()
    signals: pd.DataFrame | None = None
    signal_activities: tuple[str, ...] = ()
    measures: Measures | None = None
    measure_fields: tuple[str, ...] = ()

    def features(self, purchases: pd.DataFrame, customers: pd.Index, cutoff: pd.Timestamp) -> pd.DataFrame:
        """Purchase features, then signal features, then profile features of ``customers`` at ``cutoff``."""
        out = purchase_features(purchases, customers, cutoff)
        if self.signal_activities:
            if self.signals is None:
                raise UserError("predictions.signal_activities is set but no activities were given for them")
            out = out.join(signal_features(self.signals, customers, cutoff, self.signal_activities))
        if self.profile_fields:
            out = out.join(profile_features(self.profile, customers, list(self.profile_fields)))
        if self.measure_fields:
            out = out.join(measure_features(self.measures, customers, cutoff, list(self.measure_fields)))
        return out

    def available(self) -> list[str]:
        """Every feature name the given frames can provide (checked against a stored model's features)."""
        names = list(PURCHASE_FEATURES)
        if self.signals is not None:
            for activity in sorted(self.signals["Activity"].dropna().unique()):
                names += [f"{activity}.{kind}" for kind in SIGNAL_FEATURES]
        if self.profile is not None:
            names += [f"profile.{c}" for c in self.profile.columns]
        if self.measures is not None:
            names += [f"measure.{name}" for name in self.measures.config.attributes]
        return names

    def without_frames(self) -> Context:
        """The same choice of fields, without the data (what a model keeps)."""
        return replace(self, profile=None, signals=None, measures=None)


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


def purchasers_at(purchases: pd.DataFrame | Encoded, cutoff: pd.Timestamp) -> pd.Index:
    """Customers with at least one purchase (not only returns) at or before the cutoff, sorted."""
    p = encoded(purchases)
    codes = unique(p.code[p.at(cutoff) & p.bought() & (p.code >= 0)])
    return pd.Index(p.ids[codes], dtype="string", name="CustomerId")


def future_purchases(purchases: pd.DataFrame | Encoded, customers: pd.Index, cutoff: pd.Timestamp, days_ahead: float):
    """(purchase count, amount net of returns) per customer in (cutoff, cutoff + days_ahead].

    A return in the window is not a purchase: a customer who only returns something has not bought again.
    """
    p = encoded(purchases)
    end = cutoff + pd.Timedelta(days=days_ahead)
    window = (p.ns > cutoff.value) & (p.ns <= end.value)
    frame = pd.DataFrame({"code": p.code[window], "amount": p.amount[window]})
    codes = p.positions(customers)
    bought = frame[~(frame["amount"] < 0)].groupby("code", sort=False).size()
    count = per_customer(bought, codes, customers).fillna(0).astype(np.int64)
    amount = per_customer(frame.groupby("code", sort=False)["amount"].sum(), codes, customers)
    return count, amount.fillna(0.0).astype(np.float64).rename("Amount")


def describe(feature: str, values: pd.Series) -> np.ndarray:
    """A feature's values as short phrases (vectorised)."""
    activity, _, kind = feature.rpartition(".")
    signal = bool(activity) and not activity.startswith("profile")
    template = DESCRIPTIONS.get(feature)
    missing_text = MISSING_DESCRIPTIONS.get(feature, f"{feature} unknown")
    if signal and kind == "days_since_last":
        template, missing_text = f"no {activity} for %.0f days", f"no {activity} yet"
    elif signal and kind in ("last_90_days", "last_365_days"):
        template = f"%.0f {activity} in the last {kind.split('_')[1]} days"
    if template:
        text = formatted(template, np.nan_to_num(values.to_numpy(dtype=np.float64)))
    else:
        text = (feature + " is " + values.astype("string").fillna("")).to_numpy(dtype=object)
    text[values.isna().to_numpy()] = missing_text
    return text


def formatted(template: str, values: np.ndarray) -> np.ndarray:
    """``template % value`` of each float value, as an object array; each distinct value is formatted once (counts
    and rounded amounts repeat across customers, and formatting is the slow part)."""
    values = np.ascontiguousarray(values, dtype=np.float64)
    # Distinct by bit pattern: 0.0 and -0.0 are equal as numbers but formatted differently.
    codes, bits = pd.factorize(values.view(np.int64))
    return np.char.mod(template, bits.view(np.float64)).astype(object)[codes]
