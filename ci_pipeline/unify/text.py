"""String work in bulk on Arrow arrays, with Python's semantics.

Per-group joins (pandas' ``groupby().agg(" ".join)`` runs Python per group and is ~50x slower), concatenation,
regular-expression replacement and extraction, and word-table lookups. pandas falls back to Python one value at a
time for many regular expressions (any ``\\s``, flags, ``\\w`` on a column with one accented value); here Arrow does
the ASCII values and Python only the few others. At millions of records, Python strings per row would cost
gigabytes and most of a phase's time.
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc


def group_starts(sorted_keys: list[np.ndarray]) -> np.ndarray:
    """Start positions of the runs of equal keys in rows sorted by those keys."""
    n = len(sorted_keys[0])
    if n == 0:
        return np.empty(0, dtype=np.int64)
    change = np.zeros(n, dtype=bool)
    change[0] = True
    for k in sorted_keys:
        change[1:] |= k[1:] != k[:-1]
    return np.flatnonzero(change)


def join_runs(values, starts: np.ndarray, sep: str) -> pa.LargeStringArray:
    """``sep.join`` of each run ``values[starts[i]:starts[i+1]]`` (values sorted so that runs are contiguous).

    The runs are joined in Arrow's C++ kernels from a list view of ``values``: no Python string per value.

    Examples:
        >>> join_runs(np.array(["a", "b", "c"], dtype=object), np.array([0, 2]), "+").to_pylist()
        ['a+b', 'c']
    """
    array = pa.array(values).cast(pa.large_string())
    offsets = pa.array(np.append(starts, len(array)).astype(np.int64), type=pa.int64())
    return pc.binary_join(pa.LargeListArray.from_arrays(offsets, array), pa.scalar(sep, pa.large_string()))


def arrow_strings(column: pd.Series) -> pa.LargeStringArray:
    """A string column as one Arrow large_string array (64-bit offsets: no 2 GB limit on joined text)."""
    array = pa.array(column.astype("string").array)
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks()
    return array.cast(pa.large_string())


def pandas_strings(array: pa.Array) -> pd.arrays.ArrowStringArray:
    """An Arrow string array as a pandas ``string`` array, without Python strings."""
    return pd.array(array.cast(pa.large_string()), dtype="string")


def take_repeated(text: pa.Array, at: np.ndarray) -> pa.Array:
    """``text.take(at)``, by dictionary codes where the texts repeat (the rules' scores of millions of pairs).

    Arrow's take copies each text it gathers; for 5.2 million pair scores of 100 characters (22,000 distinct) that
    took 0.85 s in order and 1.2 s shuffled, encoding them and gathering the codes 0.18 s. Mostly distinct texts (a
    match model's weights) are slower to encode than to take: when a sample of the first texts is more than a
    quarter distinct, they are taken directly."""
    sample = text.slice(0, 10_000)
    if len(sample) and pc.count_distinct(sample).as_py() > len(sample) // 4:
        return text.take(pa.array(at, pa.int64()))
    coded = text.dictionary_encode()
    return coded.dictionary.take(coded.indices.take(pa.array(at, pa.int64())))


def concat_strings(*parts: str | pa.Array) -> pa.LargeStringArray:
    """Element-wise concatenation of Arrow string arrays and constant strings (null if any part is null)."""
    large = [pa.scalar(p, pa.large_string()) if isinstance(p, str) else p.cast(pa.large_string()) for p in parts]
    return pc.binary_join_element_wise(*large, pa.scalar("", pa.large_string()))


#: What Python's ``\s`` matches in ASCII text. RE2's ``\s`` lacks the vertical tab and the separators
#: \x1c-\x1f, so patterns handed to Arrow spell it out.
SPACE = r"\t\n\v\f\r \x1c-\x1f"


def re2_pattern(pattern: str) -> str:
    r"""``pattern`` with ``\s`` spelled out as :data:`SPACE`, inside or outside a character class.

    Examples:
        >>> re2_pattern(r"[\s.]+") == "[" + SPACE + ".]+"
        True
    """
    out, in_class, i = [], False, 0
    while i < len(pattern):
        pair = pattern[i : i + 2]
        if pair in (r"\s", r"\S"):
            if pair == r"\S" and in_class:
                raise ValueError(f"{pattern!r}: \\S inside a character class is not supported")
            out.append(SPACE if in_class else ("[" if pair == r"\s" else "[^") + SPACE + "]")
            i += 2
            continue
        if pair.startswith("\\"):
            out.append(pair)
            i += 2
            continue
        in_class = (in_class or pattern[i] == "[") and not (in_class and pattern[i] == "]")
        out.append(pattern[i])
        i += 1
    return "".join(out)


def re_replace(values: pd.Series, pattern: str, repl: str, flags: int = 0) -> pd.Series:
    """``values.str.replace(pattern, repl, regex=True)`` with Python ``re`` semantics, at Arrow speed.

    pandas hands a pattern with ``\\s`` (or with flags, or any ``\\w``/``\\d``/``\\b`` on a column holding one
    non-ASCII value) to Python's ``re``, one value at a time. Here RE2 runs over the ASCII values, where it agrees
    with ``re`` once ``\\s`` is spelled out (:func:`re2_pattern`), and only the values with non-ASCII characters or a
    newline (where ``$`` differs) go through ``re``.

    Args:
        pattern: a Python regular expression written with ``\\s`` (rewritten for RE2) and without lookarounds or
            backreferences.
        repl: the replacement; ``\\1`` refers to a group in both engines.
        flags: ``re.IGNORECASE`` only.
    """
    if flags & ~re.IGNORECASE:
        raise ValueError("re_replace supports re.IGNORECASE only")
    arrow = arrow_strings(values)
    re2 = ("(?i)" if flags else "") + re2_pattern(pattern)
    out = pc.replace_substring_regex(arrow, re2, repl)
    python = _python_rows(arrow, "\n")
    if pc.any(python).as_py():
        compiled = re.compile(pattern, flags)
        odd = pc.filter(arrow, python).to_pylist()
        out = pc.replace_with_mask(out, python, pa.array([compiled.sub(repl, v) for v in odd], pa.large_string()))
    return pd.Series(pandas_strings(out), index=values.index)


def re_extract(values: pd.Series, pattern: str) -> pd.DataFrame:
    """``values.str.extract(pattern)`` (one column per group, ``<NA>`` where it does not match) at Arrow speed.

    As in :func:`re_replace`, RE2 runs over ASCII values without newlines and Python's ``re`` over the rest.
    Groups are plain ``(...)`` (Arrow needs them named, so they are named here), never optional, and no
    parenthesis stands in a character class: as in the patterns used here.
    """
    compiled = re.compile(pattern)
    names = [f"g{i}" for i in range(compiled.groups)]
    counter = iter(names)
    named = re.sub(r"(?<!\\)\((?!\?)", lambda _: f"(?P<{next(counter)}>", pattern)
    arrow = arrow_strings(values)
    found = pc.extract_regex(arrow, re2_pattern(named))
    python = _python_rows(arrow, "\n")
    odd = [compiled.search(v) for v in pc.filter(arrow, python).to_pylist()] if pc.any(python).as_py() else None
    columns = {}
    for i, name in enumerate(names):
        column = pc.struct_field(found, name)
        if odd is not None:
            column = pc.replace_with_mask(
                column, python, pa.array([m.group(i + 1) if m else None for m in odd], pa.large_string())
            )
        columns[i] = pandas_strings(column)
    return pd.DataFrame(columns, index=values.index)


def re_fullmatch(values: pd.Series, pattern: str) -> np.ndarray:
    """``values.str.fullmatch(pattern)`` as booleans (False where missing), with Python ``re`` semantics.

    pandas matches a pattern with ``\\s`` in Python, one value at a time; here, as in :func:`re_replace`, RE2 runs
    over the ASCII values without a newline and Python's ``re`` over the rest.
    """
    arrow = arrow_strings(values)
    found = pc.match_substring_regex(arrow, f"^(?:{re2_pattern(pattern)})$").fill_null(False)
    python = _python_rows(arrow, "\n")
    if pc.any(python).as_py():
        compiled = re.compile(pattern)
        odd = [compiled.fullmatch(v) is not None for v in pc.filter(arrow, python).to_pylist()]
        found = pc.replace_with_mask(found, python, pa.array(odd, pa.bool_()))
    return found.to_numpy(zero_copy_only=False)


def map_words(values: pd.Series, table: dict[str, str], lower: bool = False) -> pd.Series:
    """``" ".join(table.get(w, w) for w in v.split())`` for each value (``w.lower()`` looked up when ``lower``).

    Words are split, looked up and re-joined in Arrow. Python's ``split()`` also splits on tabs, newlines, the
    separators \\x1c-\\x1f and non-ASCII spaces: values holding any of those, or any non-ASCII character, go
    through Python.
    """
    arrow = arrow_strings(values)
    n = len(arrow)
    words = pc.split_pattern(arrow, " ")
    flat = pc.list_flatten(words)
    parent = pc.list_parent_indices(words)
    kept = pc.not_equal(flat, "")
    flat, parent = pc.filter(flat, kept), pc.filter(parent, kept).to_numpy()
    keys = pa.array(list(table), pa.large_string())
    found = pc.index_in(pc.utf8_lower(flat) if lower else flat, value_set=keys)
    mapped = pc.coalesce(pc.take(pa.array(list(table.values()), pa.large_string()), found), flat)
    offsets = np.concatenate([[0], np.cumsum(np.bincount(parent, minlength=n))]).astype(np.int64)
    joined = pc.binary_join(pa.LargeListArray.from_arrays(pa.array(offsets), mapped), pa.scalar(" ", pa.large_string()))
    out = pc.if_else(pc.is_null(arrow), pa.nulls(n, pa.large_string()), joined)
    python = _python_rows(arrow, "[\t\n\v\f\r\x1c-\x1f]")
    if pc.any(python).as_py():

        def one(v: str) -> str:
            return " ".join(table.get(w.lower() if lower else w, w) for w in v.split())

        odd = [one(v) for v in pc.filter(arrow, python).to_pylist()]
        out = pc.replace_with_mask(out, python, pa.array(odd, pa.large_string()))
    return pd.Series(pandas_strings(out), index=values.index)


def _python_rows(arrow: pa.Array, odd: str) -> pa.BooleanArray:
    """The values Arrow may treat unlike Python: any with a non-ASCII character or a match of the regex ``odd``."""
    python = pc.invert(pc.string_is_ascii(arrow)).fill_null(False)
    return pc.or_(python, pc.match_substring_regex(arrow, odd).fill_null(False))
