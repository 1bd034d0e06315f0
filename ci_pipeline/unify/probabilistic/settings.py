"""Settings of probabilistic matching: they only describe the model (comparisons, blocking, thresholds).

The code that trains and scores reads them (``model.train``, ``scoring.predict``); a trained model keeps the
settings it was trained on, so scoring with settings whose comparisons differ is refused (retrain).
"""

from __future__ import annotations

import math
import numbers
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, fields
from difflib import get_close_matches
from typing import Literal

from ci_pipeline.grammar.blocking_keys import strata_problems
from ci_pipeline.grammar.comparisons import compared_twice_problem
from ci_pipeline.unify.probabilistic.blocking import BlockingRule, Key, key_columns
from ci_pipeline.unify.probabilistic.comparisons import Comparison, SettingsError, comparison_from_dict

#: A pair is a link when a match is likelier than not (Splink's default too). With calibrated probabilities the
#: threshold that maximises the expected F1 is half the F1 reached, so about 0.5 when matching works; the strata
#: (pairs whose fields go together among non-matches, fitted apart) keep the probabilities calibrated where the
#: independent model overstated the evidence, and the over-merge guard stops what slips through. A user who would
#: rather miss a link than merge two people raises it (0.9: odds of 9 to 1).
DEFAULT_THRESHOLD = 0.5

LinkType = Literal["dedupe", "link_only"]

#: The keys of a description (``unify.match.probabilistic``).
KEYS = frozenset(
    {"link_type", "threshold", "comparisons", "blocking", "training_blocking", "max_pairs_per_rule"}
    | {"u_sample_pairs", "em_sample_pairs", "strata", "max_iterations", "tolerance", "seed"}
)
#: The keys a trained model is bound to: scoring with other comparisons or strata needs another model. The others
#: (threshold, blocking, the training budget) may change between trainings.
TRAINED_KEYS = ("comparisons", "strata")


#: The numeric options: whether each is a whole number, and how to write it.
NUMBERS = {
    "threshold": (False, "give a match probability between 0 and 1, for example 0.9"),
    "tolerance": (False, "give a small number between 0 and 1, for example 1.0e-05"),
    "max_pairs_per_rule": (True, "give a whole number of 1 or more, for example 20000000"),
    "u_sample_pairs": (True, "give a whole number of 1 or more, for example 1000000"),
    "em_sample_pairs": (True, "give a whole number of 1 or more, for example 2000000"),
    "max_iterations": (True, "give a whole number of 1 or more, for example 5000"),
    "seed": (True, "give a whole number of 0 or more, for example 42"),
}


def _number(key: str, value, how: tuple[bool, str]) -> int | float:
    """``value`` as the number option ``key`` takes, or a SettingsError naming the key, the value and the fix.

    YAML reads 1e6 and 1e-5 (no dot in the mantissa) as text, and a user who writes them means the number: numeric
    text is read as one. A whole-number option takes a number that is whole (1e6 is 1000000)."""
    whole, fix = how
    number = value
    if isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            number = None
    if isinstance(number, bool) or not isinstance(number, numbers.Real) or not math.isfinite(number):
        raise SettingsError(f"{key}: {value!r} is not a number; {fix}")
    if not whole:
        return float(number)
    if number != int(number):
        raise SettingsError(f"{key}: {value!r} is not a whole number; {fix}")
    return int(number)


@dataclass(frozen=True)
class Settings:
    """What a probabilistic model compares, how candidate pairs are found, and when a pair is a link.

    Args:
        comparisons: one comparison per field (see ``comparisons``); their order is the model's.
        blocking: blocking rules, OR-ed: the pairs that are scored.
        training_blocking: blocking rules whose pairs EM trains m on (default: ``blocking``). Pairs blocked only
            on what the members of a household share (address, surname, landline) are mostly households, which EM
            would take for the matching class; training on rules with a personal key avoids that.
        link_type: ``dedupe`` pairs every two records (within and across tables alike); ``link_only`` pairs
            only records of different tables.
        threshold: the match probability from which a pair is a link.
        strata: groups of pairs fitted and weighed apart (see ``model.Stratum``), in order: each a list of keys,
            a key one column or several (or a blocking key of one: ``nickname(first_name)``), and a pair belongs to
            the first stratum one of whose keys it agrees on exactly. For fields several people hold together (a
            household's e-mail address, phone or street) and for names: among such pairs the non-matches
            (housemates, namesakes) agree on more fields than random pairs do.
        max_pairs_per_rule: a blocking rule generating more pairs is refused.
        u_sample_pairs: random record pairs drawn to estimate the u probabilities.
        em_sample_pairs: EM trains on at most this many of the training rules' pairs (outside the strata), a
            seeded sample of them when they are more.
        max_iterations: expectation-maximisation iterations before training stops without converging. A guard
            against a fit that never settles, not a budget: a step over the distinct level patterns costs about a
            millisecond, and a fit on a flat likelihood creeps (RLdata10000's main fit converges after 1,643).
        tolerance: EM has converged when no probability moves by more than this in an iteration.
        seed: seed of the random pair sample.
    """

    comparisons: tuple[Comparison, ...]
    blocking: tuple[BlockingRule, ...]
    training_blocking: tuple[BlockingRule, ...] = ()
    link_type: LinkType = "dedupe"
    threshold: float = DEFAULT_THRESHOLD
    strata: tuple[tuple[tuple[str, ...], ...], ...] = ()
    max_pairs_per_rule: int = 20_000_000
    u_sample_pairs: int = 1_000_000
    em_sample_pairs: int = 2_000_000
    max_iterations: int = 5000
    tolerance: float = 1e-5
    seed: int = 42

    def __post_init__(self):
        if not self.comparisons:
            raise SettingsError("comparisons: list at least one comparison")
        twice = compared_twice_problem([c.to_dict() for c in self.comparisons])
        if twice:
            raise SettingsError(twice)
        if self.link_type not in ("dedupe", "link_only"):
            raise SettingsError(f"link_type: {self.link_type!r} is neither 'dedupe' nor 'link_only'")
        for key, how in NUMBERS.items():
            object.__setattr__(self, key, _number(key, getattr(self, key), how))
        if not 0 < self.threshold < 1:
            # A percentage is the likely slip (90 for 0.9).
            meant = f" (for {self.threshold:g}%, {self.threshold / 100:g})" if 1 < self.threshold < 100 else ""
            raise SettingsError(f"threshold: {self.threshold} is no match probability; give one between 0 and 1{meant}")
        for key in ("max_pairs_per_rule", "u_sample_pairs", "em_sample_pairs", "max_iterations"):
            if getattr(self, key) < 1:
                raise SettingsError(f"{key}: {getattr(self, key)} must be a whole number of 1 or more")
        if self.seed < 0:
            raise SettingsError(f"seed: {self.seed} must be a whole number of 0 or more")
        object.__setattr__(self, "strata", _read_strata(self.strata))
        if not 0 < self.tolerance < 1:
            raise SettingsError(f"tolerance: {self.tolerance} must be between 0 and 1")

    @property
    def training_rules(self) -> tuple[BlockingRule, ...]:
        """The blocking rules EM trains on."""
        return self.training_blocking or self.blocking

    @property
    def columns(self) -> tuple[str, ...]:
        """Every column a comparison, a blocking rule or a stratum reads."""
        return tuple(dict.fromkeys(column for _, column in self._reads()))

    def check_columns(self, available: Iterable[str]) -> None:
        """Refuse comparisons, blocking keys and strata on columns the records do not hold, naming each."""
        available = set(available)
        problems = [f"{reader} reads column {column!r}" for reader, column in self._reads() if column not in available]
        if problems:
            raise SettingsError(
                "; ".join(problems) + f", which is not mapped (mapped: {', '.join(sorted(available))}); map the "
                "column or remove what reads it"
            )

    def _reads(self) -> Iterator[tuple[str, str]]:
        """Each column the settings read, with what reads it as an error names it: comparisons, blocking rules,
        training rules, then strata, part by part (a column read twice comes twice)."""
        for comparison in self.comparisons:
            for column in comparison.columns:
                yield f"comparison {comparison.name!r}", column
        for key, rules in (("blocking", self.blocking), ("training_blocking", self.training_blocking)):
            for i, rule in enumerate(rules):
                for k in rule.keys:
                    for column in k.columns:
                        yield f"{key}[{i}] [{rule}]", column
        for i, keys in enumerate(self.strata):
            for column in stratum_columns(keys):
                yield f"strata[{i}]", column

    def to_dict(self) -> dict:
        """A JSON/YAML-able description; ``from_dict`` reads it back."""
        return {
            "link_type": self.link_type,
            "threshold": self.threshold,
            # Always written, none as []: a description pasted back must not take the default strata instead.
            "strata": [[k[0] if len(k) == 1 else list(k) for k in keys] for keys in self.strata],
            "comparisons": [c.to_dict() for c in self.comparisons],
            "blocking": [r.to_list() for r in self.blocking],
            **({"training_blocking": [r.to_list() for r in self.training_blocking]} if self.training_blocking else {}),
            "max_pairs_per_rule": self.max_pairs_per_rule,
            "u_sample_pairs": self.u_sample_pairs,
            "em_sample_pairs": self.em_sample_pairs,
            "max_iterations": self.max_iterations,
            "tolerance": self.tolerance,
            "seed": self.seed,
        }

    @classmethod
    def from_dict(cls, data: dict, base: Settings | None = None) -> Settings:
        """Settings from their description; unknown keys, kinds and malformed rules are clear errors.

        ``base``: where the description leaves a key out, its value (:func:`over`)."""
        if not isinstance(data, dict):
            raise SettingsError(f"probabilistic settings must be a mapping, not {type(data).__name__}")
        unknown = sorted(set(data) - KEYS)
        if unknown:
            near = [f"{k} (did you mean {m[0]!r}?)" if (m := get_close_matches(k, KEYS, 1)) else k for k in unknown]
            takes = f"the settings take {', '.join(sorted(KEYS))}"
            if len(unknown) == 1:  # under its own key, so that the configuration's error points at its line
                raise SettingsError(f"{unknown[0]}: not a setting{near[0][len(unknown[0]) :]}; {takes}")
            raise SettingsError(f"unknown key(s) {', '.join(near)}; {takes}")
        if base is not None:
            data = over(data, base)
        comparisons = data.get("comparisons") or []
        if not isinstance(comparisons, list):
            raise SettingsError("comparisons: a list of comparisons ({kind: ..., column: ...})")
        rules = {}
        for key in ("blocking", "training_blocking"):
            rules[key] = data.get(key) or []
            if not isinstance(rules[key], list):
                raise SettingsError(f"{key}: a list of blocking rules (each a key or a list of keys)")
        options = {k: v for k, v in data.items() if k not in ("comparisons", "blocking", "training_blocking")}
        return cls(
            comparisons=tuple(comparison_from_dict(c, f"comparisons[{i}]") for i, c in enumerate(comparisons)),
            **{
                key: tuple(BlockingRule.parse(r, f"{key}[{i}]") for i, r in enumerate(listed))
                for key, listed in rules.items()
            },
            **options,
        )


def stratum_columns(keys: Iterable[tuple[str, ...]]) -> Iterator[str]:
    """The columns one stratum's keys read, part by part (``nickname(first_name)`` reads ``first_name``)."""
    for key in keys:
        for part in key:
            yield from key_columns(part)


def _read_strata(strata) -> tuple[tuple[tuple[str, ...], ...], ...]:
    """Strata as tuples: each a list of keys, a key a column name or a list of them; anything else is an error."""
    found = strata_problems(strata)
    if found:
        raise SettingsError("; ".join(found))
    out = tuple(tuple((key,) if isinstance(key, str) else tuple(key) for key in keys) for keys in strata)
    for i, keys in enumerate(out):
        for key in keys:
            for part in key:
                Key.parse(part, f"strata[{i}]")
    return out


def over(data: dict, base: Settings) -> dict:
    """A description with each key it leaves out taken from ``base``: a block of settings need only say what it
    changes (``threshold: 0.9`` alone keeps the chosen comparisons and blocking). Blocking rules given without
    training rules train on themselves, not on ``base``'s training rules (chosen for other rules)."""
    merged = base.to_dict()
    if "blocking" in data:
        merged.pop("training_blocking", None)
    return merged | data


def placeholder(**given) -> Settings:
    """Settings of one exact comparison and one rule on a column named ``_``, with ``given`` keys: the base of a
    description read only to be checked, or only for the keys it gives."""
    return Settings.from_dict({"comparisons": [{"kind": "exact", "column": "_"}], "blocking": [["_"]], **given})


def option_path(problem: str, where: str = "unify.match.probabilistic") -> str:
    """A settings mistake under the key path of the block holding the settings: ``threshold: 90.0 is ...`` ->
    ``unify.match.probabilistic.threshold: 90.0 is ...`` (a mistake of the block as a whole keeps its path)."""
    key = re.match(r"([a-z_]+): ", problem)
    if key and (key[1] in {f.name for f in fields(Settings)} or problem[key.end() :].startswith("not a setting")):
        return f"{where}.{problem}"
    return f"{where}: {problem}"


def option_problems(data: dict) -> list[str]:
    """The mistakes of a description's keys other than its comparisons, rules and strata (which the configuration
    checks one by one): unknown keys and values out of range or of the wrong type, each a line naming its key."""
    if not isinstance(data, dict):
        return [f"probabilistic settings must be a mapping, not {type(data).__name__}"]
    options = {k: v for k, v in data.items() if k not in ("comparisons", "blocking", "training_blocking", "strata")}
    try:
        Settings.from_dict(options, placeholder())
    except SettingsError as exc:
        return [str(exc)]
    return []
