"""Purchases and product lines taken from the activity facts, and the data usability report checked before training."""

from __future__ import annotations

import traceback
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow.compute as pc
import pyarrow.dataset as ds

from ci_pipeline.errors import UserError
from ci_pipeline.measures.conditions import condition_mask
from ci_pipeline.predictions.settings import PurchaseSource

#: Gradient boosting settings of the churn and lifetime value models (early stopping on a held-out 15% picks the
#: number of trees).
BOOSTING = {
    "learning_rate": 0.1,
    "max_iter": 200,
    "max_leaf_nodes": 15,
    "min_samples_leaf": 40,
    "l2_regularization": 1.0,
    "early_stopping": True,
    "validation_fraction": 0.15,
    "n_iter_no_change": 20,
    "categorical_features": "from_dtype",
}
#: Rows the churn and lifetime value models are fitted on at most; beyond, a seeded sample of them (scoring still
#: covers every customer). Trees of 15 leaves learn what they can from far fewer rows, while fitting time grows with
#: every row: at 1,000,000 people churn's training rows (every purchaser at six cutoffs) took two minutes to fit.
MAX_TRAINING_ROWS = 500_000
#: Columns of the purchases frame every model reads.
PURCHASE_COLUMNS = ["CustomerId", "Time", "Amount"]
#: Columns of the product lines frame the recommender reads (Quantity: signed, returns negative).
LINE_COLUMNS = ["CustomerId", "Time", "Product", "Quantity"]
#: The semantic field of order lines holding the quantity (``activities``' SalesOrderLine fields).
QUANTITY_FIELD = "quantity"
DAY = pd.Timedelta(days=1)
#: Where :func:`read_facts` keeps every activity name of the timeline when one it was asked for is missing.
ACTIVITIES_ATTR = "activities"


class InsufficientData(UserError):
    """The data does not meet a model's minimum (too few customers or too short a history)."""


class EvaluationFailed(UserError):
    """A model's backtest evaluation raised an unexpected error: that model publishes nothing this run."""


class ModelFailed(UserError):
    """Training or scoring one model raised an unexpected error: that model publishes nothing this run, the others
    go on. ``details`` is the original error's traceback as text (the error itself is not kept: its frames hold the
    run's purchases)."""

    def __init__(self, message: str, details: str = ""):
        super().__init__(message)
        self.details = details


def model_failed(model: str, step: str, exc: BaseException) -> ModelFailed:
    """The :class:`ModelFailed` of ``model`` for an unexpected error ``exc`` while it was ``step`` (``training`` or
    ``scoring with its stored model``), with what to do."""
    if step == "training":
        todo = (
            "check the data it reads (the purchases, and the signal, profile and measure fields listed in "
            "predictions) and run the job train_predictions again; if it fails again, report it with this message"
        )
    else:
        todo = (
            "retrain it (job train_predictions), which also checks the stored model against the data; if it fails "
            "again, report it with this message"
        )
    details = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    return ModelFailed(
        f"{model}: {step} failed with an unexpected error ({type(exc).__name__}: {exc}); the model publishes nothing "
        f"this run and the other models go on. What to do: {todo}",
        details,
    )


def backtested(model: str, evaluate, *args) -> dict:
    """``evaluate(*args)``, the backtest report of ``model``; an unexpected error in it becomes that model's
    :class:`EvaluationFailed`, so the other models of the run still train and publish (a run fails only on its own
    models' errors, not on an evaluation metric that cannot handle this data).

    Raises:
        EvaluationFailed: naming the model and the error (the original is its ``__cause__``, with its traceback).
    """
    try:
        return evaluate(*args)
    except UserError:
        raise
    except Exception as exc:
        raise EvaluationFailed(
            f"{model}: the backtest evaluation failed on this data ({type(exc).__name__}: {exc}); the model "
            "publishes nothing this run and the other models go on. This is a defect of the evaluation, not of "
            "the configuration: report it with this message"
        ) from exc


def _activity_rows(facts: pd.DataFrame, activity: str, fields: list[str]) -> pd.DataFrame:
    for column in ["CustomerId", "Activity", "ActivityTimeStamp"]:
        if column not in facts.columns:
            raise UserError(f"the activity facts have no column {column}; pass the activities stage's typed facts")
    rows = facts[facts["Activity"] == activity]
    if rows.empty:
        names = facts.attrs.get(ACTIVITIES_ATTR) or sorted(facts["Activity"].dropna().astype(str).unique())
        raise UserError(
            f"predictions: no activity named '{activity}' on the timeline "
            f"(it has {', '.join(names) or 'none'}); set the purchase activity to one of them"
        )
    missing = [f for f in fields if f not in rows.columns]
    if missing:
        raise UserError(
            f"predictions.purchases: activity '{activity}' has no field {', '.join(missing)}; "
            "name one of its configured semantic fields"
        )
    return rows


def _utc(times: pd.Series):
    """Timestamps as a UTC datetime array (``to_numpy`` of a time-zone-aware column builds an object per row)."""
    return pd.to_datetime(times, utc=True).array


def read_facts(dataset: ds.Dataset, activities: list[str], fields: list[str]) -> pd.DataFrame:
    """The rows of ``activities`` from the stored activity facts, with only the columns the models read.

    Columns and rows are filtered while the file is scanned, so what is held grows with the purchases, order lines
    and signals, not with every activity on the timeline. A field the facts do not have is left out here; the
    model that needs it then says which activity lacks which field. When an activity is missing, the message
    lists those there are.
    """
    names = set(dataset.schema.names)
    columns = [c for c in dict.fromkeys(["CustomerId", "Activity", "ActivityTimeStamp", *fields]) if c in names]
    if "Activity" not in names:
        return dataset.to_table(columns=columns).to_pandas()
    table = dataset.to_table(columns=columns, filter=pc.field("Activity").isin(list(activities)))
    frame = table.to_pandas()
    if not set(activities) <= set(frame["Activity"].dropna().unique()):
        # Only then is the whole Activity column read: the message of the model that needs the activity lists them.
        every = pc.unique(dataset.to_table(columns=["Activity"])["Activity"]).drop_null().to_pylist()
        frame.attrs[ACTIVITIES_ATTR] = sorted(str(name) for name in every)
    return frame


@dataclass(frozen=True)
class AmountSource:
    """Where the purchases' amounts are read from, and the amounts that are text but no number (``$11.77``,
    ``USD``): kept on the purchases frame (``attrs[AMOUNT_ATTR]``) so the usability check and the run log can name
    the field and show a value."""

    activity: str
    field: str
    #: The source column(s) the field is read from, as the configuration says (None when not known).
    origin: str | None
    purchases: int
    #: Purchases whose amount is text that is no number (they count with no amount).
    text_rows: int = 0
    example: str | None = None

    def where(self) -> str:
        """The field, its activity and source column."""
        return f"field '{self.field}' of activity '{self.activity}'" + (f" ({self.origin})" if self.origin else "")

    def text_note(self) -> str:
        """How many amounts are text that is no number, with an example ('' when none is)."""
        if not self.text_rows:
            return ""
        return (
            f"{self.where()} holds text that is no number in {self.text_rows:,} of {self.purchases:,} purchases, "
            f"for example {self.example!r}"
        )

    def warning(self) -> str | None:
        """The run log's warning when some amounts are text that is no number (None when none is)."""
        if not self.text_rows:
            return None
        return (
            f"predictions: {self.text_note()}; those purchases count with no amount, so their spend is left out of "
            "lifetime value and the spend features. Write the amounts as plain numbers (no currency sign or "
            "thousands separator) or declare the column a number in the source, or point "
            "predictions.purchases.amount at the field that holds the amount"
        )


#: Where :func:`purchases_from_facts` keeps the :class:`AmountSource` on the purchases frame.
AMOUNT_ATTR = "amount_source"


def _amount_source(raw: pd.Series, amount: pd.Series, source: PurchaseSource, origin: str | None) -> AmountSource:
    # Only values that are there but do not read as a number: blank text is no amount, not a wrong one.
    text = raw.notna().to_numpy() & amount.isna().to_numpy()
    found = raw[text].astype("string").str.strip() if text.any() else pd.Series([], dtype="string")
    found = found[found != ""]
    return AmountSource(
        activity=source.activity,
        field=source.amount,
        origin=origin,
        purchases=int(len(raw)),
        text_rows=int(len(found)),
        example=str(found.iloc[0]) if len(found) else None,
    )


def purchases_from_facts(facts: pd.DataFrame, source: PurchaseSource, origin: str | None = None) -> pd.DataFrame:
    """One row per purchase: CustomerId, Time (UTC), Amount (returns negative), sorted by customer and time.

    Rows whose amount is missing or not a number are kept with a missing amount: the purchase happened (it counts
    for recency and frequency), its value is unknown (sums leave it out; the usability report counts it). Where the
    amount is read from, and the amounts that are text but no number, are the frame's ``attrs[AMOUNT_ATTR]`` (an
    :class:`AmountSource`; ``origin`` names the source column).
    """
    fields = [source.amount] + ([source.is_return] if source.is_return else []) + [c.field for c in source.where]
    rows = _activity_rows(facts, source.activity, fields)
    rows = rows[kept_purchases(rows, source)]
    amount = pd.to_numeric(rows[source.amount], errors="coerce").astype("float64")
    read = _amount_source(rows[source.amount], amount, source, origin)
    if source.is_return:
        flagged = rows[source.is_return].astype("boolean").fillna(False).to_numpy(dtype=bool)
        amount = amount.where(~flagged, -amount.abs())
    out = pd.DataFrame(
        {
            "CustomerId": rows["CustomerId"].astype("string").to_numpy(),
            "Time": _utc(rows["ActivityTimeStamp"]),
            "Amount": amount.to_numpy(),
        }
    )
    out = out.sort_values(["CustomerId", "Time"], kind="stable").reset_index(drop=True)
    out.attrs[AMOUNT_ATTR] = read
    return out


def kept_purchases(rows: pd.DataFrame, source: PurchaseSource) -> np.ndarray:
    """Which rows of the purchase activity meet every condition of ``predictions.purchases.where`` (all when none
    is set): a cancelled order left out is neither a purchase nor a return."""
    kept = np.ones(len(rows), dtype=bool)
    # ``in_last`` is refused by validation (the models look back from their own cutoffs): no run date is needed.
    now = pd.Timestamp.max.tz_localize("UTC")
    for i, cond in enumerate(source.where):
        key = f"predictions.purchases.where[{i}]"
        kept &= condition_mask(rows[cond.field], cond.op, cond.value, now=now, key=key, field=cond.field)
    return kept


def signals_from_facts(facts: pd.DataFrame, activities: list[str]) -> pd.DataFrame:
    """CustomerId, Time, Activity of the named activities (the churn and lifetime value signals)."""
    rows = pd.concat([_activity_rows(facts, name, []) for name in activities]) if activities else facts.iloc[:0]
    out = pd.DataFrame(
        {
            "CustomerId": rows["CustomerId"].astype("string").to_numpy(),
            "Time": _utc(rows["ActivityTimeStamp"]),
            "Activity": rows["Activity"].astype("string").to_numpy(),
        }
    )
    return out


def lines_from_facts(facts: pd.DataFrame, source: PurchaseSource) -> pd.DataFrame:
    """One row per product line: CustomerId, Time, Product, Quantity (rows without a product are left out).

    Quantity is signed: a return line is negative. A line is a return when its ``quantity`` field or its amount
    field (the one ``purchases.amount`` names) is negative, or its return field (``purchases.is_return``) is true;
    these fields are read where the product activity has them. A line without a quantity counts as one.
    """
    if source.product_activity is None:
        raise UserError("predictions.purchases.product_activity is not set; product recommendation needs order lines")
    rows = _activity_rows(facts, source.product_activity, [source.product])
    quantity = _number(rows, QUANTITY_FIELD)
    returned = (quantity < 0) | (_number(rows, source.amount) < 0)
    if source.is_return and source.is_return in rows.columns:
        returned |= rows[source.is_return].astype("boolean").fillna(False).to_numpy(dtype=bool)
    size = np.where(np.isnan(quantity) | (quantity == 0), 1.0, np.abs(quantity))
    out = pd.DataFrame(
        {
            "CustomerId": rows["CustomerId"].astype("string").to_numpy(),
            "Time": _utc(rows["ActivityTimeStamp"]),
            "Product": rows[source.product].astype("string").to_numpy(),
            "Quantity": np.where(returned, -size, size),
        }
    )
    out = out[out["Product"].notna() & (out["Product"].str.strip() != "")]
    return out.sort_values(["CustomerId", "Time"], kind="stable").reset_index(drop=True)


def _number(rows: pd.DataFrame, field: str) -> np.ndarray:
    """A field of ``rows`` as floats (NaN where missing, not a number, or the rows have no such field)."""
    if field not in rows.columns:
        return np.full(len(rows), np.nan)
    return pd.to_numeric(rows[field], errors="coerce").astype("float64").to_numpy()


@dataclass(frozen=True)
class UsabilityReport:
    """What the data offers a model, computed before training."""

    customers: int
    purchasers: int
    purchases: int
    first_purchase: str | None
    last_purchase: str | None
    history_days: float
    #: Share of the customers with a purchase row who bought on two days or more (distinct purchase days).
    share_two_or_more_purchases: float
    share_missing_amount: float
    share_negative_amount: float
    #: Share of missing values per profile column used as a feature.
    profile_missing: dict[str, float]
    #: Where the amounts are read from and how many are text that is no number (not part of :meth:`as_dict`).
    amount_source: AmountSource | None = None

    def as_dict(self) -> dict:
        """The report as plain JSON-ready values."""
        out = {k: v for k, v in self.__dict__.items() if k != "amount_source"}
        if self.amount_source is not None and self.amount_source.text_rows:
            out["amounts_not_a_number"] = {"rows": self.amount_source.text_rows, "example": self.amount_source.example}
        return out


def usability(purchases: pd.DataFrame, customers: pd.Series, context=None) -> UsabilityReport:
    """Customers, history length, share with purchases on >= 2 days and missing values of the profile fields used.

    Purchases are counted by day, as the models count them: two rows of one order (or two orders of one day) are
    one purchase, and a return is none.
    """
    counts = purchases.groupby("CustomerId", observed=True).size()
    bought = purchases.loc[~(purchases["Amount"] < 0), ["CustomerId", "Time"]]
    per_day = bought.assign(Time=bought["Time"].dt.floor("D")).drop_duplicates()
    days = per_day.groupby("CustomerId", observed=True).size().reindex(counts.index, fill_value=0)
    first, last = (purchases["Time"].min(), purchases["Time"].max()) if len(purchases) else (None, None)
    missing = {}
    profile = context.profile if context is not None else None
    if profile is not None:
        for column in context.profile_fields:
            if column in profile.columns:
                missing[column] = round(float(profile[column].isna().mean()), 4) if len(profile) else 0.0
    return UsabilityReport(
        customers=int(customers.nunique()),
        purchasers=int(len(counts)),
        purchases=int(len(purchases)),
        first_purchase=first.isoformat() if first is not None else None,
        last_purchase=last.isoformat() if last is not None else None,
        history_days=round(float((last - first) / DAY), 1) if first is not None else 0.0,
        share_two_or_more_purchases=round(float((days >= 2).mean()), 4) if len(counts) else 0.0,
        share_missing_amount=round(float(purchases["Amount"].isna().mean()), 4) if len(purchases) else 0.0,
        share_negative_amount=round(float((purchases["Amount"] < 0).mean()), 4) if len(purchases) else 0.0,
        profile_missing=missing,
        amount_source=purchases.attrs.get(AMOUNT_ATTR),
    )


def require(
    report: UsabilityReport,
    model: str,
    min_customers: int,
    need_days: float,
    history_days: float,
    max_missing=0.2,
    keys: tuple[str, str] = ("predictions.minimums", "the prediction window"),
) -> None:
    """Raise :class:`InsufficientData` naming what is short and how to fix it.

    Args:
        report: the usability report.
        model: the model's name (for the message).
        min_customers: customers with a purchase needed.
        need_days: days of history needed.
        history_days: days of history available before the latest cutoff.
        max_missing: largest share of purchases without an amount, and of customers without a profile field used.
        keys: the settings the message names, with their values: the minimum of customers
            (``predictions.minimums.churn_customers (500)``) and the window the history is counted in
            (``predictions.clv.period_months (24)``).
    """
    customers_key, window_key = keys
    problems = []
    if report.purchasers < min_customers:
        problems.append(
            f"{report.purchasers} customers have a purchase, at least {min_customers} are needed "
            f"(add purchase history or lower {customers_key})"
        )
    if history_days < need_days:
        problems.append(
            f"the purchases cover {history_days:.0f} days, at least {need_days:.0f} are needed "
            f"(a longer history, a shorter {window_key}, or a lower predictions.minimums.history_windows, which "
            "asks for that many windows of history)"
        )
    if report.share_missing_amount > max_missing:
        read = report.amount_source
        where = f" in {read.where()}" if read is not None else ""
        note = f": {read.text_note()}" if read is not None and read.text_rows else ""
        problems.append(
            f"{report.share_missing_amount:.0%} of the purchases have no amount{where}, at most {max_missing:.0%} may"
            f"{note} (check the amount field of predictions.purchases: it must hold numbers)"
        )
    for column, share in report.profile_missing.items():
        if share > max_missing:
            problems.append(
                f"CustomerProfile.{column} is missing for {share:.0%} of the customers, at most {max_missing:.0%} "
                "may be (remove it from predictions.profile_fields)"
            )
    if problems:
        raise InsufficientData(f"{model}: not enough data to train: " + "; ".join(problems))


def check_cutoff(purchases: pd.DataFrame, cutoff: pd.Timestamp, model: str) -> None:
    """A cutoff after the last purchase would learn from a period with no data at all: refuse it."""
    if purchases.empty:
        raise InsufficientData(f"{model}: there are no purchases")
    last = purchases["Time"].max()
    if cutoff > last:
        raise InsufficientData(
            f"{model}: the cutoff {cutoff.isoformat()} is after the last purchase ({last.isoformat()}); "
            "choose a cutoff inside the purchase history"
        )


def training_sample(count: int, seed: int) -> np.ndarray | None:
    """Positions (in order) of the :data:`MAX_TRAINING_ROWS` training rows of ``count`` a model is fitted on, drawn
    with its own seed; None when all of them are."""
    if count <= MAX_TRAINING_ROWS:
        return None
    return np.sort(np.random.default_rng([seed, count]).choice(count, MAX_TRAINING_ROWS, replace=False))


def sampled(X: pd.DataFrame, y: np.ndarray, seed: int) -> tuple[pd.DataFrame, np.ndarray]:
    """``X`` and ``y`` at the rows of :func:`training_sample` (as they are when it takes all of them)."""
    sample = training_sample(len(y), seed)
    return (X, y) if sample is None else (X.iloc[sample], y[sample])


def informative(X: pd.DataFrame) -> pd.DataFrame:
    """``X`` without the features that have no value in any of its rows.

    Such a feature carries nothing to learn from, and the gradient boosting cannot bin a column without a value.
    It happens when every customer at a training cutoff is too new for it: in a data set of one cohort (all
    customers joined in the same quarter) nobody has a purchase rate before the last 180 days at an early cutoff.
    The model then leaves the feature out, and scoring reads only the model's own features.
    """
    return X.loc[:, X.notna().any().to_numpy()]


def native_threads(configured: int | None) -> int:
    """Threads for scikit-learn's native code: one unless configured.

    Its OpenMP threads wait for each other at every tree; when the cores are shared (or the frames small) that
    waiting dominates: churn on 20,000 customers took 21 s with two threads and 5 s with one on two shared cores.
    """
    return configured or 1


def as_utc(value) -> pd.Timestamp:
    """A timestamp in UTC (naive values are taken as UTC)."""
    stamp = pd.Timestamp(value)
    return stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")


#: ``as_of: last_purchase`` warns when purchases lie more than this after the 99.9th percentile of purchase dates:
#: in real data the last 0.1% of purchases span days (at 1,000 purchases, the last one or two), so a month means
#: a few stray rows (mistyped dates) ending the data instead of the bulk of it.
STRAY_GAP = pd.Timedelta(days=30)


def stray_last_purchases(times: pd.Series) -> str | None:
    """With ``as_of: last_purchase``, a warning when the last purchases are few and far after the rest (more than
    :data:`STRAY_GAP` after the 99.9th percentile of purchase dates): they alone move the cutoff, and everyone then
    looks inactive since the real end of the data. None when the purchases end as the bulk of them does."""
    times = pd.Series(times).dropna()
    if times.empty:
        return None
    stamps = pd.to_datetime(times, utc=True)
    bulk_end = stamps.quantile(0.999)
    late = stamps[stamps > bulk_end + STRAY_GAP]
    if late.empty:
        return None
    examples = ", ".join(str(d) for d in np.sort(late.dt.date.unique())[-3:])
    return (
        f"predictions: as_of is last_purchase, so the models score at {stamps.max().isoformat()}, the latest purchase; "
        f"but {len(late):,} purchases are dated more than {STRAY_GAP.days} days after 99.9% of the others (which end "
        f"by {bulk_end.date()}), for example {examples}. A few late rows (often mistyped dates) move the cutoff, and "
        "every customer then looks inactive since the real end of the data. Correct those rows' dates, or set "
        f"predictions.as_of to the date the data ends (such as {bulk_end.date()})"
    )


def latest_cutoff(latest, frame: pd.DataFrame, model: str) -> pd.Timestamp:
    """The scoring cutoff: ``latest`` in UTC, or the last activity of ``frame`` when ``latest`` is None.

    None suits data that ends before the run (an export, a historical data set): the run time would leave a
    quiet gap between the last purchase and the cutoff that no customer's history explains.
    """
    if latest is not None:
        return as_utc(latest)
    if frame.empty:
        raise InsufficientData(f"{model}: there are no purchases")
    return as_utc(frame["Time"].max())
