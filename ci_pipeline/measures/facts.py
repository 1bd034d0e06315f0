"""The activity facts as measures and segment conditions read them: prepared once per part of whole customers.

A stored facts table can be far larger than memory (20 activities a customer); :class:`StoredFacts` reads it in
record batches and hands it over in parts that each hold every activity of a range of customers, so every
per-customer aggregate is computed over a part exactly as over the whole table, and what is held at once is one
part plus per-customer results.
"""

from __future__ import annotations

import datetime as dt
import math
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds

from ci_pipeline.config.base import did_you_mean
from ci_pipeline.config.measures import MeasureSpec, Window
from ci_pipeline.errors import UserError
from ci_pipeline.measures.conditions import condition_mask, period_start

_DAY = pd.Timedelta(days=1)
#: Activity rows per part of a stored facts table: a part in pandas takes about 0.3 to 0.5 KB a row with a dozen
#: columns, so about 0.5 GB, whatever the size of the table.
ROWS_PER_PART = 1_000_000
#: The fact columns an index reads itself: whose activity, which one, of which type, when.
INDEXED = ["CustomerId", "Activity", "ActivityType", "ActivityTimeStamp"]
#: The column that carries a fact's position in the stored table through its part (ties go to the earlier row).
ROW = "__row"


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


def unknown_field(key: str, name: str, columns) -> Exception:
    """The error for a measure or condition naming a field the activity data does not have."""
    have = [str(c) for c in columns]
    return UserError(
        f"{key}: unknown field {name!r}{did_you_mean(name, have)}; the activity data has {', '.join(have)}"
    )


@dataclass
class FactIndex:
    """Activity facts prepared once for many measures and segment conditions: customer codes, cached masks.

    ``customers`` are the customers the facts belong to (sorted); rows of other customers and rows after ``end``
    are dropped. ``fields`` are the columns of the activity data (for a part read with chosen columns, every
    column of the stored table), named by the error for an unknown field. ``positions`` are the rows' positions
    in the whole table (default: their positions in ``facts``).
    """

    facts: pd.DataFrame
    customers: pd.Index
    end: pd.Timestamp
    fields: list[str] | None = None
    positions: np.ndarray | None = None
    codes: np.ndarray = field(init=False)
    _masks: dict = field(default_factory=dict, init=False)

    def __post_init__(self):
        if self.fields is None:
            self.fields = list(self.facts.columns)
        positions = np.arange(len(self.facts)) if self.positions is None else np.asarray(self.positions)
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
        self.positions = positions[keep].astype(np.int64)

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
        """Rows in [start, end)."""
        key = ("window", start, end)
        if key not in self._masks:
            stamps = self.facts["ActivityTimeStamp"]
            self._masks[key] = ((stamps >= start) & (stamps < end)).to_numpy(dtype=bool)
        return self._masks[key]

    def require(self, key: str, name: str) -> None:
        """Refuse a field the activity data does not have, naming the key and the fields there are."""
        if name not in self.fields:
            raise unknown_field(key, name, self.fields)

    def condition(self, field_name: str, op: str, value, key: str) -> np.ndarray:
        """Rows where ``field_name op value`` holds (see :func:`condition_mask`)."""
        cache = ("cond", field_name, op, repr(value))
        if cache not in self._masks:
            self.require(key, field_name)
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


@dataclass(frozen=True)
class StoredFacts:
    """The activity facts as a stored table (an Arrow dataset over its Parquet file), read in parts of whole
    customers: as many equal ranges of customers as make about ``rows_per_part`` activity rows each."""

    dataset: ds.Dataset
    rows_per_part: int = ROWS_PER_PART
    #: Only the rows this filter keeps (e.g. some customers' rows) are read; None: every row.
    where: pc.Expression | None = None

    def parts(self, customers: pd.Index, end: pd.Timestamp, columns: list[str]) -> Iterator[FactIndex]:
        """The facts in parts over consecutive ranges of ``customers`` (sorted), in order, covering them all.

        Only ``columns`` are read (those the table has: a missing one is refused by the part with every column of
        the table), and only the rows ``where`` keeps. Within a part the rows keep the table's order. One part is
        the whole table read at once; more are written first, batch by batch, to Arrow files in a temporary folder,
        one per part. Dictionary encoded columns are read as their values in either case, so that every part has
        the same column types.
        """
        fields = list(self.dataset.schema.names)
        wanted = [c for c in dict.fromkeys(columns) if c in fields]
        count = math.ceil(self.dataset.count_rows(filter=self.where) / max(1, self.rows_per_part))
        count = max(1, min(count, len(customers)))
        if count == 1:
            table = self.dataset.to_table(columns=wanted, filter=self.where)
            frame = table.cast(_plain(table.schema)).to_pandas()
            yield FactIndex(frame, customers, end, fields)
            return
        bounds = np.linspace(0, len(customers), count + 1).astype(np.int64)
        with tempfile.TemporaryDirectory(prefix="ci-pipeline-facts-") as folder:
            paths = self._split(Path(folder), customers, bounds, wanted)
            for part, path in enumerate(paths):
                with pa.memory_map(str(path)) as source:
                    table = pa.ipc.open_file(source).read_all()
                path.unlink()
                positions = table.column(ROW).to_numpy()
                frame = table.drop_columns([ROW]).to_pandas()
                del table
                ids = customers[bounds[part] : bounds[part + 1]]
                yield FactIndex(frame, ids, end, fields, positions)

    def _split(self, folder: Path, customers: pd.Index, bounds: np.ndarray, columns: list[str]) -> list[Path]:
        """Write each batch's rows to the file of their customer's part, with their position in the table.

        A row's part is found by comparing its CustomerId with the first customer of every part (ids in byte order
        are in the customers' sorted order): a few vectorised comparisons, where a lookup among all customers
        would hash every customer again for each batch. Rows of someone who is no customer go to a part that
        drops them.
        """
        schema = self.dataset.schema
        plain = _plain(pa.schema([schema.field(c) for c in columns], metadata=schema.metadata))
        out = plain.append(pa.field(ROW, pa.int64()))
        firsts = [pa.scalar(customers[b], pa.large_string()) for b in bounds[1:-1]]
        paths = [folder / f"part-{i:05d}.arrow" for i in range(len(bounds) - 1)]
        # Uncompressed: the files live for one pass and are read at once through a memory map; compressing them
        # took most of the split's time (at a million people: 4.1 of 6.5 s, and reading 1.2 s instead of 0.3 s).
        writers = [pa.ipc.new_file(str(p), out) for p in paths]
        offset = 0
        try:
            # The scanner yields a file's batches in order, so positions count up through the table.
            for batch in self.dataset.to_batches(columns=columns, filter=self.where):
                ids = batch.column("CustomerId").cast(pa.large_string())
                part = np.zeros(batch.num_rows, dtype=np.int64)
                for first in firsts:
                    part += pc.fill_null(pc.greater_equal(ids, first), False).to_numpy(zero_copy_only=False)
                rows = np.argsort(part, kind="stable")
                starts = np.searchsorted(part[rows], np.arange(len(paths) + 1))
                # One take puts the batch in part order (in table order within a part); each part's rows are a slice.
                placed = batch.select(columns).take(pa.array(rows)).cast(plain)
                placed = placed.append_column(ROW, pa.array(rows + offset))
                for i, writer in enumerate(writers):
                    if starts[i + 1] > starts[i]:
                        writer.write_batch(placed.slice(starts[i], starts[i + 1] - starts[i]))
                offset += batch.num_rows
        finally:
            for writer in writers:
                writer.close()
        return paths


def _plain(schema: pa.Schema) -> pa.Schema:
    """The schema with dictionary encoded columns as their values (each batch may bring its own dictionary)."""
    fields = [pa.field(f.name, f.type.value_type) if pa.types.is_dictionary(f.type) else f for f in schema]
    return pa.schema(fields, metadata=schema.metadata)


def fact_parts(
    facts: pd.DataFrame | FactIndex | StoredFacts, customers: pd.Index, end: pd.Timestamp, columns: list[str]
) -> Iterator[FactIndex]:
    """The facts as parts of consecutive customers: a frame or a prepared index is one part of every customer."""
    if isinstance(facts, StoredFacts):
        yield from facts.parts(customers, end, columns)
    elif isinstance(facts, FactIndex):
        yield facts
    else:
        yield FactIndex(facts, customers, end)
