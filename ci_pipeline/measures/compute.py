"""Compute every configured measure with vectorised group-bys over the activity facts."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ci_pipeline.activities.jsoncols import json_objects
from ci_pipeline.config.measures import COUNTING, MeasuresConfig, MeasureSpec
from ci_pipeline.errors import UserError
from ci_pipeline.grammar.expression import parse
from ci_pipeline.measures.conditions import as_numbers
from ci_pipeline.measures.expression import evaluate
from ci_pipeline.measures.facts import INDEXED, FactIndex, StoredFacts, fact_parts, run_end
from ci_pipeline.measures.filters import FilterCheck
from ci_pipeline.outputs import with_ids

_DAY = pd.Timedelta(days=1)
_DAYS = ("days_since_latest", "days_since_earliest", "span_days")
_PICKS = ("first", "last", "argmax", "argmin")


def fact_columns(config: MeasuresConfig) -> list[str]:
    """The activity fact columns the measures read: the ones every measure uses (customer, activity, type, time)
    and every field a measure names (aggregated, ordered by, grouped by or filtered on), in a stable order.
    Reading only these keeps the stage's memory to what it uses."""
    named = []
    for spec in [*config.attributes.values(), *config.customer.values(), *config.business.values()]:
        named += [spec.field, spec.order_by, *spec.dimensions, *(c.field for c in spec.where)]
    return list(dict.fromkeys([*INDEXED, *(n for n in named if n)]))


def aggregate(frame: pd.DataFrame, keys: list[str], spec: MeasureSpec, end: pd.Timestamp) -> pd.Series:
    """One aggregated value per group of ``keys`` (``frame`` has the key columns plus ``value``, ``ts``, ``order``).

    Groups with no non-null values give null, except for counts.
    """
    how = spec.aggregate
    grouped = frame.groupby(keys, sort=True, observed=True)
    if how == "count":
        return grouped.size().astype("float64")
    if how == "count_distinct":
        return grouped["value"].nunique().astype("float64")
    if how in ("sum", "average"):
        values = grouped["value"]
        if pd.api.types.is_integer_dtype(frame["value"].dtype):
            # Integer sums wrap around silently past int64; in float64 (what is published) they stay exact up to
            # 2**53 and overflow to infinity, which _finish turns into a counted null.
            as_float = frame.assign(value=frame["value"].astype("float64"))
            values = as_float.groupby(keys, sort=True, observed=True)["value"]
        # An overflow gives infinity, which _finish turns into a counted null: no warning needed here.
        with np.errstate(over="ignore"):
            out = values.sum(min_count=1) if how == "sum" else values.mean()
        return out.astype("float64")
    if how in ("min", "max"):
        return getattr(grouped["value"], how)()
    if how in _DAYS:
        stamps = grouped["ts"]
        last_day = end - _DAY
        if how == "days_since_latest":
            delta = last_day.normalize() - stamps.max().dt.normalize()
        elif how == "days_since_earliest":
            delta = last_day.normalize() - stamps.min().dt.normalize()
        else:
            delta = stamps.max().dt.normalize() - stamps.min().dt.normalize()
        return (delta / _DAY).astype("float64")
    return _winners(frame, keys, how).set_index(keys)["value"].sort_index()


def _winners(frame: pd.DataFrame, keys: list[str], how: str) -> pd.DataFrame:
    """first/last/argmax/argmin: the row that wins in each group, ties broken by row order (ActivityId order)."""
    pick = frame.dropna(subset=["order"] if how in ("argmax", "argmin") else ["ts"])
    sort_col = "order" if how in ("argmax", "argmin") else "ts"
    ascending = how in ("first", "argmin")
    ordered = pick.sort_values(sort_col, ascending=ascending, kind="stable")
    return ordered.groupby(keys, sort=True, observed=True).head(1)


class NotNumbers(UserError):
    """A sum or an average over values that are not numbers; counted over every part before it is raised."""

    def __init__(self, key: str, spec: MeasureSpec, count: int, example):
        self.key, self.spec, self.count, self.example = key, spec, count, example
        super().__init__(
            f"{key}: {spec.aggregate} needs numbers, but field {spec.field!r} holds {count} value(s) that "
            f"are not, e.g. {example!r}; give the column a numeric type (double or int64) in its "
            "source's columns, or use an aggregate that does not add (count, first, last)"
        )

    def plus(self, other: NotNumbers) -> NotNumbers:
        """The same refusal over the values of both (the first example kept)."""
        return NotNumbers(self.key, self.spec, self.count + other.count, self.example)


def _numbers(values: pd.Series, key: str, spec: MeasureSpec) -> pd.Series:
    """The values a sum or an average adds, as numbers: a text column of numbers (a CSV read without column
    types) is read as numbers, since pandas would join the strings; a value that is not a number is refused."""
    if pd.api.types.is_numeric_dtype(values.dtype) and not pd.api.types.is_bool_dtype(values.dtype):
        return values
    numbers = pd.to_numeric(values.astype("string").str.strip(), errors="coerce")
    bad = values.notna() & numbers.isna()
    if bad.any():
        raise NotNumbers(key, spec, int(bad.sum()), values[bad].iloc[0])
    return numbers.astype("float64")


def measure_frame(index: FactIndex, spec: MeasureSpec, key: str, by_customer: bool) -> pd.DataFrame:
    """The rows a measure aggregates, with columns ``code`` (if by customer) or ``row`` (the facts' positions in
    the whole table, if not), dimensions, value, ts, order."""
    facts = index.facts
    for column in [spec.field, spec.order_by, *spec.dimensions]:
        if column is not None:
            index.require(key, column)
    rows = np.flatnonzero(index.rows(spec, key))

    def take(column: str) -> pd.Series:
        # Positional take keeps the column's dtype (tz-aware timestamps, categoricals) without object round trips.
        return facts[column].iloc[rows].reset_index(drop=True)

    data = {
        "value": take(spec.field) if spec.field else pd.Series(np.zeros(len(rows))),
        "ts": take("ActivityTimeStamp"),
        "order": take(spec.order_by) if spec.order_by else pd.Series(np.zeros(len(rows))),
    }
    if spec.field and spec.aggregate in ("sum", "average"):
        data["value"] = _numbers(data["value"], key, spec)
    if by_customer:
        data["code"] = pd.Series(index.codes[rows])
    else:
        data["row"] = pd.Series(index.positions[rows])
    for dim in spec.dimensions:
        data[dim] = take(dim)
    return pd.DataFrame(data)


def _finish(values: pd.Series, spec: MeasureSpec) -> tuple[pd.Series, int]:
    """Apply ``divide_by`` and ``null_value``; a result that is not a finite number becomes null.

    Returns the values and how many were not finite (a sum past the float range, infinities in the facts).
    ``null_value`` does not replace those: the customer had activity, the number is unknown, not absent.
    """
    values, infinite = _finish_rows(values, spec)
    return values, int(infinite.sum())


def _finish_rows(values: pd.Series, spec: MeasureSpec) -> tuple[pd.Series, np.ndarray]:
    """:func:`_finish`, with which of the values were not finite (per row, kept for the next run's reuse)."""
    if spec.divide_by:
        values = values / spec.divide_by
    infinite = pd.Series(False, index=values.index)
    if pd.api.types.is_float_dtype(values.dtype):
        infinite = pd.Series(np.isinf(values.to_numpy(dtype="float64", na_value=np.nan)), index=values.index)
    if spec.aggregate in COUNTING:
        values = values.fillna(0)
    elif spec.null_value is not None:
        values = values.fillna(spec.null_value)
    if infinite.any():
        values = values.mask(infinite)
    return values, infinite.to_numpy(bool)


def quantile_score(values: pd.Series, buckets: int, higher_is_better: bool) -> pd.Series:
    """1..buckets by rank across customers with a value (the best bucket is ``buckets``); nulls stay null."""
    ranks = pd.to_numeric(values, errors="coerce").rank(method="average", pct=True, ascending=higher_is_better)
    return np.ceil(ranks * buckets).clip(1, buckets)


@dataclass(frozen=True)
class MeasureResults:
    """Everything the measures stage produces."""

    #: CustomerId + one typed column per customer attribute measure, for every customer (sorted).
    attributes: pd.DataFrame
    #: Name -> table of a customer measure (CustomerId, dimensions..., Value).
    customer: dict[str, pd.DataFrame]
    #: Name -> table of a business measure (dimensions..., Value); one row when it has no dimensions.
    business: dict[str, pd.DataFrame]
    #: Name -> how many of the measure's results were not finite numbers and are published as null instead.
    non_finite: dict[str, int] = field(default_factory=dict)
    #: Sentences for the run: filters that matched none of their activities' rows (:mod:`.filters`).
    warnings: list[str] = field(default_factory=list)


#: The columns of :attr:`CustomerValues.raw` that hold, per aggregated attribute measure, whether the customer has
#: qualifying activity (scores rank only those) and whether the result was not a finite number.
QUALIFIED, NOT_FINITE = "qualified/", "non_finite/"
#: The column of a customer measure's table in :class:`CustomerValues` saying its Value was not a finite number.
ROW_NOT_FINITE = "__non_finite"


@dataclass(frozen=True)
class CustomerValues:
    """What each customer's own activities give, customer by customer: a customer's rows here depend on nothing
    but its activity rows (in table order), so they can be kept between runs and reused for a customer whose
    activity rows did not change.

    ``raw``: ``CustomerId`` (sorted, every customer) and per aggregated attribute measure its value after
    ``divide_by`` and ``null_value`` but before any score, with its :data:`QUALIFIED` and :data:`NOT_FINITE` flags.
    ``customer``: per customer measure its rows (``CustomerId``, dimensions, ``Value``, :data:`ROW_NOT_FINITE`),
    sorted by customer and dimensions. Scores, expressions and business measures (over all customers) are not
    here: :func:`finish_measures` computes them from these.
    """

    raw: pd.DataFrame
    customer: dict[str, pd.DataFrame]


def compute_measures(
    config: MeasuresConfig,
    customers: pd.Series,
    facts: pd.DataFrame | StoredFacts,
    as_of: dt.date,
    index: FactIndex | None = None,
) -> MeasureResults:
    """Compute every configured measure.

    Args:
        config: the measures section.
        customers: every CustomerId of the profile.
        facts: the typed activity facts (``activities.FACT_COLUMNS`` + semantic fields), as a frame or as the
            stored table (read in parts of whole customers; the results are the same).
        as_of: the run date; windows end at its end, later activities are ignored.
        index: a prepared :class:`FactIndex` to share masks with segment evaluation.
    """
    check = FilterCheck()
    values, business = collect_measures(config, customer_ids(customers), facts, as_of, index, check)
    return finish_measures(config, values, business, as_of, check.warnings())


def _expression_numbers(where: str, ref: str, values: pd.Series) -> np.ndarray:
    """The values of measure ``ref`` as numbers for the expression of ``measures.<where>``; a measure holding text
    (the product an argmax picks) is a clear error naming both, not a failed conversion deep in the run."""
    numbers, text = as_numbers(values)
    if text is not None:
        raise UserError(
            f"measures.{where}.expression reads {ref}, whose values are not numbers (e.g. {text!r}): an expression "
            "computes with numbers; refer to measures of numbers only"
        )
    return numbers.to_numpy(dtype="float64", na_value=np.nan)


def customer_ids(customers: pd.Series) -> pd.Index:
    """The distinct CustomerIds, sorted: the order of every per-customer result."""
    return pd.Index(sorted(customers.astype("string").dropna().unique()), dtype="string")


def collect_measures(
    config: MeasuresConfig,
    ids: pd.Index,
    facts: pd.DataFrame | StoredFacts,
    as_of: dt.date,
    index: FactIndex | None = None,
    check: FilterCheck | None = None,
) -> tuple[CustomerValues, dict[str, list[pd.DataFrame]]]:
    """One pass over the facts of the customers ``ids`` (sorted): their :class:`CustomerValues` and, per business
    measure aggregated from the facts, the rows of each part that decide it. ``check`` notes what the filters match."""
    parts = _Parts.collect(config, fact_parts(index or facts, ids, run_end(as_of), fact_columns(config)), check)
    raw = pd.DataFrame({"CustomerId": pd.Series(ids.to_numpy(), dtype="string")})
    for name in _attribute_order(config):
        spec = config.attributes[name]
        values, infinite = _finish_rows(_joined(parts.attributes[name]), spec)
        raw[name] = values.reset_index(drop=True)
        raw[QUALIFIED + name] = np.concatenate(parts.qualified[name])
        raw[NOT_FINITE + name] = infinite
    customer_tables = {}
    for name, spec in sorted(config.customer.items()):
        table = _joined(parts.customer[name])
        table["Value"], table[ROW_NOT_FINITE] = _finish_rows(table["Value"], spec)
        customer_tables[name] = table.sort_values(["CustomerId", *spec.dimensions], kind="stable").reset_index(
            drop=True
        )
    return CustomerValues(raw, customer_tables), parts.business


def finish_measures(
    config: MeasuresConfig,
    values: CustomerValues,
    business: dict[str, list[pd.DataFrame]],
    as_of: dt.date,
    warnings: list[str] | None = None,
) -> MeasureResults:
    """Every measure from the customers' values (all customers) and the business measures' deciding rows: scores
    rank across customers, expressions combine the attributes, business measures aggregate over everyone.
    ``warnings`` are handed on in the results."""
    raw = values.raw
    n = len(raw)
    computed: dict[str, np.ndarray | pd.Series] = {}
    non_finite: dict[str, int] = {}

    def attribute(name: str) -> pd.Series:
        if name in computed:
            return computed[name]
        spec = config.attributes[name]
        scored = pd.Series(True, index=range(n))
        if spec.expression is not None:
            node = parse(spec.expression)
            refs = {ref: _expression_numbers(f"attributes.{name}", ref, attribute(ref)) for ref in spec.references()}
            out = pd.Series(evaluate(node, refs) * np.ones(n), dtype="float64")
            out, non_finite[name] = _finish(out, spec)
        else:
            out = raw[name].reset_index(drop=True)
            non_finite[name] = int(raw[NOT_FINITE + name].sum())
            # Scores rank the customers who have qualifying activity; the others get no score (not the lowest).
            scored = raw[QUALIFIED + name].reset_index(drop=True).astype(bool)
        if spec.score:
            out = quantile_score(out.where(scored), spec.score, spec.higher_is_better)
            if spec.null_value is not None:
                out = out.fillna(spec.null_value)
        computed[name] = out
        return out

    wide = pd.DataFrame({"CustomerId": raw["CustomerId"].to_numpy()})
    wide["CustomerId"] = wide["CustomerId"].astype("string")
    for name in sorted(config.attributes):
        wide[name] = attribute(name).to_numpy()

    customer_tables = {}
    for name, table in values.customer.items():
        non_finite[name] = int(table[ROW_NOT_FINITE].sum())
        customer_tables[name] = table.drop(columns=[ROW_NOT_FINITE])
    business_tables = _business_tables(config, business, wide, run_end(as_of), non_finite)
    return MeasureResults(
        attributes=wide,
        customer=customer_tables,
        business=business_tables,
        non_finite={name: count for name, count in sorted(non_finite.items()) if count},
        warnings=list(warnings or []),
    )


def _joined(pieces: list):
    """The pieces of the parts put end to end (in customer order); empty pieces are left out when others are not,
    so that their placeholder types do not change the column types."""
    kept = [p for p in pieces if len(p)] or pieces[:1]
    return pd.concat(kept, ignore_index=True) if len(kept) > 1 else kept[0].reset_index(drop=True)


def _attribute_order(config: MeasuresConfig) -> list[str]:
    """The aggregated (not expression) attribute measures in the order they are first needed."""
    order: list[str] = []

    def visit(name: str) -> None:
        spec = config.attributes[name]
        if spec.expression is not None:
            for ref in spec.references():
                visit(ref)
        elif name not in order:
            order.append(name)

    for name in sorted(config.attributes):
        visit(name)
    return order


def _from_facts(config: MeasuresConfig) -> list[str]:
    """The business measures aggregated from the facts (not from another measure, not expressions)."""
    return [n for n, s in sorted(config.business.items()) if s.expression is None and s.of_measure is None]


@dataclass
class _Parts:
    """What every part of the facts gives each measure: per-customer values of the part's customers, and for a
    business measure the rows of the part that decide it (:func:`_reduce`)."""

    attributes: dict[str, list[pd.Series]] = field(default_factory=dict)
    qualified: dict[str, list[np.ndarray]] = field(default_factory=dict)
    customer: dict[str, list[pd.DataFrame]] = field(default_factory=dict)
    business: dict[str, list[pd.DataFrame]] = field(default_factory=dict)

    @classmethod
    def collect(cls, config: MeasuresConfig, parts, check: FilterCheck | None = None) -> _Parts:
        """Go through the parts once (``check`` notes what the filters match in each). A sum over values that are
        not numbers is refused after the last part, with the count over all of them."""
        out, refused = cls(), {}
        attributes = _attribute_order(config)
        for index in parts:
            for name in attributes:
                out._measure(refused, out._attribute, index, name, config.attributes[name])
            for name, spec in sorted(config.customer.items()):
                out._measure(refused, out._customer, index, name, spec)
            for name in _from_facts(config):
                out._measure(refused, out._business, index, name, config.business[name])
            if check is not None:
                check.observe(index, config)
        if refused:
            raise next(iter(refused.values()))
        return out

    @staticmethod
    def _measure(refused: dict, compute, index: FactIndex, name: str, spec: MeasureSpec) -> None:
        try:
            compute(index, name, spec)
        except NotNumbers as exc:
            refused[exc.key] = refused[exc.key].plus(exc) if exc.key in refused else exc

    def _attribute(self, index: FactIndex, name: str, spec: MeasureSpec) -> None:
        n = len(index.customers)
        frame = measure_frame(index, spec, f"measures.attributes.{name}", by_customer=True)
        values = aggregate(frame, ["code"], spec, index.end).reindex(range(n)).reset_index(drop=True)
        self.attributes.setdefault(name, []).append(values)
        self.qualified.setdefault(name, []).append(np.bincount(frame["code"].to_numpy(), minlength=n) > 0)

    def _customer(self, index: FactIndex, name: str, spec: MeasureSpec) -> None:
        frame = measure_frame(index, spec, f"measures.customer.{name}", by_customer=True)
        table = aggregate(frame, ["code", *spec.dimensions], spec, index.end).rename("Value").reset_index()
        ids = index.customers.to_numpy()[table.pop("code").to_numpy()]
        table.insert(0, "CustomerId", pd.Series(ids, dtype="string"))
        self.customer.setdefault(name, []).append(table)

    def _business(self, index: FactIndex, name: str, spec: MeasureSpec) -> None:
        frame = measure_frame(index, spec, f"measures.business.{name}", by_customer=False)
        if not spec.dimensions:
            frame["all"] = 0
        self.business.setdefault(name, []).append(_reduce(frame, spec.dimensions or ["all"], spec, index.end))


def _reduce(frame: pd.DataFrame, keys: list[str], spec: MeasureSpec, end: pd.Timestamp) -> pd.DataFrame:
    """The rows of one part that decide a business measure: what :func:`_combine` needs of the part, exactly.

    Sums and averages keep every row (value, keys, position): a float sum depends on the order of addition, so it
    is added in the table's order over all parts. Every other aggregate keeps a row or two per group.
    """
    how = spec.aggregate
    if how in ("sum", "average"):
        return frame[[*keys, "value", "row"]]
    if how == "count":
        return frame.groupby(keys, sort=True, observed=True).size().rename("value").reset_index()
    if how == "count_distinct":
        return frame[[*keys, "value"]].drop_duplicates()
    if how in ("min", "max"):
        return aggregate(frame, keys, spec, end).rename("value").reset_index()
    if how in _DAYS:
        stamps = frame.groupby(keys, sort=True, observed=True)["ts"]
        return pd.concat([stamps.min(), stamps.max()]).rename("ts").reset_index()
    return _winners(frame, keys, how)


def _combine(pieces: list[pd.DataFrame], keys: list[str], spec: MeasureSpec, end: pd.Timestamp) -> pd.Series:
    """A business measure's value per group from every part's :func:`_reduce` rows."""
    frame = _joined(pieces)
    if "row" in frame.columns and len(pieces) > 1:
        # Back in the table's order: sums add in it, and first/last break ties by it.
        frame = frame.sort_values("row", kind="stable")
    if spec.aggregate == "count":
        return frame.groupby(keys, sort=True, observed=True)["value"].sum().astype("float64")
    return aggregate(frame, keys, spec, end)


def _business_tables(
    config: MeasuresConfig,
    parts: dict[str, list[pd.DataFrame]],
    wide: pd.DataFrame,
    end: pd.Timestamp,
    non_finite: dict[str, int],
) -> dict[str, pd.DataFrame]:
    """The business measures, each computed once: expressions read the scalars of the measures they name."""
    business_tables: dict[str, pd.DataFrame] = {}
    scalars: dict[str, float] = {}

    def business(name: str) -> pd.DataFrame:
        if name in business_tables:
            return business_tables[name]
        spec = config.business[name]
        if spec.expression is not None:
            for ref in spec.references():
                business(ref)
            value = evaluate(parse(spec.expression), {r: scalars.get(r, np.nan) for r in spec.references()})
            series, non_finite[name] = _finish(pd.Series([value], dtype="float64"), spec)
            table = pd.DataFrame({"Value": series.to_numpy()})
        elif spec.of_measure is not None:
            frame = pd.DataFrame({"value": wide[spec.of_measure], "ts": pd.NaT, "order": 0, "all": 0})
            frame = frame[frame["value"].notna()]
            table, non_finite[name] = _scalar_table(aggregate(frame, ["all"], spec, end), spec)
        elif spec.dimensions:
            series, non_finite[name] = _finish(_combine(parts[name], spec.dimensions, spec, end), spec)
            table = series.rename("Value").reset_index()
        else:
            table, non_finite[name] = _scalar_table(_combine(parts[name], ["all"], spec, end), spec)
        if not spec.dimensions and len(table) == 1:
            scalars[name] = pd.to_numeric(table["Value"], errors="coerce").iloc[0]
        business_tables[name] = table.reset_index(drop=True)
        return business_tables[name]

    for name in sorted(config.business):
        business(name)
    return business_tables


def _scalar_table(values: pd.Series, spec: MeasureSpec) -> tuple[pd.DataFrame, int]:
    """The one-row table of a business measure without dimensions (``values`` per group ``all``)."""
    series, non_finite = _finish(values.reindex([0]), spec)
    return pd.DataFrame({"Value": series.to_numpy()}), non_finite


def customer_measure_table(attributes: pd.DataFrame) -> pd.DataFrame:
    """CustomerMeasure: one row per customer, ``Measures`` = JSON of every attribute measure (sorted keys)."""
    names = {c: c for c in attributes.columns if c != "CustomerId"}
    content = pd.DataFrame(
        {"CustomerId": attributes["CustomerId"].astype("string"), "Measures": json_objects(attributes, names)}
    )
    table = with_ids("CustomerMeasure", content)
    return table.sort_values("CustomerId", kind="stable").reset_index(drop=True)


def distribution(values: pd.Series, non_finite: int = 0) -> dict:
    """Count, nulls, min, mean, median and max of a measure (numbers) or count and distinct values (others).

    ``non_finite``: how many of the nulls were results that were not finite numbers (see
    :attr:`MeasureResults.non_finite`); reported only when there were any.
    """
    present = values.dropna()
    out = {"customers": int(len(values)), "nulls": int(values.isna().sum())}
    if non_finite:
        out["non_finite"] = int(non_finite)
    if pd.api.types.is_numeric_dtype(values.dtype) and not pd.api.types.is_bool_dtype(values.dtype):
        if len(present):
            out.update(
                min=float(present.min()),
                mean=round(float(present.mean()), 6),
                median=float(present.median()),
                max=float(present.max()),
            )
    else:
        out["distinct"] = int(present.nunique())
    return out
