"""Measures: customer attribute measures, customer measures with dimensions, and business measures."""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, field_validator, model_validator

from ci_pipeline.config.base import Name, StrictModel, did_you_mean
from ci_pipeline.measures.expression import ExpressionError, parse, references

if TYPE_CHECKING:
    from ci_pipeline.config.model import ProjectConfig

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

#: Operator spellings accepted in filters and segment conditions -> canonical name.
OPERATOR_ALIASES = {
    "=": "=",
    "==": "=",
    "eq": "=",
    "!=": "!=",
    "<>": "!=",
    "ne": "!=",
    "<": "<",
    "lt": "<",
    "<=": "<=",
    "le": "<=",
    ">": ">",
    "gt": ">",
    ">=": ">=",
    "ge": ">=",
    "between": "between",
    "in": "in",
    "not in": "not_in",
    "contains": "contains",
    "starts with": "starts_with",
    "ends with": "ends_with",
    "is null": "is_null",
    "not null": "not_null",
    "is not null": "not_null",
    "before": "before",
    "date before": "before",
    "after": "after",
    "date after": "after",
    "in last": "in_last",
    "in the last": "in_last",
}
OPERATORS = tuple(dict.fromkeys(OPERATOR_ALIASES.values()))

#: Levels of parentheses and signs an ``expression`` may nest (docs/configuration.md, "Limits"): the parser is
#: recursive, and no real formula comes near this.
MAX_EXPRESSION_DEPTH = 50


def expression_depth(text: str) -> int:
    """How deep an expression nests: open parentheses plus the unary signs in front of them, at the deepest point."""
    depth = deepest = 0
    opened: list[int] = []
    signs = 0
    for char in text:
        if char == "(":
            opened.append(signs)
            depth += 1 + signs
            signs = 0
        elif char == ")":
            depth -= 1 + (opened.pop() if opened else 0)
        elif char == "-":
            signs += 1
        elif not char.isspace() and char not in "+*/":
            signs = 0
        deepest = max(deepest, depth + signs)
    return deepest


#: Fields every activity has, besides its semantic fields.
ACTIVITY_COLUMNS = ("ActivityId", "ActivityType", "ActivityTimeStamp", "Activity")


class Condition(StrictModel):
    """One test on one field: ``{field: status, op: '=', value: completed}``.

    ``value`` is a list of two for ``between``, a list for ``in``/``not_in``, a number of days or a text such as
    ``"3 months"`` for ``in_last``, and absent for ``is_null``/``not_null``.
    """

    field: str
    op: str
    value: Any = None

    @field_validator("op")
    @classmethod
    def _known_operator(cls, value: str) -> str:
        # ``not_in``, ``not in`` and ``NOT IN`` are the same operator.
        canonical = OPERATOR_ALIASES.get(" ".join(value.strip().lower().replace("_", " ").split()))
        if canonical is None:
            raise ValueError(f"unknown operator {value!r}; use one of {', '.join(OPERATORS)}")
        return canonical

    @model_validator(mode="after")
    def _value_fits_operator(self):
        op, value = self.op, self.value
        if op in ("is_null", "not_null"):
            if value is not None:
                raise ValueError(f"operator {op} takes no value")
        elif value is None:
            raise ValueError(f"operator {op} needs a value")
        elif op == "between" and not (isinstance(value, list) and len(value) == 2):
            raise ValueError("operator between needs a list of two values [low, high]")
        elif op in ("in", "not_in") and not isinstance(value, list):
            raise ValueError(f"operator {op} needs a list of values")
        elif op in ("contains", "starts_with", "ends_with") and not isinstance(value, str):
            raise ValueError(f"operator {op} compares text; give a text value")
        elif op == "in_last":
            parse_period(value)
        elif op in ("before", "after") and not _is_date(value):
            raise ValueError(f"operator {op} needs a date (YYYY-MM-DD); got {value!r}")
        return self


def parse_period(value) -> tuple[int, str]:
    """``90`` / ``"90 days"`` / ``"3 months"`` / ``{"last": 3, "unit": "months"}`` -> (count, unit)."""
    if isinstance(value, bool):
        raise ValueError(f"in_last needs a number of days or a text such as '3 months'; got {value!r}")
    if isinstance(value, int):
        count, unit = value, "days"
    elif isinstance(value, str) and len(value.split()) == 2 and value.split()[0].isdigit():
        count, unit = int(value.split()[0]), value.split()[1].lower()
        unit = unit if unit.endswith("s") else unit + "s"
    elif isinstance(value, dict) and set(value) <= {"last", "unit"} and isinstance(value.get("last"), int):
        count, unit = value["last"], value.get("unit", "days")
    else:
        raise ValueError(f"in_last needs a number of days or a text such as '3 months'; got {value!r}")
    if unit not in ("days", "weeks", "months", "years") or count < 1:
        raise ValueError(f"in_last needs a positive count of days, weeks, months or years; got {value!r}")
    return count, unit


def _is_date(value) -> bool:
    if isinstance(value, dt.date):
        return True
    if isinstance(value, str):
        try:
            dt.date.fromisoformat(value[:10])
        except ValueError:
            return False
        return True
    return False


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
    #: Activity name(s) (keys of ``activities.tables``) the aggregation reads.
    activity: list[Name] = []
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

    #: The run date windows end on: a date (reproducible output) or ``today`` (UTC, read at run time).
    as_of: dt.date | Literal["today"] = "today"
    #: One value per customer; all of them are published together in CustomerMeasure.
    attributes: dict[Name, MeasureSpec] = {}
    #: Per customer and one or more dimensions; each becomes its own table.
    customer: dict[Name, MeasureSpec] = {}
    #: No customer dimension; each becomes its own table.
    business: dict[Name, MeasureSpec] = {}

    def as_of_date(self) -> dt.date:
        """The run date (today in UTC when configured as ``today``)."""
        if self.as_of == "today":
            return dt.datetime.now(dt.UTC).date()
        return self.as_of

    def all_measures(self) -> dict[str, tuple[str, MeasureSpec]]:
        """Name -> (kind, spec) over every kind."""
        out: dict[str, tuple[str, MeasureSpec]] = {}
        for kind in ("attributes", "customer", "business"):
            for name, spec in getattr(self, kind).items():
                out.setdefault(name, (kind, spec))
        return out

    def problems(self, project: ProjectConfig) -> list[str]:
        """Names, activities, fields and references that do not resolve, and cycles between measures."""
        found: list[str] = []
        activities = project.activities.tables
        seen: dict[str, str] = {}
        for kind in ("attributes", "customer", "business"):
            for name, spec in getattr(self, kind).items():
                key = f"measures.{kind}.{name}"
                if name in RESERVED:
                    found.append(f"{key}: the name {name} is reserved; choose another")
                if name in seen:
                    found.append(f"{key}: the name is already used by measures.{seen[name]}.{name}; names are unique")
                seen.setdefault(name, kind)
                found.extend(self._spec_problems(key, kind, spec, activities))
        for kind in ("attributes", "business"):
            found.extend(_cycles(f"measures.{kind}", {n: s.references() for n, s in getattr(self, kind).items()}))
        return found

    def _spec_problems(self, key, kind, spec: MeasureSpec, activities) -> list[str]:
        found = []
        if kind == "customer" and spec.aggregate is None:
            found.append(f"{key}: a customer measure is an aggregation over activities with 'dimensions'")
        if kind == "customer" and not spec.dimensions:
            found.append(f"{key}.dimensions: a customer measure needs at least one dimension (else use attributes)")
        if kind == "attributes" and spec.dimensions:
            found.append(f"{key}.dimensions: attribute measures have one value per customer; move it to 'customer'")
        if spec.of_measure is not None and spec.dimensions:
            found.append(f"{key}.dimensions: a measure of a measure has no dimensions; remove them")
        if spec.of_measure is not None:
            if kind != "business":
                found.append(f"{key}.of_measure: only business measures aggregate another measure")
            elif spec.of_measure not in self.attributes:
                found.append(f"{key}.of_measure: no attribute measure named {spec.of_measure!r}")
        if spec.expression is not None:
            pool = self.attributes if kind == "attributes" else self.business if kind == "business" else {}
            for ref in sorted(references(parse(spec.expression))):
                if ref not in pool:
                    found.append(
                        f"{key}.expression: unknown measure {ref!r}{did_you_mean(ref, pool)}; expressions use {kind} "
                        "measures "
                        f"({', '.join(sorted(pool)) or 'none defined'})"
                    )
        if spec.aggregate is not None and spec.of_measure is None:
            fields = set(ACTIVITY_COLUMNS)
            for i, activity in enumerate(spec.activity):
                if activity not in activities:
                    found.append(
                        f"{key}.activity[{i}]: unknown activity {activity!r}{did_you_mean(activity, activities)}; "
                        "use one of "
                        f"{', '.join(sorted(activities)) or '(none configured under activities.tables)'}"
                    )
                else:
                    fields |= set(activities[activity].fields)
            if any(a in activities for a in spec.activity):
                used = [("field", spec.field), ("order_by", spec.order_by)]
                used += [(f"where[{i}].field", c.field) for i, c in enumerate(spec.where)]
                used += [(f"dimensions[{i}]", d) for i, d in enumerate(spec.dimensions)]
                for sub, field in used:
                    if field is not None and field not in fields:
                        found.append(
                            f"{key}.{sub}: unknown field {field!r}; the activities have {', '.join(sorted(fields))}"
                        )
        return found


def _cycles(prefix: str, graph: dict[str, set[str]]) -> list[str]:
    return [f"{prefix}.{cycle[0]}: reference cycle {' -> '.join(cycle)}; break it" for cycle in find_cycles(graph)]


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Each reference cycle once, as a path that starts and ends at its smallest name (``[a, b, a]``)."""
    found: list[list[str]] = []
    state: dict[str, int] = {}  # 1 = on the current path, 2 = finished
    path: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in graph:
                continue
            if state.get(nxt) == 1:
                cycle = path[path.index(nxt) :]
                start = cycle.index(min(cycle))
                cycle = cycle[start:] + cycle[:start]
                if cycle + [cycle[0]] not in found:
                    found.append(cycle + [cycle[0]])
            elif state.get(nxt) is None:
                visit(nxt)
        path.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)
    return found
