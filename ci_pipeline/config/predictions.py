"""Predictions: transactional churn, customer lifetime value and product recommendation (docs/predictions.md).

The settings only describe what to predict and from which activities; ``ci_pipeline.predictions`` runs the models
and the predictions stage wires them in. An absent ``predictions`` section means no predictions stage.
"""

from __future__ import annotations

import datetime as dt
from typing import Literal

from pydantic import Field, field_validator, model_validator

from ci_pipeline.config.base import StrictModel
from ci_pipeline.config.orchestration import Retraining
from ci_pipeline.grammar.conditions import Condition

MODELS = ("churn", "clv", "recommendation")
#: Model -> the Model column of its Prediction rows.
MODEL_NAMES = {"churn": "TransactionalChurn", "clv": "CustomerLifetimeValue", "recommendation": "ProductRecommendation"}
#: ``prediction.<field>`` in segment rules -> (model, column of that model's scores, type). Churn and lifetime
#: value fields carry the model in their name, so one rule reads without knowing which table holds the field.
SEGMENT_FIELDS: dict[str, tuple[str, str, str]] = {
    "ChurnScore": ("churn", "ChurnScore", "number"),
    "IsChurn": ("churn", "IsChurn", "boolean"),
    "ChurnLikelihood": ("churn", "Likelihood", "text"),
    "ChurnBasis": ("churn", "Basis", "text"),
    "ClvValue": ("clv", "PredictedValue", "number"),
    "ClvLow": ("clv", "ValueLow", "number"),
    "ClvHigh": ("clv", "ValueHigh", "number"),
    "ClvBand": ("clv", "ValueBand", "text"),
    "ClvBasis": ("clv", "Basis", "text"),
}
#: The values a text prediction field holds (a segment rule comparing it with another selects no one).
SEGMENT_VALUES: dict[str, tuple[str, ...]] = {
    "ChurnLikelihood": ("Low", "Medium", "High"),
    "ClvBand": ("Low", "Medium", "High"),
    "ChurnBasis": ("model", "population prior"),
    "ClvBasis": ("model", "population prior"),
}


class PurchaseSource(StrictModel):
    """Where purchases are on the activity timeline (the typed facts of the activities stage)."""

    #: Activity name (``activities.tables`` key) holding one row per order.
    activity: str = "orders"
    #: Numeric field of that activity with the order value (negative values are returns).
    amount: str = "amount"
    #: Optional boolean field marking returns whose amount is positive (they are counted as negative).
    is_return: str | None = None
    #: Conditions on fields of ``activity`` (measures' filter grammar), all of which a row must meet to be a
    #: purchase or a return: ``[{field: status, op: "!=", value: cancelled}]`` leaves cancelled orders out.
    where: list[Condition] = []
    #: Activity holding one row per product bought (order lines); None when there is none.
    product_activity: str | None = "order_lines"
    #: Field of ``product_activity`` naming the product.
    product: str = "product"


class Minimums(StrictModel):
    """Data requirements checked before training (the reference product's minimums by default)."""

    churn_customers: int = Field(500, ge=1)
    clv_customers: int = Field(1000, ge=1)
    recommendation_customers: int = Field(100, ge=1)
    #: History must cover at least this many prediction windows (the reference asks for two).
    history_windows: float = Field(2.0, gt=0)
    #: Largest share of purchases without an amount (and of customers without a profile field used).
    max_missing_share: float = Field(0.2, ge=0, le=1)


class ChurnSettings(StrictModel):
    """Transactional churn: will a customer who has bought before buy again within the window?"""

    #: Days ahead the prediction covers.
    window_days: int = Field(90, ge=7)
    #: Days without a purchase that make a churner; the label is "no purchase in (cutoff, cutoff + churn_days]".
    #: Defaults to ``window_days``.
    churn_days: int | None = Field(None, ge=7)

    @property
    def label_days(self) -> int:
        """Days after the cutoff in which no purchase means churn."""
        return self.churn_days or self.window_days

    def ignored_window(self) -> str | None:
        """The warning (of ``validate`` and the run log) when ``window_days`` is set beside a different
        ``churn_days``, which alone takes effect; None otherwise. Churn is "no purchase in the ``churn_days`` after
        the cutoff": one number is both the silence that makes a churner and how far ahead the model predicts, so
        the other setting changes nothing."""
        days, window = self.churn_days, self.window_days
        if days is None or window == days or "window_days" not in self.model_fields_set:
            return None
        return (
            f"predictions.churn.window_days: {window} has no effect while churn_days ({days}) is set. Churn is "
            f'"no purchase in the {days} days after the cutoff": {days} days are both the silence that makes a '
            f"churner and how far ahead the model predicts (its backtest and training cutoffs are {days} days apart). "
            f"To predict {window} days ahead, remove churn_days; to keep {days}, remove window_days"
        )


class ClvSettings(StrictModel):
    """Customer lifetime value: what a customer will spend over the coming period."""

    #: Months ahead the prediction covers (a month is 30.44 days).
    period_months: int = Field(12, ge=1, le=60)
    #: A customer with a purchase in this many days before the cutoff counts as active (reference baseline).
    active_days: int = Field(90, ge=1)
    #: Share of customers counted as high value (top 20% by default).
    high_value_share: float = Field(0.2, gt=0, lt=1)

    @property
    def period_days(self) -> int:
        """The prediction period in whole days (a month is 30.44 days)."""
        return round(self.period_months * 30.44)


class RecommendationSettings(StrictModel):
    """Product recommendation: K products per customer."""

    k: int = Field(10, ge=1, le=100)
    #: Whether products the customer bought before may be recommended again.
    repeats: bool = True
    #: Days of purchases before the cutoff the model learns from.
    lookback_days: int = Field(730, ge=30)
    #: Days held out after the training cutoff when evaluating.
    holdout_days: int = Field(30, ge=7)
    #: Products never recommended.
    exclude_products: list[str] = Field(default_factory=list)
    #: Neighbours kept per product in the item-item model (bounds memory).
    neighbours: int = Field(50, ge=1, le=1000)

    @model_validator(mode="after")
    def _holdout_inside_lookback(self):
        if self.holdout_days >= self.lookback_days:
            raise ValueError(
                f"holdout_days ({self.holdout_days}) must be less than lookback_days ({self.lookback_days})"
            )
        return self


class ModelSettings(StrictModel):
    """What every prediction model reads: purchases, minimums, each model's parameters, features and seed."""

    purchases: PurchaseSource = PurchaseSource()
    minimums: Minimums = Minimums()
    churn: ChurnSettings = ChurnSettings()
    clv: ClvSettings = ClvSettings()
    recommendation: RecommendationSettings = RecommendationSettings()
    #: CustomerProfile columns used as features by churn and CLV. None by default: the profile is a snapshot of
    #: today, so a field that changes over time (a last-login date, a status) would leak the future into a
    #: backtest. List only fields fixed before any cutoff (birth year, signup channel, country).
    profile_fields: list[str] = Field(default_factory=list)
    #: Other activities (web sessions, support cases, ...) whose recency and 90-day count become churn and lifetime
    #: value features: "no web_sessions for 40 days". Like purchases, only those at or before a cutoff are read.
    signal_activities: list[str] = Field(default_factory=list)
    #: Customer measures (``measures.attributes``) used as churn and lifetime value features. Each is recomputed
    #: at every cutoff from the activities before it, so a backtest never sees a value of the run date.
    measure_fields: list[str] = Field(default_factory=list)
    #: Seed of every random choice (splits, model fitting): the same input gives the same scores.
    seed: int = 7
    #: Threads for model fitting and scoring (one by default: see ``predictions.data.native_threads``).
    threads: int | None = Field(None, ge=1)


class TrainingSchedule(Retraining):
    """When the models are retrained (job ``train_predictions``); refreshes score with the stored models."""

    #: Monthly by default: the 1st at 03:00 in ``orchestration.timezone``.
    cron: list[str] | None = Field(default_factory=lambda: ["0 3 1 * *"], min_length=1, max_length=24)


class PredictionsConfig(ModelSettings):
    """The predictions stage: which models run, the scoring date and when they are retrained."""

    #: The models that run; each writes its own tables and its rows of the Prediction table.
    models: list[Literal["churn", "clv", "recommendation"]] = Field(default_factory=lambda: list(MODELS), min_length=1)
    #: The scoring cutoff: a date (end of that day, UTC), ``today`` (the run date), ``last_purchase`` (data that
    #: ends before the run: a quiet gap would look like churn), or none for ``measures.as_of``.
    as_of: dt.date | Literal["today", "last_purchase"] | None = None
    #: Monthly by default (the 1st at 03:00 in ``orchestration.timezone``).
    training: TrainingSchedule = TrainingSchedule()
    #: Models trained or scored at the same time, each on a thread of the run's process, or ``auto`` (default): two
    #: up to :data:`ci_pipeline.predictions.published.PARALLEL_PURCHASES` purchase rows, else one. A second model at
    #: once holds its own training rows: at 100,000 generated people 0.2 GB more, for the three models in 12 s
    #: instead of 20; at 1,000,000 (2.1M purchases) the run's peak stayed 14.6 GB (docs/predictions.md).
    parallel_models: int | Literal["auto"] = "auto"

    @field_validator("parallel_models")
    @classmethod
    def _models_at_once(cls, value):
        if value != "auto" and not 1 <= value <= len(MODELS):
            raise ValueError(f"must be auto or 1 to {len(MODELS)}, not {value}")
        return value

    @field_validator("models")
    @classmethod
    def _distinct_models(cls, models):
        if len(set(models)) != len(models):
            raise ValueError(f"a model is listed twice: {models}; list each of {', '.join(MODELS)} at most once")
        return models

    def settings(self) -> dict:
        """The model settings alone (what ``ci_pipeline.predictions.PredictionSettings`` takes)."""
        return self.model_dump(include=set(ModelSettings.model_fields))
