"""Segments: groups of customers defined by rules over profile fields, measures and activities."""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, model_validator

from ci_pipeline.config.base import Name, StrictModel
from ci_pipeline.config.measures import find_cycles
from ci_pipeline.outputs import SEGMENT_MEMBERSHIP_NAME

if TYPE_CHECKING:
    from ci_pipeline.config.model import ProjectConfig


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
        from ci_pipeline.segments.rules import ActivityTest, FieldTest, RuleError, SegmentTest, parse_rules, walk

        found: list[str] = []
        if self.definitions and project.unify is None:
            found.append("segments.definitions: segments select unified customers; add a 'unify' section")
        graph: dict[str, set[str]] = {}
        measures = project.measures.attributes
        activities = project.activities.tables
        types = {t.type for t in activities.values()}
        for name, spec in self.definitions.items():
            key = f"segments.definitions.{name}.rules"
            graph[name] = set()
            try:
                rules = parse_rules(spec.raw_rules(), key)
            except RuleError as exc:
                found.append(str(exc))
                continue
            for rule in rules:
                for node in walk(rule.node):
                    if isinstance(node, SegmentTest):
                        graph[name].add(node.name)
                        if node.name not in self.definitions:
                            found.append(
                                f"{node.key}: unknown segment {node.name!r}; "
                                f"defined: {', '.join(sorted(self.definitions))}"
                            )
                    elif isinstance(node, FieldTest) and node.namespace == "measure":
                        found.extend(_measure_problems(node, measures))
                    elif isinstance(node, ActivityTest):
                        for activity in node.activities:
                            if activity not in activities and activity not in types:
                                found.append(
                                    f"{node.key}.activity: unknown activity {activity!r}; use one of "
                                    f"{', '.join(sorted(activities)) or '(none under activities.tables)'} "
                                    "or an activity type"
                                )
        for cycle in find_cycles(graph):
            found.append(
                f"segments.definitions.{cycle[0]}: segments reference each other in a cycle "
                f"{' -> '.join(cycle)}; break it"
            )
        return found


def _measure_problems(node, measures) -> list[str]:
    if node.name not in measures:
        return [
            f"{node.key}.field: unknown measure {node.name!r}; customer attribute measures are "
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
