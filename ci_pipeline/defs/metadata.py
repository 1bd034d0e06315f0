"""Statistics in Dagster's native metadata forms: small tables the UI renders as tables, and plain numbers it plots
over materializations. Keeping the conversion here keeps every stage's metadata the same shape."""

from __future__ import annotations

import math
import numbers as _numbers
from collections.abc import Iterable, Mapping, Sequence

import dagster as dg

#: How many entries of a long list (guard events, files) the asset page shows; the full list stays in the lake.
FIRST_N = 10


def table_of(rows: Sequence[Mapping], columns: Sequence[str]) -> dg.TableMetadataValue:
    """``rows`` (dicts) as a native metadata table with ``columns`` in this order.

    A column's type is taken from its first non-empty value (int, float, bool, else string; numpy scalars count as
    their Python kind); in a text column every value is shown as text.
    """
    types = {}
    for column in columns:
        sample = next((_plain(row.get(column)) for row in rows if row.get(column) is not None), "")
        types[column] = _kind(sample)
    records = [dg.TableRecord({c: _cell(row.get(c), types[c]) for c in columns}) for row in rows]
    schema = dg.TableSchema(columns=[dg.TableColumn(c, types[c]) for c in columns])
    return dg.MetadataValue.table(records, schema=schema)


def counts_table(counts: Mapping[str, int], key: str, value: str) -> dg.TableMetadataValue:
    """A two-column table of ``{name: count}`` (e.g. quarantined rows per reason)."""
    return table_of([{key: name, value: int(n)} for name, n in counts.items()], [key, value])


def entries_table(nested: Mapping, key: str = "entry", value: str = "value") -> dg.TableMetadataValue:
    """A nested report (dicts and lists) as a two-column table, one row per leaf: ``a.b.0`` and its value as text.

    The page then shows a long report as rows to scroll rather than one raw JSON block that outgrows the screen."""
    return table_of([{key: path, value: text} for path, text in _leaves(nested, "")], [key, value])


def numbers(prefix: str, values: Mapping[str, float | int]) -> dict[str, dg.MetadataValue]:
    """``{"<prefix> <name>": number}``: one series per name that the UI's Plots tab draws over runs."""
    return {f"{prefix} {name}": _number(v) for name, v in values.items()}


def number(value: float | int) -> dg.MetadataValue:
    """A figure for the asset page: an int, or a float holding a whole number (a count computed in a float column),
    as ``MetadataValue.int`` so the page shows 143 rather than 143.0; any other float as ``MetadataValue.float``."""
    value = _plain(value)
    if isinstance(value, float) and value.is_integer():
        return dg.MetadataValue.int(int(value))
    return _number(value)


def human_size(size: int) -> str:
    """``20373446`` bytes as "20.4 MB": Dagster has no size type, and a marketer reads MB, not a count of bytes.

    Decimal units (1 MB = 1,000,000 bytes), as storage accounts and Dataverse capacity count them."""
    value, unit = float(size), "bytes"
    for larger in ("kB", "MB", "GB", "TB"):
        if abs(value) < 1000:
            break
        value, unit = value / 1000, larger
    return f"{int(size)} bytes" if unit == "bytes" else f"{value:.1f} {unit}"


def bullet_list(lines: Iterable[str]) -> dg.MarkdownMetadataValue:
    """Lines as a Markdown list (``- line``); "none" when there are none."""
    text = "\n".join(f"- {line}" for line in lines)
    return dg.MetadataValue.md(text or "none")


def _leaves(node, path: str) -> Iterable[tuple[str, str]]:
    if isinstance(node, Mapping):
        items = node.items()
    elif isinstance(node, list | tuple):
        items = enumerate(node)
    else:
        yield path, "" if node is None else str(_plain(node))
        return
    empty = True
    for name, child in items:
        empty = False
        yield from _leaves(child, f"{path}.{name}" if path else str(name))
    if empty:
        yield path, "none"


def _number(value: float | int) -> dg.MetadataValue:
    value = _plain(value)
    return dg.MetadataValue.int(int(value)) if _kind(value) == "int" else dg.MetadataValue.float(float(value))


def _plain(value):
    """A numpy scalar as the Python value it holds (metadata tables take only Python numbers, text and booleans)."""
    return value.item() if hasattr(value, "item") and not isinstance(value, str) else value


def _kind(value) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, _numbers.Integral):
        return "int"
    return "float" if isinstance(value, _numbers.Real) else "string"


def _cell(value, kind: str):
    value = _plain(value)
    if value is None:
        return None
    if kind == "string":
        return value if isinstance(value, str) else str(value)
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # JSON has no infinity: "-inf" (a level that rules a match out) is shown as text
    return value
