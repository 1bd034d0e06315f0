"""Segments: groups of customers defined by rules over profile fields, measures and activities."""

from __future__ import annotations

import datetime as dt
import difflib
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, model_validator

from ci_pipeline.config.base import Name, StrictModel, did_you_mean
from ci_pipeline.config.measures import find_cycles
from ci_pipeline.outputs import SEGMENT_MEMBERSHIP_NAME

if TYPE_CHECKING:
    from ci_pipeline.config.model import ProjectConfig

#: Levels of ``all``/``any``/``not`` a segment's rules may nest (documented in docs/configuration.md, "Limits").
#: Real rules rarely pass five; the bound keeps the recursive rule parser and evaluator far from Python's stack.
MAX_RULE_DEPTH = 50


def _too_deep(rules: list) -> str | None:
    """The key path (below the segment) where rules first nest deeper than :data:`MAX_RULE_DEPTH`, or None."""
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


class SegmentSpec(StrictModel):
    """One segment: rules combined in order (see docs/config/segments.md)."""

    description: str = ""
    #: ``dynamic`` segments are evaluated every run; ``static`` ones keep their members until refreshed by hand
    #: (``ci-pipeline segment refresh NAME``).
    type: Literal["dynamic", "static"] = "dynamic"
    #: A suggested segment (``rfm_champions``, ``rfm_loyal``, ``rfm_at_risk``, ``rfm_hibernating``, ``rfm_new``)
    #: instead of ``rules``.
    template: str | None = None
    rules: list[dict[str, Any]] = []

    @model_validator(mode="after")
    def _rules_or_template(self):
        from ci_pipeline.segments.rules import RFM_TEMPLATES

        deep = _too_deep(self.rules)
        if deep is not None:
            shown = deep if len(deep) <= 120 else f"{deep[:60]}...{deep[-40:]}"
            raise ValueError(
                f"{shown}: the rules nest all/any/not more than {MAX_RULE_DEPTH} levels deep; flatten them, or "
                "move a part into its own segment and refer to it with {segment: name}"
            )
        if self.template is not None:
            if self.template not in RFM_TEMPLATES:
                raise ValueError(f"unknown template {self.template!r}; use one of {', '.join(RFM_TEMPLATES)}")
            if self.rules:
                raise ValueError("give either 'template' or 'rules', not both")
        elif not self.rules:
            raise ValueError("a segment needs 'rules' (or a 'template')")
        return self

    def raw_rules(self) -> list[dict[str, Any]]:
        """The rules as written, or the template's."""
        from ci_pipeline.segments.rules import RFM_TEMPLATES

        return RFM_TEMPLATES[self.template] if self.template else self.rules


class SegmentsConfig(StrictModel):
    """Groups of customers defined by rules, published per customer as SegmentMembership."""

    #: SegmentProvider of the published rows (default: the project name).
    provider: str | None = None
    membership_type: Literal["Customer", "Contact", "Account"] = "Customer"
    #: The ``Name`` part of SegmentMembership's msdynci_identifier: the name of the membership list. It stays the
    #: same when segments are added or removed, so each customer's row keeps its GUID.
    membership_name: str = Field(SEGMENT_MEMBERSHIP_NAME, min_length=1)
    definitions: dict[Name, SegmentSpec] = {}

    def parsed(self) -> dict[str, list]:
        """Segment name -> parsed rules (raises ``RuleError`` on the first bad rule)."""
        from ci_pipeline.segments.rules import parse_rules

        return {
            name: parse_rules(spec.raw_rules(), f"segments.definitions.{name}.rules")
            for name, spec in self.definitions.items()
        }

    def problems(self, project: ProjectConfig) -> list[str]:
        """Rules that do not parse or name unknown segments, measures or activities; type mismatches; cycles."""
        from ci_pipeline.activities.timeline import FACT_COLUMNS
        from ci_pipeline.segments.rules import ActivityTest, FieldTest, RuleError, SegmentTest, parse_rules, walk

        found: list[str] = []
        if self.definitions and project.unify is None:
            found.append("segments.definitions: segments select unified customers; add a 'unify' section")
        graph: dict[str, set[str]] = {}
        profile = profile_columns(project)
        measures = project.measures.attributes
        activities = project.activities.tables
        types = {t.type for t in activities.values()}
        # The columns of the activity facts that ``where`` filters read: the timeline's own and every semantic field.
        fact_fields = {*FACT_COLUMNS, *(f for t in activities.values() for f in t.fields)}
        for name, spec in self.definitions.items():
            key = f"segments.definitions.{name}.rules"
            graph[name] = set()
            try:
                rules = parse_rules(spec.raw_rules(), key)
            except RuleError as exc:
                found.extend(_each_rule_problem(spec.raw_rules(), key) or [str(exc)])
                continue
            for rule in rules:
                for node in walk(rule.node):
                    if isinstance(node, SegmentTest):
                        graph[name].add(node.name)
                        if node.name not in self.definitions:
                            found.append(
                                f"{node.key}: unknown segment {node.name!r}"
                                f"{did_you_mean(node.name, self.definitions)}; "
                                f"defined: {', '.join(sorted(self.definitions))}"
                            )
                    elif isinstance(node, FieldTest) and node.namespace == "measure":
                        found.extend(_measure_problems(node, measures))
                    elif isinstance(node, FieldTest) and profile and node.name not in profile:
                        close = difflib.get_close_matches(node.name, profile, n=1, cutoff=0.6)
                        found.append(
                            f"{node.key}.field: unknown profile attribute {node.name!r}"
                            f"{f' (did you mean profile.{close[0]}?)' if close else ''}; the unified profile has "
                            f"{', '.join(profile)} (from unify.tables[*].columns and unify.merge)"
                        )
                    elif isinstance(node, ActivityTest):
                        for activity in node.activities:
                            if activity not in activities and activity not in types:
                                found.append(
                                    f"{node.key}.activity: unknown activity {activity!r}"
                                    f"{did_you_mean(activity, activities)}; use one of "
                                    f"{', '.join(sorted(activities)) or '(none under activities.tables)'} "
                                    "or an activity type"
                                )
                        for j, (field, _, _) in enumerate(node.where):
                            if activities and field not in fact_fields:
                                found.append(
                                    f"{node.key}.where[{j}].field: unknown activity field {field!r}"
                                    f"{did_you_mean(field, fact_fields)}; the activities have "
                                    f"{', '.join(sorted(fact_fields))}"
                                )
        cycles = find_cycles(graph)
        for cycle in cycles:
            found.append(
                f"segments.definitions.{cycle[0]}: segments reference each other in a cycle "
                f"{' -> '.join(cycle)}; break it"
            )
        if not cycles:
            for name, length in _reference_chains(graph).items():
                if length > MAX_RULE_DEPTH:
                    found.append(
                        f"segments.definitions.{name}.rules: a chain of {length} segments each built on the next "
                        f"passes the limit of {MAX_RULE_DEPTH}; build the later ones on fewer segments"
                    )
                    break
        return found


def _each_rule_problem(raw_rules: list, key: str) -> list[str]:
    """The first problem of every rule, not only of the first bad one (the parser stops at the first)."""
    from ci_pipeline.segments.rules import RuleError, parse_node

    found = []
    for i, raw in enumerate(raw_rules):
        try:
            parse_node(
                {k: v for k, v in raw.items() if k != "combine"} if isinstance(raw, dict) else raw, f"{key}[{i}]"
            )
        except RuleError as exc:
            found.append(str(exc))
    return found


def profile_columns(project: ProjectConfig) -> list[str]:
    """The columns of the unified profile that ``profile.<name>`` may name, derived as unification builds them.

    The unified fields of :func:`ci_pipeline.unify.merge.unified_fields` (from the map, derived names and
    ``unify.merge``), then one key column per table (``<source>_<table>_<primary key>``), all renamed by
    ``unify.merge.rename``, plus ``PreviousCustomerId``. Empty without a unify section.
    """
    from ci_pipeline.config.unify import UnifyConfig, derived_attributes
    from ci_pipeline.unify.merge import unified_fields

    unify = project.unify
    if not isinstance(unify, UnifyConfig):
        return []
    record_columns = sorted({a for t in unify.tables for a in derived_attributes(t.attributes())})
    names = [f.name for f in unified_fields(unify, record_columns)]
    for t in unify.tables:
        table = project.sources.get(t.source, None)
        spec = None if table is None else table.tables.get(t.table)
        if spec is not None:
            names.append(f"{t.source}_{t.table}_{spec.primary_key}")
    return [unify.merge.rename.get(n, n) for n in names] + ["PreviousCustomerId"]


def _reference_chains(graph: dict[str, set[str]]) -> dict[str, int]:
    """Segment -> length of the longest chain of segments it is built on (itself included), for an acyclic graph."""
    longest: dict[str, int] = {}
    for start in sorted(graph):
        stack = [(start, False)]
        while stack:
            name, done = stack.pop()
            if name in longest or name not in graph:
                continue
            if done:
                longest[name] = 1 + max((longest.get(n, 0) for n in graph[name] if n in graph), default=0)
                continue
            stack.append((name, True))
            stack.extend((n, False) for n in graph[name] if n in graph and n not in longest)
    return longest


def _measure_problems(node, measures) -> list[str]:
    if node.name not in measures:
        return [
            f"{node.key}.field: unknown measure {node.name!r}{did_you_mean(node.name, measures)}; customer attribute "
            "measures are "
            f"{', '.join(sorted(measures)) or '(none under measures.attributes)'}"
        ]
    kind = measures[node.name].result_type()
    values = node.value if isinstance(node.value, tuple) else (node.value,)
    if node.op in ("is_null", "not_null"):
        return []
    if kind == "number":
        if node.op in ("contains", "starts_with", "ends_with", "before", "after", "in_last"):
            return [f"{node.key}.op: {node.op} does not apply to measure {node.name}, which is a number"]
        if any(isinstance(v, bool) or not isinstance(v, int | float) for v in values):
            return [f"{node.key}.value: measure {node.name} is a number; compare it with a number, not {node.value!r}"]
    if kind == "date" and node.op != "in_last" and any(not isinstance(v, dt.date | str) for v in values):
        return [f"{node.key}.value: measure {node.name} is a date; compare it with a date (YYYY-MM-DD)"]
    return []
