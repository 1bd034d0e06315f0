"""Records prepared for comparison: each column factorized once into codes over its distinct values.

Every comparison and blocking key works on the distinct values of a column (a few thousand names, not millions of
rows) and reaches the rows through integer codes, so the per-pair work is integer indexing plus one batched
rapidfuzz call over the distinct value pairs that are neither null nor equal.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pyarrow as pa

from ci_pipeline.errors import UserError
from ci_pipeline.side_by_side import each
from ci_pipeline.unify.text import pandas_strings


@dataclass(frozen=True)
class Column:
    """One column as ``codes`` (position in ``values`` per record, -1 = null) and its distinct ``values``."""

    name: str
    codes: np.ndarray
    values: np.ndarray
    counts: np.ndarray

    @property
    def non_null(self) -> int:
        """Records holding a value."""
        return int(self.counts.sum())


@dataclass(frozen=True)
class Table:
    """Normalized records ready for blocking and comparison.

    Args:
        columns: column name -> factorized column.
        n: number of records.
        source: per record, the code of the table it comes from (all 0 for one table); only link-only pairing
            reads it.
        missing: values taken for missing after normalizing (column -> value -> records that held it), as a
            caller reports them (a placeholder held by hundreds of records).
    """

    columns: dict[str, Column]
    n: int
    source: np.ndarray
    missing: dict[str, dict[str, int]] = field(default_factory=dict, compare=False)
    _derived: dict = field(default_factory=dict, repr=False, compare=False)

    def column(self, name: str) -> Column:
        """The prepared column ``name``; a clear error when the records do not hold it."""
        try:
            return self.columns[name]
        except KeyError:
            raise _missing(name, sorted(self.columns)) from None

    def remember(self, key: tuple, make: Callable[[], np.ndarray]) -> np.ndarray:
        """``make()`` once per ``key``, kept read-only: a blocking rule's codes are read by the default's pair
        budget, training's blocking and strata, and scoring's blocking and fits, on one table."""
        if key not in self._derived:
            made = make()
            made.setflags(write=False)
            self._derived[key] = made
        return self._derived[key]

    def derived(self, name: str, kind: str, make: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
        """``make`` applied once to the distinct values of column ``name`` (cached under ``kind``)."""
        key = (name, kind)
        if key not in self._derived:
            self._derived[key] = make(self.column(name).values)
        return self._derived[key]


def _factorized(name: str, text: pd.Series, outer: np.ndarray | None = None) -> Column:
    """``text`` factorized (stripped; blank is null); with ``outer``, ``text`` holds distinct values and each record
    is ``outer``'s position in it (-1 = null)."""
    text = text.astype("string").str.strip()
    text = text.where(text.str.len() > 0)
    codes, uniques = pd.factorize(text, use_na_sentinel=True, sort=True)
    codes = codes.astype(np.int64)
    if outer is not None:
        codes = np.append(codes, -1)[outer]
    values = np.asarray(uniques.astype(object), dtype=object)
    counts = np.bincount(codes[codes >= 0], minlength=len(values))
    return Column(name, codes, values, counts)


def _missing(name: str, held: Iterable) -> UserError:
    """The error for a column ``name`` that the records (holding the columns ``held``) do not hold."""
    return UserError(
        f"column {name!r} is not in the records (they hold {', '.join(map(str, held))}): map it or remove the "
        "comparison or blocking rule that uses it"
    )


def _origin(frame: pd.DataFrame, source: str | None) -> np.ndarray:
    if source is None:
        return np.zeros(len(frame), dtype=np.int64)
    if source not in frame.columns:
        raise UserError(f"source column {source!r} is not in the records")
    return pd.factorize(frame[source].astype("string"), sort=True)[0].astype(np.int64)


def prepare(frame: pd.DataFrame, columns: Iterable[str], source: str | None = None) -> Table:
    """Factorize ``columns`` of ``frame`` (already normalized); blank text counts as null.

    Args:
        frame: one row per record.
        columns: the columns comparisons and blocking rules read.
        source: optional column naming the table each record comes from (for link-only pairing).
    """
    prepared = {}
    for name in dict.fromkeys(columns):
        if name not in frame.columns:
            raise _missing(name, frame.columns)
        prepared[name] = _factorized(name, frame[name])
    return Table(prepared, len(frame), _origin(frame, source))


def prepare_raw(
    frame: pd.DataFrame,
    normalize: dict[str, Callable[[pd.Series], pd.Series]],
    source: str | None = None,
) -> Table:
    """``prepare`` of the columns of ``frame`` normalized by ``normalize`` (column -> a function of a text
    Series), each function applied to the distinct raw values only.

    Equal to ``prepare`` of the normalized frame when each function normalizes value by value, as the project's
    normalizations do: a record frame repeats names, places and dates many times, and the normalized text of
    every record is never built. Two columns at a time on threads (their Arrow kernels run outside Python's lock).
    """
    missing = [name for name in normalize if name not in frame.columns]
    if missing:
        raise _missing(missing[0], frame.columns)

    def one(name: str) -> Column:
        outer, distinct = pd.factorize(frame[name].astype("string"), use_na_sentinel=True)
        return _factorized(name, normalize[name](pd.Series(distinct, dtype="string")), outer.astype(np.int64))

    prepared = dict(zip(normalize, each(one, normalize, 2, "model-normalize"), strict=True))
    return Table(prepared, len(frame), _origin(frame, source))


def frame_of(table: Table) -> pd.DataFrame:
    """The prepared values of every column, one row per record (``<NA>`` where null), as text.

    Each column is its distinct values taken by code in Arrow: a frame of Python strings would be copied into one
    block of objects, which at two million records costs more than the rest of choosing the default.
    """
    columns = {}
    for name, column in table.columns.items():
        codes = pa.array(column.codes, mask=column.codes < 0)
        columns[name] = pandas_strings(pa.array(column.values, pa.large_string()).take(codes))
    return pd.DataFrame(columns)
