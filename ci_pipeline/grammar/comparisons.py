"""The catalogue of probabilistic comparisons: each kind's parameters and levels, and the checks of a description.

A comparison is described as ``{kind: jaro_winkler, column: city, thresholds: [0.9, 0.8], without: [exact]}``.
The configuration checks descriptions with :func:`comparison_problems` (``validate`` names every mistake with its
key path) and the matcher (``ci_pipeline.unify.probabilistic``) builds its comparisons from the same catalogue
(their levels and the same checks), so the two cannot disagree on what a kind takes.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import Any

#: Keys every comparison takes besides its kind's own parameters.
COMMON = {"column": None, "term_frequency": False, "without": ()}

DATE_LEVELS = (
    "exact",
    "day_month_transposed",
    "one_typo",
    "same_year_month",
    "same_month_day",
    "same_year",
    "within_1_year",
    "within_5_years",
    "else",
)


def _similarities(thresholds) -> tuple[str, ...]:
    return tuple(f"jaro_winkler>={t:g}" for t in thresholds)


@dataclass(frozen=True)
class Kind:
    """One kind of comparison: its parameters (name -> default), levels and what it is for."""

    name: str
    summary: str
    levels: Callable[[dict], tuple[str, ...]]
    parameters: dict[str, Any] = field(default_factory=dict)

    def all_levels(self, parameters: dict) -> tuple[str, ...]:
        """Every level of a comparison of this kind, strongest first, ``else`` last."""
        return self.levels({**self.parameters, **parameters})


KINDS: dict[str, Kind] = {
    k.name: k
    for k in (
        Kind("exact", "exact agreement", lambda p: ("exact", "else")),
        Kind(
            "jaro_winkler",
            "Jaro-Winkler similarity at thresholds (high to low)",
            lambda p: ("exact", *_similarities(p["thresholds"]), "else"),
            {"thresholds": (0.92, 0.88, 0.7), "same_numbers": False},
        ),
        Kind(
            "levenshtein",
            "Levenshtein distance at thresholds (low to high)",
            lambda p: ("exact", *(f"levenshtein<={t}" for t in p["thresholds"]), "else"),
            {"thresholds": (1, 2)},
        ),
        Kind(
            "damerau_levenshtein",
            "optimal-string-alignment distance at thresholds (a transposition is one edit)",
            lambda p: ("exact", *(f"damerau_levenshtein<={t}" for t in p["thresholds"]), "else"),
            {"thresholds": (1, 2)},
        ),
        Kind(
            "name",
            "personal names: swapped with another column, nickname, initial, Jaro-Winkler thresholds",
            lambda p: (
                "exact",
                *(("swapped",) if p["swap_with"] else ()),
                "nickname",
                "initial",
                *_similarities(p["thresholds"]),
                "else",
            ),
            {"thresholds": (0.92, 0.88, 0.7), "swap_with": None},
        ),
        Kind("date", "dates by component", lambda p: DATE_LEVELS),
        Kind("identifier", "identifiers and phones: one typing error", lambda p: ("exact", "one_typo", "else")),
        Kind("email", "e-mail addresses", lambda p: ("exact", "same_user", "same_domain", "else")),
        Kind(
            "postal_code",
            "postal codes: one typing error, same prefix, then the more general places it implies (then)",
            lambda p: (
                "exact",
                "one_typo",
                f"same_prefix_{p['prefix_length']}",
                *(f"same_{c}" for c in p["then"]),
                "else",
            ),
            {"prefix_length": 3, "then": ()},
        ),
        Kind(
            "place",
            "a place and the more general places it implies (then), from the most specific",
            lambda p: ("exact", *_similarities(p["thresholds"]), *(f"same_{c}" for c in p["then"]), "else"),
            {"thresholds": (0.92, 0.8), "then": (), "same_numbers": False},
        ),
    )
}

#: Kinds whose thresholds are similarities (listed high to low); the others with thresholds take edit distances.
SIMILARITY_KINDS = ("jaro_winkler", "name", "place")
#: Kinds that take ``then``: more general places compared as the levels below their own.
GENERAL_PLACE_KINDS = ("place", "postal_code")


def did_you_mean(name: str, choices: Collection[str]) -> str:
    """``" (did you mean 'x'?)"`` for a near miss, else ``""``."""
    close = difflib.get_close_matches(str(name), [str(c) for c in choices], n=1, cutoff=0.7)
    return f" (did you mean {close[0]!r}?)" if close else ""


def threshold_problems(kind: str, thresholds, where: str) -> list[str]:
    """Thresholds of a similarity kind must lie strictly between 0 and 1, high to low; of an edit-distance kind
    be whole distances of 1 or more, low to high."""
    values = list(thresholds) if isinstance(thresholds, list | tuple) else [thresholds]
    if kind in SIMILARITY_KINDS:
        if not values or any(isinstance(t, bool) or not isinstance(t, int | float) or not 0 < t < 1 for t in values):
            return [f"{where}: thresholds {values} must be similarities strictly between 0 and 1"]
        if any(a <= b for a, b in zip(values, values[1:], strict=False)):
            return [f"{where}: thresholds {values} are out of order; list them from high to low"]
        return []
    if not values or any(isinstance(t, bool) or not isinstance(t, int | float) or int(t) != t or t < 1 for t in values):
        return [f"{where}: thresholds {values} must be whole edit distances of 1 or more"]
    if any(a >= b for a, b in zip(values, values[1:], strict=False)):
        return [f"{where}: thresholds {values} are out of order; list them from low to high"]
    return []


def parameters_of(spec: dict) -> dict:
    """A description's values as a comparison takes them: lists as tuples, and a single threshold as a list of one
    (``thresholds: 0.9`` means one threshold)."""
    out = {k: tuple(v) if isinstance(v, list) else v for k, v in spec.items()}
    if "thresholds" in out and not isinstance(out["thresholds"], tuple):
        out["thresholds"] = (out["thresholds"],)
    return out


def _compared_columns(spec: dict) -> tuple[str, ...]:
    """The columns whose agreement a comparison description weighs: its column and the general places of ``then``
    (``swap_with`` is only read for the swapped level, which another comparison weighs as its own column)."""
    then = spec.get("then") or ()
    return (spec.get("column"), *(then if isinstance(then, list | tuple) else ()))


def compared_twice_problem(specs: list, where: str = "comparisons") -> str | None:
    """Columns that several comparisons weigh (:func:`_compared_columns`), or None: the model takes its comparisons as
    independent evidence, so a column weighed twice counts its agreement twice."""
    by_column: dict[str, list[str]] = {}
    for i, spec in enumerate(specs):
        if isinstance(spec, dict):
            for j, column in enumerate(_compared_columns(spec)):
                if isinstance(column, str):
                    by_column.setdefault(column, []).append(f"[{i}]" + ("" if j == 0 else f".then[{j - 1}]"))
    twice = {column: at for column, at in by_column.items() if len(at) > 1}
    if not twice:
        return None
    said = "; ".join(f"{column} by comparisons{' and comparisons'.join(at)}" for column, at in sorted(twice.items()))
    then = " (a column among a place's 'then' is compared there)" if ".then[" in said else ""
    return f"{where}: column(s) compared twice ({said}); keep one comparison each{then}"


def _parameter_problems(kind: Kind, spec: dict, where: str) -> list[str]:
    found = []
    if not isinstance(spec.get("term_frequency", False), bool):
        found.append(
            f"{where}.term_frequency: {spec['term_frequency']!r} is not a yes or no; write term_frequency: true "
            "(or false), unquoted"
        )
    if "thresholds" in spec:
        found += threshold_problems(kind.name, spec["thresholds"], f"{where}.thresholds")
    if not isinstance(spec.get("same_numbers", False), bool):
        found.append(
            f"{where}.same_numbers: {spec['same_numbers']!r} is not a yes or no; write true or false, unquoted"
        )
    if "prefix_length" in spec:
        length = spec["prefix_length"]
        if isinstance(length, bool) or not isinstance(length, int) or length < 1:
            found.append(f"{where}.prefix_length: {length!r} must be a whole number of 1 or more")
    if spec.get("swap_with") is not None and spec.get("swap_with") == spec.get("column"):
        found.append(f"{where}.swap_with: names the column itself; name the other name column")
    if kind.name in GENERAL_PLACE_KINDS:
        found += _then_problems(kind.name, spec, where)
    return found


def _then_problems(kind: str, spec: dict, where: str) -> list[str]:
    """``then``, the more general places: column names, none twice nor the compared column; a ``place``
    comparison needs at least one (a postal code may have none)."""
    then = spec.get("then", ())
    if (
        not isinstance(then, list | tuple)
        or not all(isinstance(c, str) for c in then)
        or (kind == "place" and not then)
    ):
        if kind == "place":
            return [
                f"{where}.then: a 'place' comparison needs 'then', the more general places (for example "
                "[postal_code, city]); without them use 'jaro_winkler'"
            ]
        return [f"{where}.then: list the more general places' columns, for example [city]"]
    repeated = sorted({c for c in then if c == spec.get("column") or list(then).count(c) > 1})
    if repeated:
        return [f"{where}.then: names {', '.join(repeated)} twice (or the compared column itself)"]
    return []


def _without_problems(kind: Kind, spec: dict, where: str) -> list[str]:
    without = spec.get("without", ())
    if isinstance(without, str) or not isinstance(without, list | tuple):
        return [f"{where}.without: list the levels to leave out, for example [nickname]"]
    try:
        levels = kind.all_levels(parameters_of(spec))[:-1]
    except (TypeError, KeyError, ValueError):
        return []  # malformed parameters are reported on their own key
    unknown = [level for level in without if level not in levels]
    if not unknown:
        if set(levels) <= set(without):
            return [
                f"{where}.without: leaves out every level but else; a comparison needs at least one level besides "
                f"else: keep one of {', '.join(levels)} (or remove the comparison)"
            ]
        return []
    hint = "".join(did_you_mean(str(level), levels) for level in unknown)
    return [
        f"{where}.without: unknown level(s) {', '.join(map(repr, unknown))} in without{hint}; a {kind.name!r} "
        f"comparison has "
        f"levels {', '.join(levels)} (and else, always kept)"
    ]


def _column_problems(kind: Kind, spec: dict, where: str, columns: Collection[str]) -> list[str]:
    named = [("column", spec.get("column"))]
    if isinstance(spec.get("swap_with"), str):
        named.append(("swap_with", spec["swap_with"]))
    if kind.name in GENERAL_PLACE_KINDS and isinstance(spec.get("then"), list | tuple):
        named += [(f"then[{i}]", c) for i, c in enumerate(spec["then"])]
    return [
        f"{where}.{key}: {name!r} is not mapped{did_you_mean(name, columns)}; map a column to it in "
        f"unify.tables[*].columns or compare a mapped one (mapped: {', '.join(sorted(columns))})"
        for key, name in named
        if isinstance(name, str) and name not in columns
    ]


def comparison_problems(spec: Any, where: str, columns: Collection[str] | None = None) -> list[str]:
    """Every mistake in one comparison description, each starting with its key path (``where`` is the
    comparison's own path, e.g. ``unify.match.probabilistic.comparisons[2]``).

    Args:
        spec: the description, as read from YAML.
        where: its key path.
        columns: when given, the columns that exist (mapped attributes): a comparison on another is a mistake.
    """
    if not isinstance(spec, dict):
        return [f"{where}: a comparison is a mapping with 'kind' and 'column', not {spec!r}"]
    kind_name = spec.get("kind")
    if kind_name not in KINDS:
        return [
            f"{where}.kind: unknown comparison kind {kind_name!r}{did_you_mean(str(kind_name), KINDS)}; use one of "
            + ", ".join(sorted(KINDS))
        ]
    kind = KINDS[kind_name]
    allowed = sorted({*COMMON, *kind.parameters})
    unknown = sorted(set(spec) - set(allowed) - {"kind"})
    if unknown:
        hint = "".join(did_you_mean(k, allowed) for k in unknown)
        return [
            f"{where}: unknown key(s) {', '.join(unknown)}{hint} for a {kind_name!r} comparison; it takes "
            + ", ".join(allowed)
        ]
    if not isinstance(spec.get("column"), str) or not spec["column"]:
        return [f"{where}: a {kind_name!r} comparison needs 'column' (the column it compares)"]
    found = _parameter_problems(kind, spec, where)
    found += [] if found else _without_problems(kind, spec, where)
    if columns is not None:
        found += _column_problems(kind, spec, where, columns)
    return found


#: The levels of a date's distance in years, nearest first (see :func:`bands`).
YEAR_BANDS = ("within_1_year", "within_5_years", "else")


def bands(levels: tuple[str, ...]) -> list[list[int]]:
    """Runs of ``levels`` (positions) that are bands of one measure, most similar first: the thresholds of one
    similarity or distance, with ``else`` when it comes right after them (below the last threshold), and a date's
    distance in years. A pair in a later band of a run is less alike than one in an earlier band by that measure."""
    runs, run, measure = [], [], None
    for i, level in enumerate(levels):
        this = level.split(">=")[0].split("<=")[0] if (">=" in level or "<=" in level) else None
        if level in YEAR_BANDS:
            this = "years"
        if this is not None and this == measure:
            run.append(i)
            continue
        if level == "else" and measure is not None:
            run.append(i)
        if len(run) >= 2:
            runs.append(run)
        run, measure = ([i], this) if this is not None else ([], None)
    if len(run) >= 2:
        runs.append(run)
    return runs
