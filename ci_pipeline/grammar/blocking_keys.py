"""The written form of a blocking key: ``column`` or ``function(column[, length or other column])``.

A blocking rule (``unify.match.probabilistic.blocking``, ``training_blocking``) and a stratum
(``strata``) are lists of such keys. The configuration checks them with :func:`parse_key` (``validate`` names every
mistake and every key on an unmapped column) and the matcher (``ci_pipeline.unify.probabilistic.blocking``) reads
them with the same function, so the two cannot disagree on what a key is or which columns it reads.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ci_pipeline.grammar.comparisons import did_you_mean

#: Key functions and how each is written.
FUNCTIONS = {
    "prefix": "the first N characters: prefix(last_name, 3)",
    "soundex": "the Soundex code of the first word: soundex(last_name)",
    "year": "the year of a date: year(birth_date)",
    "birthday": "the month and day of a date, whatever its year: birthday(birth_date)",
    "user": "the user name of an e-mail address, before the @ (the whole value without one): user(email)",
    "unordered": "two columns in either order, so swapped values agree: unordered(first_name, last_name)",
    "nickname": "every word folded to its formal name with the shipped nickname table (bob -> robert): "
    "nickname(first_name)",
}

# A column name may hold blanks ("Site name", as exports name columns), not commas or parentheses.
_NAME = r"[^,()\s](?:[^,()]*[^,()\s])?"
_KEY = re.compile(rf"^\s*(?:(\w+)\s*\(\s*({_NAME})\s*(?:,\s*({_NAME})\s*)?\)|({_NAME}))\s*$")


class BlockingKeyError(ValueError):
    """A key that cannot be read; the message says how to write it."""


@dataclass(frozen=True)
class KeyText:
    """A key as written: ``column`` as is, or ``function(column[, length or other column])``."""

    column: str
    function: str | None = None
    length: int | None = None
    other: str | None = None

    def __str__(self) -> str:
        if self.function is None:
            return self.column
        extra = self.other if self.other is not None else self.length
        return f"{self.function}({self.column}{'' if extra is None else f', {extra}'})"

    @property
    def columns(self) -> tuple[str, ...]:
        """The columns the key reads."""
        return (self.column,) if self.other is None else (self.column, self.other)


def parse_key(text: object) -> KeyText:
    """Read one key.

    Raises:
        BlockingKeyError: the text is no key, names an unknown function, or gives a function the wrong arguments.
    """
    match = _KEY.match(str(text))
    if not match:
        # YAML splits an unquoted [prefix(last_name, 3), birth_date] at the comma: 'prefix(last_name' and '3)'.
        split = "(" in str(text) or ")" in str(text)
        hint = "; quote a key holding a comma, for example 'prefix(last_name, 3)'" if split else ""
        raise BlockingKeyError(f"cannot read blocking key {text!r}; write a column or function(column){hint}")
    function, column, argument, plain = match.groups()
    if plain:
        return KeyText(plain)
    if function not in FUNCTIONS:
        raise BlockingKeyError(
            f"unknown blocking function {function!r}{did_you_mean(function, FUNCTIONS)}; use one of "
            + "; ".join(f"{k}: {v}" for k, v in FUNCTIONS.items())
        )
    written = f"{function}({column}{'' if argument is None else f', {argument}'})"
    if function == "prefix":
        wrong = _length_problem(argument)
        if wrong:
            raise BlockingKeyError(f"{written}: {wrong}; write prefix({column}, 3) for its first 3 characters")
        return KeyText(column, function, length=int(argument))
    if function == "unordered":
        if argument is None or argument == column:
            raise BlockingKeyError(
                f"{written}: needs two different columns; write unordered({column}, <other column>), for example "
                "unordered(first_name, last_name)"
            )
        return KeyText(column, function, other=argument)
    if argument is not None:
        raise BlockingKeyError(f"{written}: {function} takes one column (one argument); write {function}({column})")
    return KeyText(column, function)


def _length_problem(argument: str | None) -> str | None:
    """What is wrong with a prefix length as written, or None for a whole number of 1 or more."""
    if argument is None:
        return "the length is missing"
    if not re.fullmatch(r"[+-]?\d+", argument):
        return f"{argument!r} is not a whole number"
    length = int(argument)
    return None if length >= 1 else f"a length of {length} keeps no character (give 1 or more)"


def rule_problem(spec: object) -> str | None:
    """Why a blocking rule as written is neither one key nor a non-empty list of keys; None when it is either."""
    if isinstance(spec, str) or (isinstance(spec, list | tuple) and spec):
        return None
    return f"a blocking rule is a key or a non-empty list of keys (for example [last_name, birth_date]), not {spec!r}"


STRATA_EXAMPLE = "for example [[email, phone], [[first_name, last_name]]]"


def strata_problems(strata: object, where: str = "strata") -> list[str]:
    """What makes strata as written no list of strata, each a non-empty list of keys and a key one key or a
    non-empty list of keys (the keys themselves are read by :func:`parse_key`); each problem starts with its path."""
    if not isinstance(strata, list | tuple):
        return [f"{where}: {strata!r} is no list of strata ({STRATA_EXAMPLE})"]
    found = []
    for i, keys in enumerate(strata):
        if not isinstance(keys, list | tuple) or not keys:
            found.append(f"{where}[{i}]: {keys!r} is no list of keys ({STRATA_EXAMPLE})")
            continue
        found += [
            f"{where}[{i}]: key {key!r} is neither a column nor a list of columns ({STRATA_EXAMPLE})"
            for key in keys
            if not isinstance(key, str)
            and not (isinstance(key, list | tuple) and key and all(isinstance(c, str) for c in key))
        ]
    return found
