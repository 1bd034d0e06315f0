"""Segment rules parsed into a small typed tree (never evaluated as Python).

A rule is a condition tree: ``{all: [...]}`` (AND), ``{any: [...]}`` (OR), ``{not: ...}``, or a leaf:

- ``{field: profile.City, op: '=', value: Seattle}`` or ``{field: measure.total_spend, op: '>=', value: 500}``
  (also ``prediction.<field>`` and ``enrichment.<enrichment name>.<field>``);
- ``{activity: orders, within: 90 days, where: [...], count: {op: '>=', value: 2}}``: has (at least N) activities;
- ``{segment: other_segment}``: member of another segment.

A segment's rules are combined in order: the first starts the set, each next one has ``combine`` = ``union``
(default), ``intersect`` or ``except``.

The configuration validates rules with this parser and the segments stage evaluates the trees it returns.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from ci_pipeline.errors import key_path
from ci_pipeline.grammar.conditions import Condition, parse_period

NAMESPACES = {
    "profile": "profile",
    "measure": "measure",
    "measures": "measure",
    "prediction": "prediction",
    "predictions": "prediction",
    "enrichment": "enrichment",
    "enrichments": "enrichment",
}
COMBINES = ("union", "intersect", "except")
#: Levels of ``all``/``any``/``not`` a segment's rules may nest (documented in docs/configuration.md, "Limits").
#: Real rules rarely pass five; the bound keeps the recursive rule parser and evaluator far from Python's stack.
MAX_RULE_DEPTH = 50


class RuleError(ValueError):
    """A rule that cannot be parsed; the message starts with the key path."""


def _freeze(value):
    if isinstance(value, list | tuple):
        return tuple(_freeze(v) for v in value)
    if isinstance(value, dict):
        return tuple(sorted((k, _freeze(v)) for k, v in value.items()))
    return value


@dataclass(frozen=True)
class FieldTest:
    namespace: str
    name: str
    op: str
    value: Any
    key: str = field(compare=False, default="")


@dataclass(frozen=True)
class ActivityTest:
    activities: tuple[str, ...]
    within: Any
    where: tuple[tuple[str, str, Any], ...]
    count_op: str
    count_value: float
    key: str = field(compare=False, default="")


@dataclass(frozen=True)
class SegmentTest:
    name: str
    key: str = field(compare=False, default="")


@dataclass(frozen=True)
class AllOf:
    items: tuple


@dataclass(frozen=True)
class AnyOf:
    items: tuple


@dataclass(frozen=True)
class Not:
    item: Any


@dataclass(frozen=True)
class Rule:
    combine: str
    node: Any


def parse_rules(raw_rules: list, key: str) -> list[Rule]:
    """Parse a segment's rules; raises :class:`RuleError` naming the key path of the first problem."""
    rules = []
    for i, raw in enumerate(raw_rules):
        sub = f"{key}[{i}]"
        if not isinstance(raw, dict):
            raise RuleError(f"{sub}: a rule is a mapping such as {{all: [...]}}; got {raw!r}")
        raw = dict(raw)
        combine = raw.pop("combine", "union")
        if combine not in COMBINES:
            raise RuleError(f"{sub}.combine: unknown combination {combine!r}; use union, intersect or except")
        if i == 0 and combine != "union":
            raise RuleError(f"{sub}.combine: the first rule starts the segment; 'combine' applies from the second")
        rules.append(Rule(combine, parse_node(raw, sub)))
    return rules


def parse_node(raw, key: str):
    """One condition tree node."""
    if not isinstance(raw, dict):
        raise RuleError(f"{key}: a condition is a mapping; got {raw!r}")
    groups = [k for k in ("all", "any", "not") if k in raw]
    if groups:
        if len(raw) != 1:
            raise RuleError(f"{key}: '{groups[0]}' stands alone; move {sorted(set(raw) - {groups[0]})} inside it")
        kind = groups[0]
        if kind == "not":
            return Not(parse_node(raw["not"], f"{key}.not"))
        items = raw[kind]
        if not isinstance(items, list) or not items:
            raise RuleError(f"{key}.{kind}: give a non-empty list of conditions")
        nodes = tuple(parse_node(item, f"{key}.{kind}[{j}]") for j, item in enumerate(items))
        return AllOf(nodes) if kind == "all" else AnyOf(nodes)
    if "segment" in raw:
        _only(raw, {"segment"}, key)
        if not isinstance(raw["segment"], str):
            raise RuleError(f"{key}.segment: give a segment name")
        return SegmentTest(raw["segment"], key=f"{key}.segment")
    if "activity" in raw:
        return _activity(raw, key)
    if "field" in raw:
        _only(raw, {"field", "op", "value"}, key)
        condition = _condition(raw, key)
        namespace, _, name = condition.field.partition(".")
        if namespace not in NAMESPACES or not name:
            raise RuleError(
                f"{key}.field: {condition.field!r} names no known field; write profile.<attribute>, "
                "measure.<measure name>, prediction.<field> or enrichment.<enrichment name>.<field>"
            )
        if NAMESPACES[namespace] == "enrichment" and "." not in name.strip("."):
            raise RuleError(
                f"{key}.field: {condition.field!r}: write enrichment.<enrichment name>.<field>, e.g. "
                "enrichment.brand_affinity.Top"
            )
        return FieldTest(NAMESPACES[namespace], name, condition.op, _freeze(condition.value), key=key)
    raise RuleError(f"{key}: a condition has 'field', 'activity', 'segment', 'all', 'any' or 'not'; got {raw}")


def _only(raw: dict, allowed: set[str], key: str) -> None:
    extra = sorted(set(raw) - allowed)
    if extra:
        raise RuleError(f"{key}.{extra[0]}: unknown key; a condition of this kind takes {', '.join(sorted(allowed))}")


def _condition(raw: dict, key: str) -> Condition:
    try:
        return Condition.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = key_path(err["loc"])
        raise RuleError(f"{key}{'.' + where if where else ''}: {err['msg'].removeprefix('Value error, ')}") from None


def _activity(raw: dict, key: str) -> ActivityTest:
    _only(raw, {"activity", "within", "where", "count"}, key)
    names = raw["activity"]
    names = [names] if isinstance(names, str) else names
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        raise RuleError(f"{key}.activity: give an activity name or a list of them")
    within = raw.get("within")
    if within is not None:
        try:
            parse_period(within)
        except ValueError as exc:
            raise RuleError(f"{key}.within: {exc}") from None
    where = []
    for j, cond in enumerate(raw.get("where") or []):
        if not isinstance(cond, dict):
            raise RuleError(f"{key}.where[{j}]: a filter is {{field, op, value}}")
        parsed = _condition(cond, f"{key}.where[{j}]")
        where.append((parsed.field, parsed.op, _freeze(parsed.value)))
    count = raw.get("count", {"op": ">=", "value": 1})
    if not isinstance(count, dict):
        raise RuleError(f"{key}.count: give {{op: '>=', value: N}}")
    parsed = _condition({"field": "count", **count}, f"{key}.count")
    if (
        parsed.op not in ("=", "!=", "<", "<=", ">", ">=")
        or isinstance(parsed.value, bool)
        or not isinstance(parsed.value, int | float)
    ):
        raise RuleError(f"{key}.count: compare the number of activities with = != < <= > >= and a number")
    return ActivityTest(tuple(names), _freeze(within), tuple(where), parsed.op, float(parsed.value), key=key)


def too_deep(rules: list) -> str | None:
    """The key path (below the segment) where raw rules first nest deeper than :data:`MAX_RULE_DEPTH`, or None.

    Checked before parsing, without recursion, so that a hostile file cannot exhaust the parser's stack.
    """
    stack = [(f"rules[{i}]", rule, 0) for i, rule in enumerate(rules)]
    while stack:
        path, node, depth = stack.pop()
        if not isinstance(node, dict):
            continue
        for group in ("all", "any", "not"):
            if group not in node:
                continue
            if depth + 1 > MAX_RULE_DEPTH:
                return f"{path}.{group}"
            items = node[group]
            if group == "not":
                stack.append((f"{path}.not", items, depth + 1))
            elif isinstance(items, list):
                stack.extend((f"{path}.{group}[{j}]", item, depth + 1) for j, item in enumerate(items))
    return None


def walk(node):
    """Every node of a tree, depth first."""
    yield node
    if isinstance(node, AllOf | AnyOf):
        for item in node.items:
            yield from walk(item)
    elif isinstance(node, Not):
        yield from walk(node.item)


#: Suggested segments over the RFM score measures (templates ``rfm_*_score`` of the measures section).
RFM_TEMPLATES: dict[str, list[dict]] = {
    "rfm_champions": [
        {
            "all": [
                {"field": "measure.rfm_recency_score", "op": ">=", "value": 4},
                {"field": "measure.rfm_frequency_score", "op": ">=", "value": 4},
                {"field": "measure.rfm_monetary_score", "op": ">=", "value": 4},
            ]
        }
    ],
    "rfm_loyal": [
        {
            "all": [
                {"field": "measure.rfm_frequency_score", "op": ">=", "value": 4},
                {"field": "measure.rfm_recency_score", "op": ">=", "value": 3},
            ]
        }
    ],
    "rfm_at_risk": [
        {
            "all": [
                {"field": "measure.rfm_recency_score", "op": "<=", "value": 2},
                {"field": "measure.rfm_frequency_score", "op": ">=", "value": 3},
            ]
        }
    ],
    "rfm_hibernating": [
        {
            "all": [
                {"field": "measure.rfm_recency_score", "op": "<=", "value": 2},
                {"field": "measure.rfm_frequency_score", "op": "<=", "value": 2},
            ]
        }
    ],
    "rfm_new": [
        {
            "all": [
                {"field": "measure.rfm_recency_score", "op": "=", "value": 5},
                {"field": "measure.rfm_frequency_score", "op": "<=", "value": 2},
            ]
        }
    ],
}
