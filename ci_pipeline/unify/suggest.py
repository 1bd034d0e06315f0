"""Suggest semantic types for a table's columns from their names and values, for the user to confirm."""

from __future__ import annotations

import re

import pandas as pd

#: (semantic type, column-name pattern). The first pattern that matches a normalized column name wins.
NAME_PATTERNS: list[tuple[str, str]] = [
    ("email", r"e_?mail|mail_?address"),
    ("phone", r"phone|mobile|cell|tel(ephone)?\b|fax"),
    ("first_name", r"first_?name|given_?name|forename|fname"),
    ("last_name", r"last_?name|surname|family_?name|lname"),
    ("middle_name", r"middle_?name"),
    ("full_name", r"full_?name|^name$|customer_?name|contact_?name|requester_?name|display_?name"),
    ("postal_code", r"postal|zip|post_?code"),
    ("street", r"street|address_?(line)?_?1|addr1|^address$"),
    ("city", r"city|town|locality"),
    ("state", r"state|province|region|county"),
    ("country", r"country"),
    ("birth_date", r"birth|dob|date_?of_?birth"),
    ("gender", r"gender|^sex$"),
    ("company", r"company|organi[sz]ation|employer|business_?name"),
]

#: Dates and timestamps as systems write them: ISO (2023-02-21, 2026-06-06T19:09:52), US (03/16/2021 21:21:51) and
#: day-first (16.03.2021). Digit runs like these also pass the phone test, so dates are recognised first.
DATE_VALUE = (
    r"\d{4}[-/.]\d{1,2}[-/.]\d{1,2}([ T]\d{1,2}:\d{2}(:\d{2}(\.\d+)?)?\s*(Z|[+-]\d{2}:?\d{2})?)?"
    r"|\d{1,2}[-/.]\d{1,2}[-/.]\d{2,4}([ T]\d{1,2}:\d{2}(:\d{2})?\s*([AaPp][Mm])?)?"
)

#: Column names of keys and references: their values are never a person's attribute, whatever they look like.
IDENTIFIER_NAME = r"(^|_)(id|key|uuid|guid|number|no|num)$"

NOT_AN_ATTRIBUTE = "not a customer attribute; map it to 'custom' to keep it on the profile"

_VALUE_TESTS: list[tuple[str, str]] = [
    ("email", r"[^@\s]+@[^@\s]+\.[^@\s]+"),
    ("phone", r"\+?[\d\s().\-]{7,}(\s*(x|ext\.?)\s*\d+)?"),
    ("postal_code", r"\d{5}(-\d{4})?|[A-Za-z]\d[A-Za-z] ?\d[A-Za-z]\d|[A-Za-z]{1,2}\d[A-Za-z\d]? ?\d[A-Za-z]{2}"),
    ("gender", r"(?i)m|f|male|female|man|woman|x|other|non-binary|unknown"),
]


def suggest_mapping(frame: pd.DataFrame, sample: int = 2000) -> pd.DataFrame:
    """One row per column: ``column, suggested, confidence, reason`` (``suggested`` empty = leave unmapped).

    A name match is confirmed (or contradicted) by the share of sampled non-empty values that look like the type.
    """
    rows = []
    for column in frame.columns:
        values = frame[column].dropna().astype("string").str.strip()
        values = values[values.str.len() > 0].head(sample)
        by_name = _by_name(str(column))
        dates = _share(values, DATE_VALUE)
        if dates >= 0.8:
            # Only a birth date is a customer attribute; other dates (sign-up, last login) are not matched on.
            if by_name == "birth_date" or _says_birth(str(column)):
                rows.append((column, "birth_date", "high", f"name and {dates:.0%} of values are dates"))
            else:
                rows.append((column, "", "", f"{dates:.0%} of values are dates or times: {NOT_AN_ATTRIBUTE}"))
            continue
        if by_name is None and re.search(IDENTIFIER_NAME, _normalized_name(str(column))):
            rows.append((column, "", "", f"an identifier (the table's key or a reference): {NOT_AN_ATTRIBUTE}"))
            continue
        by_value, share = _by_value(values)
        if by_name and by_value == by_name:
            rows.append((column, by_name, "high", f"name and {share:.0%} of values look like {by_name}"))
        elif by_name and by_name in {"email", "phone", "postal_code", "gender"} and by_value and by_value != by_name:
            rows.append((column, by_value, "medium", f"name says {by_name} but values look like {by_value}"))
        elif by_name:
            rows.append((column, by_name, "medium", "column name"))
        elif by_value:
            rows.append((column, by_value, "medium", f"{share:.0%} of values look like {by_value}"))
        elif _looks_like_date(values) and _says_birth(str(column)):
            rows.append((column, "birth_date", "medium", "dates"))
        else:
            rows.append((column, "", "", "no semantic type recognised (map it to 'custom' to keep it)"))
    return pd.DataFrame(rows, columns=["column", "suggested", "confidence", "reason"])


def _normalized_name(column: str) -> str:
    """``signupDate`` / ``Signup Date`` -> ``signup_date``."""
    return re.sub(r"[^a-z0-9]+", "_", re.sub(r"([a-z])([A-Z])", r"\1_\2", column).lower()).strip("_")


def _says_birth(column: str) -> bool:
    """The raw name mentions a birth date, however it is cased (``DoB`` normalizes to ``do_b``)."""
    return re.search(r"birth|dob", column, re.I) is not None


def _share(values: pd.Series, pattern: str) -> float:
    return float(values.str.fullmatch(pattern).fillna(False).mean()) if len(values) else 0.0


def _by_name(column: str) -> str | None:
    name = _normalized_name(column)
    for kind, pattern in NAME_PATTERNS:
        if re.search(pattern, name):
            return kind
    return None


def _by_value(values: pd.Series) -> tuple[str | None, float]:
    if values.empty:
        return None, 0.0
    for kind, pattern in _VALUE_TESTS:
        share = _share(values, pattern)
        if share >= 0.8:
            if kind == "phone" and values.str.replace(r"\D", "", regex=True).str.len().between(7, 15).mean() < 0.8:
                continue
            return kind, share
    return None, 0.0


def _looks_like_date(values: pd.Series) -> bool:
    if values.empty:
        return False
    return bool(pd.to_datetime(values, errors="coerce", format="mixed").notna().mean() >= 0.8)


def mapping_yaml(suggestions: pd.DataFrame, source: str, table: str) -> str:
    """The ``unify.tables`` entry the suggestions describe, as YAML text to paste and confirm."""
    lines = [f"    - source: {source}", f"      table: {table}", "      columns:"]
    for row in suggestions.itertuples(index=False):
        if row.suggested:
            lines.append(f"        {row.column}: {row.suggested}  # {row.confidence}: {row.reason}")
    return "\n".join(lines)
