"""Dates as the sources write them: read into times (:func:`parse_times`), and birth dates into ``YYYY-MM-DD``.

Two tables rarely write a date alike (``1857-01-01`` in one system, ``01/01/1857`` in another), and a column of
``dd/mm/yyyy`` reads as ``mm/dd/yyyy`` wherever the day is 12 or less. So each column's dates are read with the
order of day and month that its own values show: a first number from 13 to 31 can only be a day, a second one
only a day the other way round. Year, month and day are kept as written, so a keyed date that is no calendar date
(``01/81/1835``) still holds the components the model compares.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from ci_pipeline.unify.text import re_extract

#: The dates unify can hold (pandas' nanosecond range, whole days): anything outside is unreadable, i.e. missing.
#: They are also the widest date_range ingestion allows, so unify reads every date ingestion accepted.
EARLIEST = pd.Timestamp("1677-09-22", tz="UTC")
LATEST = pd.Timestamp("2262-04-10", tz="UTC")
TIME_DTYPE = "datetime64[ns, UTC]"

#: Formats tried in order, each vectorised, before the slow per-value "mixed" parser handles what is left.
TIME_FORMATS = (
    "ISO8601",
    "%m/%d/%Y %H:%M:%S",
    "%m/%d/%Y",
    "%d.%m.%Y",
    "%Y/%m/%d",
)


def parse_times(values: pd.Series) -> pd.Series:
    """Dates and times in UTC (nanosecond precision) from typed or text values.

    Text that is no date, and dates outside ``EARLIEST`` .. ``LATEST`` (``12/31/9999``, ``01/01/0001``), become NaT.
    """
    if pd.api.types.is_datetime64_any_dtype(values):
        return _within_range(pd.to_datetime(values, utc=True))
    text = values.astype("string").str.strip()
    out = pd.Series(pd.NaT, index=values.index, dtype=TIME_DTYPE)
    todo = text.notna() & (text.str.len() > 0)
    for fmt in TIME_FORMATS:
        if not todo.any():
            return out
        parsed = pd.to_datetime(text[todo], errors="coerce", format=fmt, utc=True)
        # A value read in this format is settled even when out of range: a later, looser format must not reread it.
        read = parsed.notna()
        out[read[read].index] = _within_range(parsed[read])
        todo[read[read].index] = False
    if todo.any():
        out[todo] = _within_range(pd.to_datetime(text[todo], errors="coerce", format="mixed", utc=True))
    return out


def _within_range(times: pd.Series) -> pd.Series:
    """``times`` as nanosecond UTC, NaT where outside what that type holds (pandas may parse a wider range)."""
    inside = times.isna() | ((times >= EARLIEST) & (times < LATEST + pd.Timedelta(days=1)))
    return times.where(inside).astype(TIME_DTYPE)


_YEAR_FIRST = r"^(\d{4})[-/.](\d{1,2})[-/.](\d{1,2})(?:[T ].*)?$"
_COMPACT = r"^([12]\d{3})(\d{2})(\d{2})$"
_YEAR_LAST = r"^(\d{1,2})([-/.])(\d{1,2})[-/.](\d{4})(?:[T ].*)?$"
#: A date of which only the year, or the year and month, is known: ``1843``, ``1843----``, ``1843-05``,
#: ``1843-05-??``, ``184305--``; the unknown parts may be dashes, question marks, x or zeros.
_PARTIAL = r"^([12]\d{3})(?:[-/.]?(\d{2}|[-?xX]{2})|[-/.](\d))?(?:[-/.]?(?:00|[-?xX]{2}))?$"


@dataclass(frozen=True)
class DateOrder:
    """How a column's ``d/m/y`` or ``m/d/y`` dates were read.

    Attributes:
        day_first: read as day, month, year.
        written: values written with the year last.
        day_first_only: those whose first number is 13 to 31 and second at most 12 (only a day first reads them).
        month_first_only: those the other way round.
        separator: the separator most of them use.
    """

    day_first: bool
    written: int
    day_first_only: int
    month_first_only: int
    separator: str

    @property
    def pattern(self) -> str:
        s = self.separator
        return f"dd{s}mm{s}yyyy" if self.day_first else f"mm{s}dd{s}yyyy"

    @property
    def evidence(self) -> int:
        return self.day_first_only if self.day_first else self.month_first_only

    @property
    def against(self) -> int:
        return self.month_first_only if self.day_first else self.day_first_only

    @property
    def mixed(self) -> bool:
        """Whether the column mixes both orders: a tenth as many values as show its order show the other (fewer
        are the keying errors any column holds, a month keyed 17 for 07, compared as written)."""
        return self.against > 0 and self.against * 10 >= self.evidence


def read_birth_dates(values: pd.Series) -> tuple[pd.Series, DateOrder | None]:
    """``values`` as ``YYYY-MM-DD`` text, and how its year-last dates were read (None when it has none).

    Year-first and ``YYYYMMDD`` values are split as written; year-last ones in the column's order of day and month:
    the order more of its values can only be read in, else ``dd.mm.yyyy`` for dots and ``mm/dd/yyyy`` otherwise
    (as :func:`parse_times` reads them). Other text the project's date parser reads (``3 April 1990``) is written
    out the same way; text it cannot read is kept as it is (stripped); blank and year 0 (``00/00/0000``) are
    missing.
    """
    if pd.api.types.is_datetime64_any_dtype(values):
        return values.dt.strftime("%Y-%m-%d").astype("string"), None
    text = values.astype("string").str.strip()
    text = text.where(text.str.len() > 0)
    out = pd.Series(pd.NA, index=values.index, dtype="string")
    for pattern in (_YEAR_FIRST, _COMPACT):
        ymd = re_extract(text, pattern)
        got = ymd[0].notna() & out.isna()
        out[got] = _written(ymd[0][got], ymd[1][got], ymd[2][got])
    order = None
    dmy = re_extract(text, _YEAR_LAST)
    got = dmy[0].notna() & out.isna()
    if got.any():
        first, second = dmy[0][got].astype(int), dmy[2][got].astype(int)
        order = _order(first, second, dmy[1][got])
        day, month = (first, second) if order.day_first else (second, first)
        out[got] = _written(dmy[3][got], *(_readable(month, day) if order.mixed else (month, day)))
    partial = re_extract(text, _PARTIAL)
    got = partial[0].notna() & out.isna()
    if got.any():
        # A year alone, or a year and month: the parts not known are written 00, as 00/00/1975 is, so that no one
        # reads them as the 1st of January (two people born in 1843 would agree on every part of one date).
        written = partial[1][got] + partial[2][got]  # one of the two month groups is empty
        month = pd.to_numeric(written.str.extract(r"(\d+)", expand=False), errors="coerce").fillna(0)
        out[got] = _written(partial[0][got], month.where(month <= 12, 0), pd.Series(0, index=month.index))
    rest = text.notna() & out.isna()
    if rest.any():
        parsed = parse_times(text[rest])
        out[rest] = parsed.dt.strftime("%Y-%m-%d").astype("string").fillna(text[rest])
    # Year 0 is no one's: 00/00/0000 and 0000-00-00 are what systems write for an unknown date. Read as a date,
    # two strangers holding it agreed on every part of it.
    return out.mask(out.str.startswith("0000-", na=False)), order


def _readable(month: pd.Series, day: pd.Series) -> tuple[pd.Series, pd.Series]:
    """Month and day of year-last dates in a column that mixes both orders, swapped where only the other order
    reads them (a month of 25 and a day of 10: 10/25/2005 in such a column read day first is the 25th of October);
    kept as they are where neither order does. Not where the other order is as rare as keying errors, nor for
    year-first dates: there a month over 12 is a typing error (1950-19-05 for 1950-09-05), which swapping would
    make another date."""
    swap = (month > 12) & (month <= 31) & (day >= 1) & (day <= 12)
    return month.where(~swap, day), day.where(~swap, month)


def _order(first: pd.Series, second: pd.Series, separators: pd.Series) -> DateOrder:
    day_first_only = int(((first > 12) & (first <= 31) & (second <= 12)).sum())
    month_first_only = int(((second > 12) & (second <= 31) & (first <= 12)).sum())
    separator = str(separators.mode().iloc[0])
    # Without evidence either way, as parse_times reads them: dots day first, slashes and dashes month first.
    day_first = day_first_only > month_first_only if day_first_only != month_first_only else separator == "."
    return DateOrder(day_first, len(first), day_first_only, month_first_only, separator)


def _written(year: pd.Series, month: pd.Series, day: pd.Series) -> pd.Series:
    def two(part: pd.Series) -> pd.Series:
        return part.astype(int).astype(str).str.zfill(2)

    return (year.astype(str) + "-" + two(month) + "-" + two(day)).astype("string")
