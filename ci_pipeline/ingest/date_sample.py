"""Declared date formats checked against a sample of the data, before a run quarantines the rows they cannot read.

A date column declared ``%m/%d/%Y`` over values written ``22/03/1997`` quarantines every row whose day is above 12
(and reads the others with day and month swapped); the run succeeds and most of the table is gone. Checked on the
first rows that ``validate`` (and the run's own preflight) already read, that becomes a message naming the column,
what the values are and the format that reads them.
"""

from __future__ import annotations

import datetime as dt

import pandas as pd

from ci_pipeline.config.sources import DateRange, TableConfig
from ci_pipeline.ingest.stamps import StampOrder
from ci_pipeline.ingest.types import coerce, date_bounds

#: Date formats a column's values are tried in, in order, to name the one that reads them.
COMMON_DATE_FORMATS = [
    "%Y-%m-%d",
    "%Y-%m-%dT%H:%M:%S",
    "%Y-%m-%d %H:%M:%S",
    "%Y-%m-%dT%H:%M:%SZ",
    "%m/%d/%Y",
    "%m/%d/%Y %H:%M:%S",
    "%d/%m/%Y",
    "%d/%m/%Y %H:%M:%S",
    "%d.%m.%Y",
    "%Y%m%d",
]
#: Every date the platform holds: to tell a value outside date_range from one in another format.
WIDEST = DateRange(min=dt.date(1677, 9, 22), max=dt.date(2262, 4, 10))
#: Share of a sample's present values that may be unreadable before the column is reported.
MOST = 0.5
#: Fewer present values than this say too little to report.
ENOUGH = 20


def date_problems(table: TableConfig, sample: pd.DataFrame, where: str) -> list[str]:
    """``columns.<name>: ...`` for each declared date or datetime column of which most values in ``sample`` (the
    first rows of ``where``, as strings) would be quarantined, with the format or date range that reads them."""
    problems = []
    for column, spec in table.columns.items():
        if spec.type not in ("date", "datetime") or column not in sample.columns:
            continue
        values = sample[column].astype("string").str.strip()
        values = values[values.notna() & (values != "") & ~values.isin(table.null_values)]
        if len(values) < ENOUGH:
            continue
        formats = ([spec.format] if spec.format else []) + list(table.date_formats)
        bounds = date_bounds(spec.date_range or table.date_range)
        bad = coerce(values, spec.type, formats, bounds)[1]
        if bad.mean() <= MOST:
            continue
        said = f"format {', '.join(formats)}" if formats else "no format declared"
        problems.append(
            f"columns.{column}: {int(bad.sum())} of the first {len(values)} values in {where} are not valid "
            f"{spec.type}s ({said}; e.g. {values[bad].iloc[0]!r}), so a run would quarantine their rows; "
            + _fix(values, spec.type, formats, bounds)
        )
    return problems


def _fix(values: pd.Series, kind: str, formats: list[str], bounds: tuple[pd.Timestamp, pd.Timestamp]) -> str:
    wide = date_bounds(WIDEST)
    if not coerce(values, kind, formats, wide)[1].mean() > MOST:
        return (
            f"most fall outside the accepted dates {bounds[0].date()}..{(bounds[1] - pd.Timedelta(days=1)).date()}: "
            "widen date_range"
        )
    reads = {fmt: int((~coerce(values, kind, [fmt], wide)[1]).sum()) for fmt in COMMON_DATE_FORMATS}
    best = max(reads, key=reads.get)
    if reads[best] > len(values) * MOST:
        return f'{reads[best]} of them read as {best}: set format: "{best}"'
    # Not "leave the column a string": a text timestamp is read in the order of day and month its values show, and
    # those that show none are read month first; declaring the format is what reads every value one known way.
    order = StampOrder.of(values)
    if order.written > len(values) * MOST:
        fmt = order.strftime()
        if order.proven:
            return f'their values are written {order.pattern()}: set format: "{fmt}"'
        other = order.strftime(not order.day_first)
        return (
            f'they are written year last with no day above 12 to show the order: set format: "{fmt}" '
            f'({order.pattern()}) or "{other}" ({order.pattern(not order.day_first)}), whichever the source writes'
        )
    return "declare the format they are written in (strptime directives, e.g. %d/%m/%Y %H:%M for 22/01/2025 17:58)"
