"""Conditions on one field (``{field, op, value}``): operator spellings, value shapes and periods.

Measure filters and segment rules share this grammar; the configuration validates with it and the stages evaluate
what it accepts, so it imports neither.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

from pydantic import BaseModel, ConfigDict, field_validator, model_validator

#: Operator spellings accepted in filters and segment conditions -> canonical name.
OPERATOR_ALIASES = {
    "=": "=",
    "==": "=",
    "eq": "=",
    "!=": "!=",
    "<>": "!=",
    "ne": "!=",
    "<": "<",
    "lt": "<",
    "<=": "<=",
    "le": "<=",
    ">": ">",
    "gt": ">",
    ">=": ">=",
    "ge": ">=",
    "between": "between",
    "in": "in",
    "not in": "not_in",
    "contains": "contains",
    "starts with": "starts_with",
    "ends with": "ends_with",
    "is null": "is_null",
    "not null": "not_null",
    "is not null": "not_null",
    "before": "before",
    "date before": "before",
    "after": "after",
    "date after": "after",
    "in last": "in_last",
    "in the last": "in_last",
}
OPERATORS = tuple(dict.fromkeys(OPERATOR_ALIASES.values()))
#: Each operator as the documentation writes it (docs/config/segments.md), for messages.
OPERATOR_NAMES = tuple(o.replace("_", " ").replace("in last", "in the last") for o in OPERATORS)


class Condition(BaseModel):
    """One test on one field: ``{field: status, op: '=', value: completed}``.

    ``value`` is a list of two for ``between``, a list for ``in``/``not_in``, a number of days or a text such as
    ``"3 months"`` for ``in_last``, and absent for ``is_null``/``not_null``.
    """

    # As strict as a configuration block: an unknown key is an error, not silently ignored.
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    field: str
    op: str
    value: Any = None

    @field_validator("op")
    @classmethod
    def _known_operator(cls, value: str) -> str:
        # ``not_in``, ``not in`` and ``NOT IN`` are the same operator.
        canonical = OPERATOR_ALIASES.get(" ".join(value.strip().lower().replace("_", " ").split()))
        if canonical is None:
            raise ValueError(f"unknown operator {value!r}; use one of {', '.join(OPERATOR_NAMES)}")
        return canonical

    @model_validator(mode="after")
    def _value_fits_operator(self):
        op, value = self.op, self.value
        if op in ("is_null", "not_null"):
            if value is not None:
                raise ValueError(f"operator {op} takes no value")
        elif value is None:
            raise ValueError(f"operator {op} needs a value")
        elif op == "between" and not (isinstance(value, list) and len(value) == 2):
            raise ValueError(f"operator between needs a list of two values [low, high]; {_read_as(value)}")
        elif op in ("in", "not_in") and not isinstance(value, list):
            raise ValueError(f"operator {op} needs a list of values")
        elif op in ("contains", "starts_with", "ends_with") and not isinstance(value, str):
            raise ValueError(f"operator {op} compares text; give a text value")
        elif op == "in_last":
            parse_period(value)
        elif op in ("before", "after") and not _is_date(value):
            raise ValueError(f"operator {op} needs a date (YYYY-MM-DD); got {value!r}")
        return self


def _read_as(value) -> str:
    """What a ``between`` value was read as, and the likely slip: ``[1,000, 5,000]`` is four numbers to YAML."""
    if not isinstance(value, list):
        return f"got {value!r}"
    said = f"got {len(value)} value(s): {value!r}"
    # [1,000, 5,000] is read as [1, 0, 5, 0]: pairs of a number and a group of three digits.
    groups = value[1::2]
    numbers = len(value) > 2 and len(value) % 2 == 0 and all(is_number(v) for v in value)
    if numbers and all(isinstance(g, int) and 0 <= g < 1000 for g in groups):
        said += " (a comma separates list items: write 1000, not 1,000)"
    return said


def thousands_hint(values) -> str:
    """The fix when a text value is a number written with thousands separators (``'1,000'``) or an exponent YAML
    reads as text (``'1e3'``): ``" (write 1000, without the thousands separator)"``; else ``""``."""
    for value in values if isinstance(values, list | tuple) else [values]:
        if not isinstance(value, str):
            continue
        text = value.strip()
        if re.fullmatch(r"[+-]?\d{1,3}(,\d{3})+(\.\d+)?", text):
            return f" (write {text.replace(',', '')}, without the thousands separator)"
        if re.fullmatch(r"[+-]?(\d+\.?\d*|\.\d+)[eE][+-]?\d+", text):
            return f" (write {float(text):g} or {_float_yaml(text)}: YAML reads {text} as text)"
    return ""


def _float_yaml(text: str) -> str:
    """An exponent number as YAML reads it as a number (a dot in the mantissa and a signed exponent)."""
    mantissa, exponent = re.split("[eE]", text)
    mantissa = mantissa if "." in mantissa else f"{mantissa}.0"
    return f"{mantissa}e{exponent if exponent[0] in '+-' else '+' + exponent}"


def parse_period(value) -> tuple[int, str]:
    """``90`` / ``"90 days"`` / ``"3 months"`` / ``{"last": 3, "unit": "months"}`` -> (count, unit)."""
    if isinstance(value, bool):
        raise ValueError(f"in_last needs a number of days or a text such as '3 months'; got {value!r}")
    if isinstance(value, int):
        count, unit = value, "days"
    elif isinstance(value, str) and len(value.split()) == 2 and value.split()[0].isdigit():
        count, unit = int(value.split()[0]), value.split()[1].lower()
        unit = unit if unit.endswith("s") else unit + "s"
    elif isinstance(value, dict) and set(value) <= {"last", "unit"} and isinstance(value.get("last"), int):
        count, unit = value["last"], value.get("unit", "days")
    else:
        raise ValueError(f"in_last needs a number of days or a text such as '3 months'; got {value!r}")
    if unit not in ("days", "weeks", "months", "years") or count < 1:
        raise ValueError(f"in_last needs a positive count of days, weeks, months or years; got {value!r}")
    return count, unit


def is_number(value) -> bool:
    """Whether a configured value is a number (``True`` is not, though Python counts it as one)."""
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_date(value) -> bool:
    if isinstance(value, dt.date):
        return True
    if isinstance(value, str):
        try:
            dt.date.fromisoformat(value[:10])
        except ValueError:
            return False
        return True
    return False
