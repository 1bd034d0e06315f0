"""Activity timestamps written as text: one order of day and month per column.

pandas' per-value parser reads ``22/01/2025`` day first (no month 22) and ``04/02/2025`` month first, so a
day-first column read value by value mixes both readings without a word. The order is decided for the whole
column instead, from its year-last values (``dd/mm/yyyy``, ``mm/dd/yyyy``, ``dd.mm.yyyy``, with or without a time):
a first number from 13 to 31 can only be a day, a second one only a day the other way round. Values only the
other order reads, in a column whose values show both, are quarantined; a column no value decides is read as
unification reads dates (dots day first, slashes and dashes month first) and the run warns.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

#: Day or month, separator, month or day, four-digit year, and the rest (a time).
YEAR_LAST = r"^(\d{1,2})([-/.])(\d{1,2})[-/.](\d{4})(.*)$"
#: Times as written after a date, by shape (digits as 9), and their strftime directives.
_TIMES = {"": "", " 9:99": " %H:%M", " 99:99": " %H:%M", " 9:99:99": " %H:%M:%S", " 99:99:99": " %H:%M:%S"}


@dataclass(frozen=True)
class StampOrder:
    """How the year-last timestamps of one column are read, from what all its values show.

    Attributes:
        day_first_only: values whose first number is 13 to 31 and second at most 12 (only day first reads them).
        month_first_only: those the other way round.
        written: year-last values.
        separators: how many use each separator.
        times: how many carry each shape of time (``:_TIMES``'s keys, other shapes as written with digits as 9).
    """

    day_first_only: int = 0
    month_first_only: int = 0
    written: int = 0
    separators: dict[str, int] = field(default_factory=dict)
    times: dict[str, int] = field(default_factory=dict)

    @classmethod
    def of(cls, values: pd.Series) -> StampOrder:
        """What the (text) ``values`` show."""
        parts = _year_last(values)
        first, second = parts[0].astype(int), parts[2].astype(int)
        shapes = parts[4].str.replace(r"\d", "9", regex=True)
        return cls(
            int(((first > 12) & (first <= 31) & (second <= 12)).sum()),
            int(((second > 12) & (second <= 31) & (first <= 12)).sum()),
            len(parts),
            {str(k): int(v) for k, v in parts[1].value_counts().items()},
            {str(k): int(v) for k, v in shapes.value_counts().items()},
        )

    def __add__(self, other: StampOrder) -> StampOrder:
        def merged(a: dict[str, int], b: dict[str, int]) -> dict[str, int]:
            return {k: a.get(k, 0) + b.get(k, 0) for k in sorted(set(a) | set(b))}

        return StampOrder(
            self.day_first_only + other.day_first_only,
            self.month_first_only + other.month_first_only,
            self.written + other.written,
            merged(self.separators, other.separators),
            merged(self.times, other.times),
        )

    @property
    def separator(self) -> str:
        return min(self.separators, key=lambda s: (-self.separators[s], s)) if self.separators else "/"

    @property
    def proven(self) -> bool:
        return self.day_first_only + self.month_first_only > 0

    @property
    def day_first(self) -> bool:
        """The order more values can only be read in; without evidence (or as much each way), dots day first and
        slashes and dashes month first, as unification reads dates."""
        if self.day_first_only != self.month_first_only:
            return self.day_first_only > self.month_first_only
        return self.separator == "."

    @property
    def mixed(self) -> bool:
        return self.day_first_only > 0 and self.month_first_only > 0

    def pattern(self, day_first: bool | None = None) -> str:
        s, day_first = self.separator, self.day_first if day_first is None else day_first
        return f"dd{s}mm{s}yyyy" if day_first else f"mm{s}dd{s}yyyy"

    def strftime(self, day_first: bool | None = None) -> str:
        """The format that reads the column's usual values in one order (the column's by default)."""
        s, day_first = self.separator, self.day_first if day_first is None else day_first
        date = f"%d{s}%m{s}%Y" if day_first else f"%m{s}%d{s}%Y"
        shape = min(self.times, key=lambda t: (-self.times[t], t)) if self.times else ""
        return date + _TIMES.get(shape, "")

    def against(self, values: pd.Series) -> pd.Series:
        """Which of ``values`` only the order the column is not read in reads (quarantined when it is mixed)."""
        parts = _year_last(values, keep_index=True)
        first, second = pd.to_numeric(parts[0]), pd.to_numeric(parts[2])
        if self.day_first:
            return ((second > 12) & (second <= 31) & (first <= 12)).fillna(False).astype(bool)
        return ((first > 12) & (first <= 31) & (second <= 12)).fillna(False).astype(bool)

    def warning(self, name: str, column: str) -> str | None:
        """What the run tells of an activity whose year-last timestamps no value decides (None when one does)."""
        if not self.written or self.proven:
            return None
        return (
            f"activity {name}: the {self.written:,} timestamp(s) of {column} written year last (such as "
            f"01{self.separator}02{self.separator}2025) have no day above 12, so nothing shows whether the day or "
            f"the month comes first; they were read {self.pattern()}. If the column is "
            f"{self.pattern(not self.day_first)}, declare activities.tables.{name}.timestamp_format: "
            f'"{self.strftime(not self.day_first)}" (or "{self.strftime()}" to confirm this reading)'
        )

    def reason(self, name: str) -> str:
        """The end of the quarantine reason of a value only the other order reads, in a mixed column."""
        shown = self.day_first_only if self.day_first else self.month_first_only
        return (
            f"' can only be read {self.pattern(not self.day_first)}, but {shown:,} value(s) of the column can only "
            f"be read {self.pattern()}, the order the column is read in; a column holds one order: correct this "
            f'row at the source, or declare activities.tables.{name}.timestamp_format: "{self.strftime()}"'
        )


def _year_last(values: pd.Series, keep_index: bool = False) -> pd.DataFrame:
    """The parts of the year-last values of ``values`` (all rows when ``keep_index``, NaN where not year last)."""
    parts = values.astype("string").str.strip().str.extract(YEAR_LAST)
    return parts if keep_index else parts.dropna(subset=[0])


def parse_timestamps(values: pd.Series, fmt: str | None = None, order: StampOrder | None = None) -> pd.Series:
    """Timestamps as UTC; values that cannot be parsed become NaT (naive values are taken as UTC).

    Text is read with ``fmt`` when given; else year-last values in one order of day and month, ``order``'s (what
    the whole column shows; by default what ``values`` show), and other values as ISO 8601 or pandas reads them.
    """
    if isinstance(values.dtype, pd.DatetimeTZDtype):
        return values.dt.tz_convert("UTC")
    if pd.api.types.is_datetime64_any_dtype(values.dtype):
        return values.dt.tz_localize("UTC")
    text = values.astype("string").str.strip()
    if fmt:
        return pd.to_datetime(text, format=fmt, errors="coerce", utc=True)
    parts = _year_last(text, keep_index=True)
    dated = parts[0].notna()
    no_date = pd.Series(False, index=text.index)
    if dated.any():
        order = order or StampOrder.of(text)
        day, month = (parts[0], parts[2]) if order.day_first else (parts[2], parts[0])
        # Rewritten year first, which every parser reads one way (a month above 12 is then no date).
        text = text.mask(dated, parts[3] + "-" + month.str.zfill(2) + "-" + day.str.zfill(2) + parts[4])
        # Not for pandas' per-value parser, which would read 2025-22-01 as the 22nd of January after all.
        no_date = (dated & (pd.to_numeric(month) > 12)).fillna(False).astype(bool)
    parsed = pd.to_datetime(text, format="ISO8601", errors="coerce", utc=True)
    retry = parsed.isna() & text.notna() & (text != "") & ~no_date
    if retry.any():
        parsed[retry] = pd.to_datetime(text[retry], format="mixed", errors="coerce", utc=True)
    return parsed
