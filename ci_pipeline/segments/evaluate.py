"""Evaluate segment rule trees over customers with numpy masks shared across every segment.

Every distinct condition is computed once per run (masks are cached by the condition itself), and activity
conditions count per customer with one ``bincount``; so adding segments that reuse conditions costs almost nothing,
and the cost grows with the data size rather than data size times the number of segments. Every activity condition
of the segments is counted in one pass over the facts, part by part (a stored facts table is read in parts of
whole customers), so what is held is per customer, not per activity.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd

from ci_pipeline.arrays import holds_dates
from ci_pipeline.arrow_text import text_isin
from ci_pipeline.config.base import did_you_mean
from ci_pipeline.errors import UserError
from ci_pipeline.grammar.rules import ActivityTest, AllOf, AnyOf, FieldTest, Not, Rule, SegmentTest
from ci_pipeline.measures.conditions import column_kind, condition_mask, period_start
from ci_pipeline.measures.facts import INDEXED, FactIndex, StoredFacts, fact_parts

_DATE_OPS = ("before", "after", "in_last")
_COUNT_OPS = {
    "=": np.equal,
    "!=": np.not_equal,
    "<": np.less,
    "<=": np.less_equal,
    ">": np.greater,
    ">=": np.greater_equal,
}
_LABELS = {
    "profile": "profile attribute",
    "measure": "customer attribute measure",
    "prediction": "prediction field",
    "enrichment": "enrichment field",
}


class SegmentEngine:
    """Evaluates segments for one set of customers.

    Args:
        customers: every CustomerId, sorted; masks are aligned to it.
        profile: the customer profile (a ``CustomerId`` column plus attributes).
        measures: ``CustomerId`` plus one column per customer attribute measure.
        facts: a :class:`FactIndex` over the activity facts, or the stored facts (read once, in parts, when the
            first activity condition is evaluated), or None when there are no activities.
        end: exclusive end of the run date, for ``in the last ...`` conditions.
        rules: segment name -> parsed rules.
        frozen: static segment name -> CustomerIds kept from an earlier run.
        predictions: ``CustomerId`` plus one column per prediction field; a customer without a row has no score
            (conditions on it are false, ``is_null`` is true).
        enrichments: ``CustomerId`` plus one ``<enrichment>.<field>`` column per enrichment field, the same way.
    """

    def __init__(
        self,
        customers: pd.Index,
        profile: pd.DataFrame | None,
        measures: pd.DataFrame | None,
        facts: FactIndex | StoredFacts | None,
        end: pd.Timestamp,
        rules: dict[str, list[Rule]],
        frozen: dict[str, pd.Series] | None = None,
        predictions: pd.DataFrame | None = None,
        enrichments: pd.DataFrame | None = None,
    ):
        self.customers = customers
        self.n = len(customers)
        self.end = end
        self.rules = rules
        self.frozen = frozen or {}
        self.tables = {
            "profile": self._aligned(profile, "profile"),
            "measure": self._aligned(measures, "measure"),
            "prediction": self._aligned(predictions, "prediction"),
            "enrichment": self._aligned(enrichments, "enrichment"),
        }
        self.facts = facts
        self._cache: dict = {}
        self._segments: dict[str, np.ndarray] = {}
        self._columns: dict = {}
        self._activities: dict[ActivityTest, np.ndarray] = {}
        self.conditions_evaluated = 0

    def _aligned(self, frame: pd.DataFrame | None, what: str) -> pd.DataFrame | None:
        if frame is None:
            return None
        frame = frame.drop_duplicates("CustomerId").set_index(frame["CustomerId"].astype("string").rename(None))
        return frame.reindex(self.customers)

    def segment(self, name: str, stack: tuple[str, ...] = ()) -> np.ndarray:
        """Members of one segment as a boolean mask over ``customers``."""
        if name in self._segments:
            return self._segments[name]
        if name in stack:
            raise UserError(
                f"segments.definitions.{name}: segments reference each other in a cycle {' -> '.join(stack + (name,))}"
            )
        if name in self.frozen:
            mask = text_isin(self.customers, self.frozen[name].astype("string"))
        else:
            if name not in self.rules:
                raise UserError(f"segments: unknown segment {name!r}; defined: {', '.join(sorted(self.rules))}")
            mask = None
            for rule in self.rules[name]:
                current = self.mask(rule.node, stack + (name,))
                if mask is None:
                    mask = current.copy()
                elif rule.combine == "union":
                    mask |= current
                elif rule.combine == "intersect":
                    mask &= current
                else:
                    mask &= ~current
        self._segments[name] = mask
        return mask

    def mask(self, node, stack: tuple[str, ...] = ()) -> np.ndarray:
        """Customers that satisfy one condition tree."""
        if isinstance(node, SegmentTest):
            return self.segment(node.name, stack)
        if isinstance(node, AllOf | AnyOf):
            parts = [self.mask(item, stack) for item in node.items]
            return np.logical_and.reduce(parts) if isinstance(node, AllOf) else np.logical_or.reduce(parts)
        if isinstance(node, Not):
            return ~self.mask(node.item, stack)
        if node not in self._cache:
            self.conditions_evaluated += 1
            self._cache[node] = self._field(node) if isinstance(node, FieldTest) else self._activity(node)
        return self._cache[node]

    def column(self, namespace: str, name: str, key: str, wants_date: bool = False) -> pd.Series:
        """A profile, measure or prediction column aligned to the customers (text holding dates is read as dates)."""
        table = self.tables[namespace]
        label = _LABELS[namespace]
        if namespace == "enrichment" and not _has_enrichment(table, name):
            # A configured enrichment that has produced nothing yet (failed, or inactive from the start): its
            # fields have no value for anyone, so the condition selects no one instead of failing every segment.
            return pd.Series(pd.NA, index=self.customers, dtype="object")
        if table is None or name not in table.columns or name == "CustomerId":
            have = [] if table is None else [str(c) for c in table.columns if c != "CustomerId"]
            if namespace == "enrichment":
                # The fields of that enrichment only (the others' make a list of fifty).
                have = [c for c in have if c.split(".", 1)[0] == name.split(".", 1)[0]]
            hint = did_you_mean(name, have)
            raise UserError(f"{key}.field: unknown {label} {name!r}{hint}; available: {', '.join(have) or 'none'}")
        values = table[name]
        if holds_dates(values):
            # A date column of the profile (BirthDate), read back from the lake as Python dates: compared as dates.
            if (namespace, name) not in self._columns:
                self._columns[(namespace, name)] = pd.to_datetime(values)
            return self._columns[(namespace, name)]
        if wants_date and column_kind(values) == "text":
            cache = (namespace, name)
            if cache not in self._columns:
                parsed = pd.to_datetime(values, errors="coerce", utc=True, format="mixed")
                if parsed.notna().sum() != values.notna().sum():
                    raise UserError(
                        f"{key}: {namespace}.{name} is text, not a date; compare it with text or use a date field"
                    )
                self._columns[cache] = parsed
            values = self._columns[cache]
        return values

    def _field(self, node: FieldTest) -> np.ndarray:
        values = node.value if isinstance(node.value, tuple) else (node.value,)
        wants_date = node.op in _DATE_OPS or any(isinstance(v, dt.date) for v in values)
        column = self.column(node.namespace, node.name, node.key, wants_date)
        value = list(node.value) if isinstance(node.value, tuple) and node.op != "in_last" else node.value
        return condition_mask(column, node.op, value, now=self.end, key=node.key, field=f"{node.namespace}.{node.name}")

    def _activity(self, node: ActivityTest) -> np.ndarray:
        if self.facts is None:
            raise UserError(f"{node.key}: no activities are configured; add activities.tables or drop this condition")
        if node not in self._activities:
            nodes = [node]
            if isinstance(self.facts, StoredFacts):
                # Reading a stored table is the cost: the first activity condition counts every one that the
                # segments to evaluate have, in one pass.
                evaluated = [r.node for n, rules in self.rules.items() if n not in self.frozen for r in rules]
                found = dict.fromkeys([node, *(t for tree in evaluated for t in activity_tests(tree))])
                nodes = [n for n in found if n not in self._activities]
            self._count_activities(nodes)
        return self._activities[node]

    def _count_activities(self, nodes: list[ActivityTest]) -> None:
        """Which customers meet each activity condition (its count test), part by part of the facts."""
        columns = [*INDEXED, *(name for node in nodes for name, _, _ in node.where)]
        pieces: dict[ActivityTest, list[np.ndarray]] = {node: [] for node in nodes}
        for part in fact_parts(self.facts, self.customers, self.end, columns):
            for node in nodes:
                mask = part.activity_mask(node.activities)
                if node.within is not None:
                    mask = mask & part.window_mask(period_start(self.end, _thaw(node.within)), self.end)
                for i, (name, op, value) in enumerate(node.where):
                    mask = mask & part.condition(name, op, _thaw(value), f"{node.key}.where[{i}]")
                counts = np.bincount(part.codes[mask], minlength=len(part.customers))
                pieces[node].append(_COUNT_OPS[node.count_op](counts, node.count_value))
        for node, masks in pieces.items():
            self._activities[node] = np.concatenate(masks)

    def evaluate_all(self) -> dict[str, np.ndarray]:
        """Every segment's mask, by name (sorted)."""
        return {name: self.segment(name) for name in sorted(set(self.rules) | set(self.frozen))}


def _has_enrichment(table: pd.DataFrame | None, name: str) -> bool:
    """Whether the enrichment ``<name>`` of the field ``<name>.<field>`` has any column in the fields table."""
    prefix = name.split(".", 1)[0] + "."
    return table is not None and any(str(c).startswith(prefix) for c in table.columns)


def activity_tests(node) -> list[ActivityTest]:
    """The activity conditions of a condition tree (other segments' are their own)."""
    if isinstance(node, ActivityTest):
        return [node]
    if isinstance(node, AllOf | AnyOf):
        return [test for item in node.items for test in activity_tests(item)]
    if isinstance(node, Not):
        return activity_tests(node.item)
    return []


def field_tests(node) -> list[FieldTest]:
    """The profile, measure, prediction and enrichment conditions of a condition tree."""
    if isinstance(node, FieldTest):
        return [node]
    if isinstance(node, AllOf | AnyOf):
        return [test for item in node.items for test in field_tests(item)]
    if isinstance(node, Not):
        return field_tests(node.item)
    return []


def segment_tests(node) -> list[str]:
    """The segments a condition tree refers to (``segment: <name>``)."""
    if isinstance(node, SegmentTest):
        return [node.name]
    if isinstance(node, AllOf | AnyOf):
        return [name for item in node.items for name in segment_tests(item)]
    if isinstance(node, Not):
        return segment_tests(node.item)
    return []


def _thaw(value):
    if isinstance(value, tuple):
        if value and all(isinstance(v, tuple) and len(v) == 2 and isinstance(v[0], str) for v in value):
            return {k: _thaw(v) for k, v in value}
        return [_thaw(v) for v in value]
    return value
