"""Measures: customer attribute measures, customer measures with dimensions, and business measures."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal

from pydantic import Field, StringConstraints, model_validator

from ci_pipeline.config.base import TYPE_PATTERN, Name, StrictModel
from ci_pipeline.grammar.conditions import Condition
from ci_pipeline.grammar.expression import MAX_EXPRESSION_DEPTH, ExpressionError, expression_depth, parse, references

Aggregation = Literal[
    "sum",
    "average",
    "count",
    "count_distinct",
    "min",
    "max",
    "first",
    "last",
    "argmax",
    "argmin",
    "days_since_latest",
    "days_since_earliest",
    "span_days",
]
#: Aggregations that can summarise another measure's per-customer values (``of_measure``).
OF_MEASURE_AGGREGATIONS = ("sum", "average", "count", "count_distinct", "min", "max")
#: Aggregations whose result over no rows is 0; every other aggregation gives null (or ``null_value``).
COUNTING = ("count", "count_distinct")
NUMERIC_RESULT = ("sum", "average", "count", "count_distinct", "days_since_latest", "days_since_earliest", "span_days")


class Window(StrictModel):
    """A rolling time window ending on the run date: ``{last: 90, unit: days}`` or ``{period: this_year}``."""

    last: int | None = Field(None, ge=1)
    unit: Literal["days", "weeks", "months", "years"] = "days"
    period: Literal["this_month", "this_quarter", "this_year", "last_month", "last_quarter", "last_year"] | None = None

    @model_validator(mode="after")
    def _one_kind(self):
        if (self.last is None) == (self.period is None):
            raise ValueError("give either 'last' (with 'unit') or 'period', not both or neither")
        return self


#: Ready-made measures; keys given next to ``template`` override these defaults.
TEMPLATES: dict[str, dict[str, Any]] = {
    "average_transaction_value": {"aggregate": "average", "field": "amount"},
    "total_transaction_value": {"aggregate": "sum", "field": "amount"},
    "transaction_count": {"aggregate": "count"},
    "average_monthly_revenue": {
        "aggregate": "sum",
        "field": "amount",
        "window": {"last": 12, "unit": "months"},
        "divide_by": 12,
    },
    "days_since_last_purchase": {"aggregate": "days_since_latest"},
    "active_lifespan": {"aggregate": "span_days"},
    "loyalty_balance": {"aggregate": "sum", "field": "points"},
    "rfm_recency_score": {"aggregate": "days_since_latest", "score": 5, "higher_is_better": False},
    "rfm_frequency_score": {"aggregate": "count", "score": 5},
    "rfm_monetary_score": {"aggregate": "sum", "field": "amount", "score": 5},
}


class MeasureSpec(StrictModel):
    """One measure: an aggregation over activities, arithmetic over other measures, or a measure of a measure."""

    description: str = ""
    #: A name from ``TEMPLATES``; the other keys given override its defaults.
    template: str | None = None
    #: Activity name(s) (keys of ``activities.tables``) or activity types (``SalesOrder``: every activity of that
    #: type) the aggregation reads.
    activity: list[Annotated[str, StringConstraints(pattern=TYPE_PATTERN, max_length=63)]] = []
    aggregate: Aggregation | None = None
    #: Semantic field (or ActivityTimeStamp) aggregated; not needed for ``count``.
    field: str | None = None
    #: For argmax/argmin: the field whose largest/smallest value picks the row whose ``field`` is returned.
    order_by: str | None = None
    #: Conditions on activity fields; all must hold.
    where: list[Condition] = []
    window: Window | None = None
    #: Customer measures: extra grouping fields (spend per channel). Business measures: optional grouping.
    dimensions: list[str] = []
    #: Arithmetic over other measures of the same kind, e.g. ``total_spend / order_count``.
    expression: str | None = None
    #: Business measures only: the customer attribute measure aggregated across customers.
    of_measure: str | None = None
    #: Divide the result by this number (average monthly revenue = 12 months' total / 12).
    divide_by: float | None = Field(None, gt=0)
    #: Turn the value into a 1..score quantile score across customers (RFM scores use 5).
    score: int | None = Field(None, ge=2, le=100)
    higher_is_better: bool = True
    #: Value for customers with no qualifying rows (counts are always 0 there).
    null_value: float | None = None

    @model_validator(mode="before")
    @classmethod
    def _expand_template(cls, data):
        if isinstance(data, dict) and data.get("template") is not None:
            name = data["template"]
            if name not in TEMPLATES:
                raise ValueError(f"unknown template {name!r}; use one of {', '.join(TEMPLATES)}")
            data = {**TEMPLATES[name], **data}
        if isinstance(data, dict) and isinstance(data.get("activity"), str):
            data = {**data, "activity": [data["activity"]]}
        return data

    @model_validator(mode="after")
    def _one_definition(self):
        if (self.aggregate is None) == (self.expression is None):
            raise ValueError("define the measure by exactly one of 'aggregate' or 'expression'")
        if self.of_measure is not None and self.aggregate not in OF_MEASURE_AGGREGATIONS:
            raise ValueError("'of_measure' needs 'aggregate': sum, average, count, count_distinct, min or max")
        if self.expression is not None:
            if expression_depth(self.expression) > MAX_EXPRESSION_DEPTH:
                raise ValueError(
                    f"expression nests parentheses and signs more than {MAX_EXPRESSION_DEPTH} levels deep; split it "
                    "into several measures that refer to each other"
                )
            try:
                parse(self.expression)
            except ExpressionError as exc:
                raise ValueError(f"expression {self.expression!r}: {exc}") from None
        if self.aggregate is not None and self.of_measure is None:
            if not self.activity:
                raise ValueError("an aggregation needs 'activity' (the activity name(s) it reads)")
            if (
                self.aggregate not in ("count", "days_since_latest", "days_since_earliest", "span_days")
                and not self.field
            ):
                raise ValueError(f"aggregate {self.aggregate} needs 'field'")
            if self.aggregate in ("argmax", "argmin") and not self.order_by:
                raise ValueError(f"aggregate {self.aggregate} needs 'order_by' (the field to maximise/minimise)")
        return self

    def references(self) -> set[str]:
        """Measures this one is computed from."""
        refs = references(parse(self.expression)) if self.expression else set()
        return refs | ({self.of_measure} if self.of_measure else set())

    def result_type(self) -> str:
        """``number``, ``date`` or ``any`` (depends on the data), for type checks in segment rules."""
        if self.score or self.expression or self.divide_by:
            return "number"
        if self.aggregate in NUMERIC_RESULT:
            return "number"
        if self.aggregate in ("min", "max", "first", "last", "argmax", "argmin") and self.field == "ActivityTimeStamp":
            return "date"
        return "any"


#: Asset names the measures stage uses itself.
RESERVED = ("customer_measure", "customer_measure_values")


class MeasuresConfig(StrictModel):
    """Customer attribute, customer and business measures."""

    #: The run date windows end on: a date (reproducible output) or ``today`` (UTC, read at run time by
    #: :func:`ci_pipeline.measures.conditions.run_date`).
    as_of: dt.date | Literal["today"] = "today"
    #: One value per customer; all of them are published together in CustomerMeasure.
    attributes: dict[Name, MeasureSpec] = {}
    #: Per customer and one or more dimensions; each becomes its own table.
    customer: dict[Name, MeasureSpec] = {}
    #: No customer dimension; each becomes its own table.
    business: dict[Name, MeasureSpec] = {}

    def all_measures(self) -> dict[str, tuple[str, MeasureSpec]]:
        """Name -> (kind, spec) over every kind."""
        out: dict[str, tuple[str, MeasureSpec]] = {}
        for kind in ("attributes", "customer", "business"):
            for name, spec in getattr(self, kind).items():
                out.setdefault(name, (kind, spec))
        return out
