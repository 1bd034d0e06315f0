"""Compute every configured measure with vectorised group-bys over the activity facts."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ci_pipeline.activities.jsoncols import json_objects
from ci_pipeline.config.activities import FACT_COLUMNS
from ci_pipeline.config.measures import COUNTING, MeasuresConfig, MeasureSpec, Window
from ci_pipeline.errors import UserError
from ci_pipeline.grammar.expression import parse
from ci_pipeline.measures.conditions import condition_mask, period_start
from ci_pipeline.measures.expression import evaluate
from ci_pipeline.outputs import with_ids

_DAY = pd.Timedelta(days=1)


def run_end(as_of: dt.date) -> pd.Timestamp:
    """The exclusive end of the run date: midnight UTC after ``as_of``."""
    return pd.Timestamp(as_of, tz="UTC") + _DAY


def window_bounds(window: Window, end: pd.Timestamp) -> tuple[pd.Timestamp, pd.Timestamp]:
    """[start, end) of a window relative to the run date's exclusive end."""
    if window.last is not None:
        return period_start(end, f"{window.last} {window.unit}"), end
    day = end - _DAY
    quarter_start = pd.Timestamp(dt.date(day.year, 3 * ((day.month - 1) // 3) + 1, 1), tz="UTC")
    month_start = pd.Timestamp(dt.date(day.year, day.month, 1), tz="UTC")
    year_start = pd.Timestamp(dt.date(day.year, 1, 1), tz="UTC")
    return {
        "this_month": (month_start, end),
        "this_quarter": (quarter_start, end),
        "this_year": (year_start, end),
        "last_month": (month_start - pd.DateOffset(months=1), month_start),
        "last_quarter": (quarter_start - pd.DateOffset(months=3), quarter_start),
        "last_year": (year_start - pd.DateOffset(years=1), year_start),
    }[window.period]


@dataclass
class FactIndex:
    """Activity facts prepared once for many measures and segment conditions: customer codes, cached masks."""

    facts: pd.DataFrame
    customers: pd.Index
    end: pd.Timestamp
    codes: np.ndarray = field(init=False)
    _masks: dict = field(default_factory=dict, init=False)

    def __post_init__(self):
        stamps = pd.to_datetime(self.facts["ActivityTimeStamp"], utc=True)
        # Activities after the run date are not counted: a re-run for an earlier date gives that date's values.
        keep = (stamps < self.end).to_numpy()
        # Factorise the (many) activity rows once, then look the (fewer) distinct ids up among the customers.
        row_codes, uniques = pd.factorize(self.facts["CustomerId"])
        lookup = self.customers.get_indexer(pd.Index(uniques).astype("string"))
        codes = np.where(row_codes >= 0, lookup[row_codes], -1)
        keep = keep & (codes >= 0)
        if keep.all():
            self.facts = self.facts.reset_index(drop=True)
            self.facts["ActivityTimeStamp"] = stamps.reset_index(drop=True)
        else:
            self.facts = self.facts.loc[keep].reset_index(drop=True)
            self.facts["ActivityTimeStamp"] = stamps[keep].reset_index(drop=True)
        self.codes = codes[keep].astype(np.int64)

    def activity_mask(self, names: tuple[str, ...]) -> np.ndarray:
        """Rows of the named activities (activity names, or activity types)."""
        key = ("activity", names)
        if key not in self._masks:
            mask = np.zeros(len(self.facts), dtype=bool)
            for column in ("Activity", "ActivityType"):
                codes, uniques = self._factorized(column)
                wanted = np.flatnonzero(pd.Index(uniques).astype(str).isin(names))
                if len(wanted):
                    mask |= np.isin(codes, wanted)
            self._masks[key] = mask
        return self._masks[key]

    def _factorized(self, column: str) -> tuple[np.ndarray, pd.Index]:
        # Few distinct names over many rows: compare small integer codes instead of strings.
        key = ("codes", column)
        if key not in self._masks:
            self._masks[key] = pd.factorize(self.facts[column])
        return self._masks[key]

    def window_mask(self, start: pd.Timestamp, end: pd.Timestamp) -> np.ndarray:
        key = ("window", start, end)
        if key not in self._masks:
            stamps = self.facts["ActivityTimeStamp"]
            self._masks[key] = ((stamps >= start) & (stamps < end)).to_numpy(dtype=bool)
        return self._masks[key]

    def condition(self, field_name: str, op: str, value, key: str) -> np.ndarray:
        cache = ("cond", field_name, op, repr(value))
        if cache not in self._masks:
            if field_name not in self.facts.columns:
                raise _unknown_field(key, field_name, self.facts.columns)
            self._masks[cache] = condition_mask(
                self.facts[field_name], op, value, now=self.end, key=key, field=field_name
            )
        return self._masks[cache]

    def rows(self, spec: MeasureSpec, key: str) -> np.ndarray:
        """Rows a measure reads: its activities, filters and window."""
        mask = self.activity_mask(tuple(spec.activity))
        for i, cond in enumerate(spec.where):
            mask = mask & self.condition(cond.field, cond.op, cond.value, f"{key}.where[{i}]")
        if spec.window is not None:
            mask = mask & self.window_mask(*window_bounds(spec.window, self.end))
        return mask


def fact_columns(config: MeasuresConfig) -> list[str]:
    """The activity fact columns the measures read: the fixed ones and every field a measure names (aggregated,
    ordered by, grouped by or filtered on), in a stable order. Reading only these keeps the stage's memory to what
    it uses."""
    named = []
    for spec in [*config.attributes.values(), *config.customer.values(), *config.business.values()]:
        named += [spec.field, spec.order_by, *spec.dimensions, *(c.field for c in spec.where)]
    return list(dict.fromkeys([*FACT_COLUMNS, *(n for n in named if n)]))


def _unknown_field(key: str, name: str, columns) -> Exception:
    return UserError(f"{key}: unknown field {name!r}; the activity data has {', '.join(map(str, columns))}")


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
    if how in ("days_since_latest", "days_since_earliest", "span_days"):
        stamps = grouped["ts"]
        last_day = end - _DAY
        if how == "days_since_latest":
            delta = last_day.normalize() - stamps.max().dt.normalize()
        elif how == "days_since_earliest":
            delta = last_day.normalize() - stamps.min().dt.normalize()
        else:
            delta = stamps.max().dt.normalize() - stamps.min().dt.normalize()
        return (delta / _DAY).astype("float64")
    # first/last/argmax/argmin: the value of the row that wins, ties broken by row order (ActivityId order).
    pick = frame.dropna(subset=["order"] if how in ("argmax", "argmin") else ["ts"])
    sort_col = "order" if how in ("argmax", "argmin") else "ts"
    ascending = how in ("first", "argmin")
    ordered = pick.sort_values(sort_col, ascending=ascending, kind="stable")
    winners = ordered.groupby(keys, sort=True, observed=True).head(1).set_index(keys)["value"]
    return winners.sort_index()


def _numbers(values: pd.Series, key: str, spec: MeasureSpec) -> pd.Series:
    """The values a sum or an average adds, as numbers: a text column of numbers (a CSV read without column
    types) is read as numbers, since pandas would join the strings; a value that is not a number is refused."""
    if pd.api.types.is_numeric_dtype(values.dtype) and not pd.api.types.is_bool_dtype(values.dtype):
        return values
    numbers = pd.to_numeric(values.astype("string").str.strip(), errors="coerce")
    bad = values.notna() & numbers.isna()
    if bad.any():
        raise UserError(
            f"{key}: {spec.aggregate} needs numbers, but field {spec.field!r} holds {int(bad.sum())} value(s) that "
            f"are not, e.g. {values[bad].iloc[0]!r}; give the column a numeric type (double or int64) in its "
            "source's columns, or use an aggregate that does not add (count, first, last)"
        )
    return numbers.astype("float64")


def measure_frame(index: FactIndex, spec: MeasureSpec, key: str, by_customer: bool) -> pd.DataFrame:
    """The rows a measure aggregates, with columns ``code`` (if by customer), dimensions, value, ts, order."""
    facts = index.facts
    for column in [spec.field, spec.order_by, *spec.dimensions]:
        if column is not None and column not in facts.columns:
            raise _unknown_field(key, column, facts.columns)
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
    for dim in spec.dimensions:
        data[dim] = take(dim)
    return pd.DataFrame(data)


def _finish(values: pd.Series, spec: MeasureSpec) -> tuple[pd.Series, int]:
    """Apply ``divide_by`` and ``null_value``; a result that is not a finite number becomes null.

    Returns the values and how many were not finite (a sum past the float range, infinities in the facts).
    ``null_value`` does not replace those: the customer had activity, the number is unknown, not absent.
    """
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
    return values, int(infinite.sum())


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


def compute_measures(
    config: MeasuresConfig, customers: pd.Series, facts: pd.DataFrame, as_of: dt.date, index: FactIndex | None = None
) -> MeasureResults:
    """Compute every configured measure.

    Args:
        config: the measures section.
        customers: every CustomerId of the profile.
        facts: the typed activity facts (``activities.FACT_COLUMNS`` + semantic fields).
        as_of: the run date; windows end at its end, later activities are ignored.
        index: a prepared :class:`FactIndex` to share masks with segment evaluation.
    """
    ids = pd.Index(sorted(customers.astype("string").dropna().unique()), dtype="string")
    index = index or FactIndex(facts, ids, run_end(as_of))
    n = len(ids)
    values: dict[str, np.ndarray | pd.Series] = {}
    non_finite: dict[str, int] = {}

    def attribute(name: str) -> pd.Series:
        if name in values:
            return values[name]
        spec = config.attributes[name]
        key = f"measures.attributes.{name}"
        scored = pd.Series(True, index=range(n))
        if spec.expression is not None:
            node = parse(spec.expression)
            refs = {ref: attribute(ref).to_numpy(dtype="float64", na_value=np.nan) for ref in spec.references()}
            out = pd.Series(evaluate(node, refs) * np.ones(n), dtype="float64")
            out, non_finite[name] = _finish(out, spec)
        else:
            frame = measure_frame(index, spec, key, by_customer=True)
            out = aggregate(frame, ["code"], spec, index.end).reindex(range(n))
            out, non_finite[name] = _finish(out.reset_index(drop=True), spec)
            # Scores rank the customers who have qualifying activity; the others get no score (not the lowest).
            scored = pd.Series(np.bincount(frame["code"].to_numpy(), minlength=n) > 0)
        if spec.score:
            out = quantile_score(out.where(scored), spec.score, spec.higher_is_better)
            if spec.null_value is not None:
                out = out.fillna(spec.null_value)
        values[name] = out
        return out

    wide = pd.DataFrame({"CustomerId": ids.to_numpy()})
    wide["CustomerId"] = wide["CustomerId"].astype("string")
    for name in sorted(config.attributes):
        wide[name] = attribute(name).to_numpy()

    customer_tables = _customer_tables(config, index, ids, non_finite)
    business_tables = _business_tables(config, index, wide, non_finite)
    return MeasureResults(
        attributes=wide,
        customer=customer_tables,
        business=business_tables,
        non_finite={name: count for name, count in sorted(non_finite.items()) if count},
    )


def _customer_tables(
    config: MeasuresConfig, index: FactIndex, ids: pd.Index, non_finite: dict[str, int]
) -> dict[str, pd.DataFrame]:
    """The customer measures: one table per measure, a row per customer and dimension value."""
    tables = {}
    for name, spec in sorted(config.customer.items()):
        frame = measure_frame(index, spec, f"measures.customer.{name}", by_customer=True)
        series, non_finite[name] = _finish(aggregate(frame, ["code", *spec.dimensions], spec, index.end), spec)
        table = series.rename("Value").reset_index()
        table.insert(0, "CustomerId", pd.Series(ids.to_numpy()[table.pop("code").to_numpy()], dtype="string"))
        tables[name] = table.sort_values(["CustomerId", *spec.dimensions], kind="stable").reset_index(drop=True)
    return tables


def _business_tables(
    config: MeasuresConfig, index: FactIndex, wide: pd.DataFrame, non_finite: dict[str, int]
) -> dict[str, pd.DataFrame]:
    """The business measures, each computed once: expressions read the scalars of the measures they name."""
    business_tables: dict[str, pd.DataFrame] = {}
    scalars: dict[str, float] = {}

    def business(name: str) -> pd.DataFrame:
        if name in business_tables:
            return business_tables[name]
        spec = config.business[name]
        key = f"measures.business.{name}"
        if spec.expression is not None:
            for ref in spec.references():
                business(ref)
            value = evaluate(parse(spec.expression), {r: scalars.get(r, np.nan) for r in spec.references()})
            series, non_finite[name] = _finish(pd.Series([value], dtype="float64"), spec)
            table = pd.DataFrame({"Value": series.to_numpy()})
        elif spec.of_measure is not None:
            frame = pd.DataFrame({"value": wide[spec.of_measure], "ts": pd.NaT, "order": 0, "all": 0})
            frame = frame[frame["value"].notna()]
            table, non_finite[name] = _scalar_table(frame, spec, index.end)
        else:
            frame = measure_frame(index, spec, key, by_customer=False)
            if spec.dimensions:
                series, non_finite[name] = _finish(aggregate(frame, spec.dimensions, spec, index.end), spec)
                table = series.rename("Value").reset_index()
            else:
                frame["all"] = 0
                table, non_finite[name] = _scalar_table(frame, spec, index.end)
        if not spec.dimensions and len(table) == 1:
            scalars[name] = pd.to_numeric(table["Value"], errors="coerce").iloc[0]
        business_tables[name] = table.reset_index(drop=True)
        return business_tables[name]

    for name in sorted(config.business):
        business(name)
    return business_tables


def _scalar_table(frame: pd.DataFrame, spec: MeasureSpec, end: pd.Timestamp) -> tuple[pd.DataFrame, int]:
    series, non_finite = _finish(aggregate(frame, ["all"], spec, end).reindex([0]), spec)
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
