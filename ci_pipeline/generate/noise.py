"""Vectorised text rendering and the noise real systems add: typos, case, spacing, phone and date formats, gaps.

Every function takes its randomness from the caller's generator, so a seed fixes the output.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

STR = "str"


def sequential_ids(prefix: str, n: int, width: int) -> pd.Series:
    """``prefix`` + 1..n zero-padded to ``width`` digits (``C0000001``)."""
    return prefix + pd.Series(np.arange(1, n + 1)).astype(STR).str.zfill(width)


def take(pool: np.ndarray | pd.Series, index: np.ndarray) -> pd.Series:
    """Pool values at ``index`` as a string Series (negative index -> missing).

    The gather runs in Arrow, so a million rows never become a million Python strings.
    """
    index = np.asarray(index, dtype=np.int64)
    if isinstance(pool, pd.Series):
        values = pa.array(pool.astype(STR).to_numpy(dtype=object), type=pa.large_string())
    else:
        values = pa.array(pool.tolist(), type=pa.large_string())
    series = pd.Series(pc.take(values, pa.array(np.maximum(index, 0))), dtype=STR)
    missing = index < 0
    return series.mask(missing) if missing.any() else series


def rows(values: pd.Series, index: np.ndarray) -> pd.Series:
    """``values`` at the given positions, renumbered from 0."""
    return values.take(index).reset_index(drop=True)


def constant(value: str, n: int) -> pd.Series:
    """The same string ``n`` times."""
    return take(np.array([value], dtype=object), np.zeros(n, dtype=np.int64))


def chance(rng: np.random.Generator, n: int, p: float) -> np.ndarray:
    """A boolean mask that is True for about ``p`` of ``n`` rows."""
    return rng.random(n) < p


def blank(values: pd.Series, rng: np.random.Generator, p: float) -> pd.Series:
    """Leave about ``p`` of the values empty (a field nobody filled in)."""
    return values.mask(chance(rng, len(values), p))


def recase(values: pd.Series, rng: np.random.Generator, upper: float, lower: float) -> pd.Series:
    """Write some values in UPPER and some in lower case, as different systems and typists do."""
    draw = rng.random(len(values))
    out = values.mask(draw < upper, values.str.upper())
    return out.mask((draw >= upper) & (draw < upper + lower), values.str.lower())


def respace(values: pd.Series, rng: np.random.Generator, p: float) -> pd.Series:
    """Add a stray leading/trailing blank or a doubled inner blank to about ``p`` of the values."""
    draw = rng.random(len(values))
    out = values.mask(draw < p / 3, " " + values)
    out = out.mask((draw >= p / 3) & (draw < 2 * p / 3), values + " ")
    return out.mask((draw >= 2 * p / 3) & (draw < p), values.str.replace(" ", "  ", n=1, regex=False))


_TYPO_LETTERS = "aeiounrstlmc"


def typo(values: pd.Series, rng: np.random.Generator, p: float) -> pd.Series:
    """Put one typing error (swap, drop, double or wrong letter) into about ``p`` of the values.

    Only the chosen rows (a small share) are edited one by one; the rest of the column is untouched.
    """
    chosen = chance(rng, len(values), p) & values.notna().to_numpy() & (values.str.len().fillna(0) >= 4).to_numpy()
    rows = np.flatnonzero(chosen)
    if len(rows) == 0:
        return values
    kind = rng.integers(0, 4, len(rows))
    where = rng.random(len(rows))
    letter = rng.integers(0, len(_TYPO_LETTERS), len(rows))
    edited = [
        _one_typo(text, int(k), w, _TYPO_LETTERS[int(c)])
        for text, k, w, c in zip(values.to_numpy(dtype=object)[rows], kind, where, letter, strict=True)
    ]
    out = values.copy()
    out.iloc[rows] = edited
    return out


def _one_typo(text: str, kind: int, where: float, letter: str) -> str:
    # Keep the first letter: people rarely mistype it, and blocking on it stays realistic.
    i = 1 + int(where * (len(text) - 2))
    if kind == 0:
        return text[:i] + text[i + 1] + text[i] + text[i + 2 :]
    if kind == 1:
        return text[:i] + text[i + 1 :]
    if kind == 2:
        return text[:i] + text[i] + text[i:]
    return text[:i] + (letter.upper() if text[i].isupper() else letter) + text[i + 1 :]


#: Phone styles: +1 (555) 010-1234, 5550101234, 555-010-1234, (555) 010-1234, 555.010.1234, +15550101234,
#: 1-555-010-1234.
PHONE_STYLES = 7


def phone_text(numbers: np.ndarray, style: np.ndarray) -> pd.Series:
    """Render 10-digit numbers (0 = none -> missing) in the given styles (0..6, see :data:`PHONE_STYLES`)."""
    area = pd.Series(numbers // 10_000_000).astype(STR)
    exchange = pd.Series(numbers // 10_000 % 1000).astype(STR).str.zfill(3)
    line = pd.Series(numbers % 10_000).astype(STR).str.zfill(4)
    out = pd.Series(pd.NA, index=area.index, dtype=STR)
    for k, render in enumerate(
        (
            lambda a, e, ln: "+1 (" + a + ") " + e + "-" + ln,
            lambda a, e, ln: a + e + ln,
            lambda a, e, ln: a + "-" + e + "-" + ln,
            lambda a, e, ln: "(" + a + ") " + e + "-" + ln,
            lambda a, e, ln: a + "." + e + "." + ln,
            lambda a, e, ln: "+1" + a + e + ln,
            lambda a, e, ln: "1-" + a + "-" + e + "-" + ln,
        )
    ):
        rows = (style == k) & (numbers > 0)
        if rows.any():
            out[rows] = render(area[rows], exchange[rows], line[rows])
    return out


def date_text(days: np.ndarray, fmt: str) -> pd.Series:
    """Render days since 1970-01-01 (negative before 1970) with a strftime format.

    Each distinct day is formatted once, so a million rows cost a few thousand strftime calls.
    """
    unique, inverse = np.unique(days, return_inverse=True)
    return take(pd.to_datetime(unique, unit="D").strftime(fmt).to_numpy(dtype=object), inverse)


def datetime_text(seconds: np.ndarray, date_fmt: str, time_fmt: str = "%H:%M:%S", sep: str = " ") -> pd.Series:
    """Render seconds since 1970-01-01 as ``<date><sep><time>`` (dates and times formatted per distinct value)."""
    day, second = np.divmod(seconds, 86_400)
    return date_text(day, date_fmt) + sep + take(_clock(time_fmt), second)


@lru_cache(maxsize=4)
def _clock(time_fmt: str) -> np.ndarray:
    # Every second of a day, formatted once.
    return pd.to_datetime(np.arange(86_400), unit="s").strftime(time_fmt).to_numpy(dtype=object)
