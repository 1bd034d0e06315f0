"""Measure filters that match none of their activities' rows.

A filter value written in another case than the data holds (``channel = Web`` where the data says ``web``) does not
fail: the measure reads no row and every customer gets 0. :class:`FilterCheck` notes, while the measures go through
the parts of the facts, whether each filter matched any row of its measure's activities, and while it has not, the
values its field holds there; a filter that matched none is a warning naming the measure, the filter, those values
and the near miss among them.

Filters on dates, and the date operators, are not judged: that a window or a date matches nothing depends on the run
date and the data's age, not on how a value is written.

An incremental run reads only the changed customers' activities, where a filter may well match nothing; a filter
that matched none of them is judged again over the whole facts table (one DuckDB aggregation of that field's
distinct values among the measure's activities), so the warning says what a full run would say.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds

from ci_pipeline.config.base import did_you_mean
from ci_pipeline.config.measures import COUNTING, MeasuresConfig, MeasureSpec
from ci_pipeline.grammar.conditions import Condition
from ci_pipeline.measures.conditions import column_kind, condition_mask
from ci_pipeline.measures.facts import FactIndex
from ci_pipeline.sql_text import literal, quoted

#: Operators that compare with a date or the run date.
_DATE_OPS = ("before", "after", "in_last")
#: Most distinct values kept per filter while it has matched nothing: those the warning names and searches.
MAX_SEEN = 1000
#: Values the warning names.
SHOWN = 8


@dataclass
class _Filter:
    """One filter of one measure, over the parts seen so far."""

    measure: str
    spec: MeasureSpec
    condition: Condition
    rows: int = 0
    matched: bool = False
    kind: str = "text"
    #: The field's distinct values among the activities' rows (numbers: each part's smallest and largest).
    seen: list = field(default_factory=list)

    def add(self, values: pd.Series, rows: np.ndarray, matched: np.ndarray, counts: np.ndarray | None = None) -> None:
        """Take one part: ``values`` of the field, ``rows`` of the measure's activities among them, ``matched`` the
        rows the filter keeps; ``counts``: how many activity rows each value stands for (default one each)."""
        self.rows += int(rows.sum() if counts is None else counts[rows].sum())
        if self.matched:
            return
        self.matched = bool((rows & matched).any())
        self.kind = column_kind(values)
        present = values[rows].dropna()
        if self.matched or not len(present):
            return
        if self.kind == "number":
            self.seen += [present.min(), present.max()]
        elif len(self.seen) < MAX_SEEN:
            self.seen = list(dict.fromkeys([*self.seen, *pd.unique(present)[:MAX_SEEN]]))[:MAX_SEEN]

    def warning(self, where: str) -> str:
        cond, spec = self.condition, self.spec
        activities = ", ".join(spec.activity)
        written = f"{cond.field} {cond.op}" + ("" if cond.value is None else f" {cond.value!r}")
        gives = "is 0" if spec.aggregate in COUNTING else "is empty (null)"
        if spec.null_value is not None and spec.aggregate not in COUNTING:
            gives = f"is {spec.null_value:g}"
        # A business measure has one value (per dimension), not one per customer.
        gives += "" if where.startswith("measures.business.") else " for every customer"
        text = (
            f"{where}: {written} matches none of the {self.rows:,} rows of {activities}, so {self.measure} {gives}; "
            f"{cond.field} holds {self._held()} there"
        )
        return text + self._near() + " (values are compared as written)"

    def _held(self) -> str:
        if not self.seen:
            return "no value"
        if self.kind == "number":
            return f"numbers from {min(self.seen):g} to {max(self.seen):g}"
        values = sorted(self.seen, key=str)
        shown = ", ".join(repr(v) for v in values[:SHOWN])
        more = len(values) - SHOWN
        return shown + (f" and {more:,}{'+' if len(values) >= MAX_SEEN else ''} more" if more > 0 else "")

    def _near(self) -> str:
        if self.kind != "text":
            return ""
        wanted = self.condition.value if isinstance(self.condition.value, list) else [self.condition.value]
        held = [str(v) for v in self.seen]
        return next((hint for v in wanted if (hint := did_you_mean(str(v), held))), "")


@dataclass
class FilterCheck:
    """What every measure filter matched over the parts of the facts a computation went through."""

    filters: dict[str, _Filter] = field(default_factory=dict)

    def observe(self, index: FactIndex, config: MeasuresConfig) -> None:
        """Note what the filters of the measures aggregated from the facts match in one part (the measures have
        computed these masks already: they are cached in ``index``)."""
        for key, name, spec in _filtered(config):
            rows = index.activity_mask(tuple(spec.activity))
            for i, cond in enumerate(spec.where):
                where = f"{key}.where[{i}]"
                if cond.op in _DATE_OPS or cond.field not in index.facts.columns:
                    continue
                values = index.facts[cond.field]
                if column_kind(values) == "date":
                    continue
                matched = index.condition(cond.field, cond.op, cond.value, where)
                self.filters.setdefault(where, _Filter(name, spec, cond)).add(values, rows, matched)

    def confirm(self, dataset: ds.Dataset, customers: pd.Index, end: pd.Timestamp) -> None:
        """Judge the filters that matched nothing so far over the whole stored table (the rows of ``customers``
        before ``end``, as the parts hold them), from the distinct values of their field among their measure's
        activities."""
        with duckdb.connect() as con:
            con.register("facts", dataset)
            con.register("customers", pa.table({"CustomerId": pa.array(customers.to_numpy(), pa.string())}))
            for where, found in self.filters.items():
                if found.matched:
                    continue
                column = found.condition.field
                distinct = _distinct(con, dataset.schema, found.spec, column, end)
                again = _Filter(found.measure, found.spec, found.condition)
                mask = condition_mask(
                    distinct[column], found.condition.op, found.condition.value, now=end, key=where, field=column
                )
                again.add(distinct[column], np.ones(len(distinct), dtype=bool), mask, distinct["rows"].to_numpy())
                self.filters[where] = again

    def warnings(self) -> list[str]:
        """One sentence per filter that matched none of the rows of its measure's activities (there being some)."""
        return [f.warning(where) for where, f in sorted(self.filters.items()) if f.rows and not f.matched]


def _filtered(config: MeasuresConfig):
    """(key, name, spec) of every measure aggregated from the facts with filters."""
    for kind in ("attributes", "customer", "business"):
        for name, spec in sorted(getattr(config, kind).items()):
            if spec.where and spec.aggregate is not None and spec.of_measure is None:
                yield f"measures.{kind}.{name}", name, spec


def _distinct(con, schema: pa.Schema, spec: MeasureSpec, column: str, end: pd.Timestamp) -> pd.DataFrame:
    """The distinct values of ``column`` among the rows of the measure's activities before ``end`` of the registered
    ``customers``, with how many rows hold each, typed as the parts of the facts give them."""

    def text(name: str) -> str:
        # A dictionary encoded column is compared as its values (its codes differ from file to file).
        return f"CAST({quoted(name)} AS VARCHAR)" if pa.types.is_dictionary(schema.field(name).type) else quoted(name)

    listed = ", ".join(literal(a) for a in spec.activity)
    of_activity = " OR ".join(f"{text(c)} IN ({listed})" for c in ("Activity", "ActivityType") if c in schema.names)
    query = (
        f"SELECT {text(column)} AS {quoted(column)}, count(*) AS rows FROM facts WHERE ({of_activity}) "
        # In nanoseconds since the epoch, whatever the unit the timestamps are stored in (as the affinities read them).
        f"AND epoch_ns({quoted('ActivityTimeStamp')}) < {end.tz_convert('UTC').as_unit('ns').value} "
        f"AND {text('CustomerId')} IN (SELECT CustomerId FROM customers) GROUP BY 1"
    )
    return con.sql(query).to_arrow_table().to_pandas()
