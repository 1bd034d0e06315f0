"""Checks that span configuration sections: a rule naming a table, a measure or a segment defined elsewhere.

The section models only describe (and check their own keys); what one section says about another is checked
here, with the rule and expression grammars of :mod:`ci_pipeline.grammar`. Every message starts with its key path
and says how to fix it.
"""

from __future__ import annotations

import datetime as dt
import difflib
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, get_args

from ci_pipeline.config.activities import FACT_COLUMNS, ActivityTable, tables_read
from ci_pipeline.config.base import did_you_mean
from ci_pipeline.config.enrich import field_problem
from ci_pipeline.config.measures import RESERVED, MeasuresConfig, MeasureSpec
from ci_pipeline.config.predictions import SEGMENT_FIELDS, SEGMENT_VALUES
from ci_pipeline.config.segments import SegmentsConfig
from ci_pipeline.config.unify import (
    NormalizeConfig,
    Rule,
    SemanticType,
    UnifyConfig,
    UnifyTable,
    derived_attributes,
    unified_fields,
)
from ci_pipeline.grammar.blocking_keys import BlockingKeyError, parse_key, rule_problem, strata_problems
from ci_pipeline.grammar.comparisons import compared_twice_problem, comparison_problems
from ci_pipeline.grammar.conditions import is_number, thousands_hint
from ci_pipeline.grammar.expression import parse, references
from ci_pipeline.grammar.rules import (
    MAX_RULE_DEPTH,
    ActivityTest,
    FieldTest,
    RuleError,
    SegmentTest,
    parse_node,
    parse_rules,
    walk,
)

if TYPE_CHECKING:
    from ci_pipeline.config.model import ProjectConfig

#: Fields every activity has, besides its semantic fields.
ACTIVITY_COLUMNS = ("ActivityId", "ActivityType", "ActivityTimeStamp", "Activity")
MEASURE_KINDS = ("attributes", "customer", "business")


def section_checks() -> dict[str, Callable[[ProjectConfig], list[str]]]:
    """Configuration section name -> its cross-section check."""
    return {
        "unify": unify_problems,
        "activities": activities_problems,
        "enrich": enrich_problems,
        "measures": measures_problems,
        "segments": segments_problems,
        "predictions": predictions_problems,
    }


def enrich_problems(project: ProjectConfig) -> list[str]:
    """The enrich section's own checks, then every profile column an enrichment's params name that the unified
    profile will not have (``params.columns.street: Adress1``): the run would publish the enrichment empty of
    that part for every customer."""
    found = project.enrich.problems(project)
    profile = profile_columns(project)
    if not profile:
        return found
    profile = ["CustomerId", *profile]
    for name, spec in project.enrich.enrichments.items():
        for key, column in enrichment_profile_columns(spec):
            if column not in profile:
                found.append(
                    f"enrich.enrichments.{name}.params.{key}: the customer profile has no column {column!r}"
                    f"{did_you_mean(column, profile)}; name one of its columns ({', '.join(profile)}) or map the "
                    "field in unify"
                )
    return found


def enrichment_profile_columns(spec) -> list[tuple[str, str]]:
    """(key below params, profile column) for each profile column the enrichment's params name explicitly: the
    address parts' ``columns``, the e-mail ``column``, the HTTP ``fields``. Malformed params are left to the
    provider, whose message names the key."""
    params = spec.params if isinstance(spec.params, dict) else {}
    if spec.provider == "address" and isinstance(params.get("columns"), dict):
        return [(f"columns.{part}", c) for part, c in params["columns"].items() if isinstance(c, str) and c]
    if spec.provider == "email" and isinstance(params.get("column"), str) and params["column"].strip():
        return [("column", params["column"].strip())]
    if spec.provider == "http" and isinstance(params.get("fields"), list):
        return [(f"fields[{i}]", c) for i, c in enumerate(params["fields"]) if isinstance(c, str) and c]
    return []


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Each reference cycle once, as a path that starts and ends at its smallest name (``[a, b, a]``)."""
    found: list[list[str]] = []
    state: dict[str, int] = {}  # 1 = on the current path, 2 = finished
    path: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in graph:
                continue
            if state.get(nxt) == 1:
                cycle = path[path.index(nxt) :]
                start = cycle.index(min(cycle))
                cycle = cycle[start:] + cycle[:start]
                if cycle + [cycle[0]] not in found:
                    found.append(cycle + [cycle[0]])
            elif state.get(nxt) is None:
                visit(nxt)
        path.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)
    return found


# --- activities -------------------------------------------------------------------------------------------------


def activities_problems(project: ProjectConfig) -> list[str]:
    """Activity tables and customer links that name sources, tables or columns that do not exist."""
    tables = project.activities.tables
    found: list[str] = []
    if tables and project.unify is None:
        found.append("activities.tables: activities are found through the unified customers; add a 'unify' section")
    seen: dict[tuple[str, str], str] = {}
    for name, act in tables.items():
        key = f"activities.tables.{name}"
        if (act.source, act.table) in seen:
            # ActivityId is <source>_<table>_<key>: one activity per source table keeps it unique.
            found.append(
                f"{key}: {act.source}.{act.table} is already the activity '{seen[act.source, act.table]}'; "
                "declare each source table once"
            )
        seen.setdefault((act.source, act.table), name)
        found += _activity_table_problems(key, act, project)
        found += _activity_customer_problems(key, act, project)
    return found


def _source_table(project: ProjectConfig, source: str, table: str):
    src = project.sources.get(source)
    return None if src is None else src.tables.get(table)


def _activity_table_problems(key: str, act: ActivityTable, project: ProjectConfig) -> list[str]:
    """The activity's table exists, and a header-less one declares every column the activity reads."""
    table = _source_table(project, act.source, act.table)
    if table is None:
        src = project.sources.get(act.source)
        hint = did_you_mean(act.table, src.tables) if src else did_you_mean(act.source, project.sources)
        return [f"{key}: no table '{act.table}' in source '{act.source}'{hint}; declare it under sources"]
    if not (table.columns and table.format == "csv" and not table.csv.header):
        return []
    columns = {
        "timestamp": act.timestamp,
        "customer.column": act.customer.column,
        **({"title": act.title} if act.title else {}),
        **({"description": act.description} if act.description else {}),
        **({"url": act.url} if act.url else {}),
        **{f"fields.{f}": c for f, c in act.fields.items()},
    }
    return [
        f"{key}.{sub}: column '{column}' is not declared in the table's columns"
        for sub, column in columns.items()
        if column not in table.columns
    ]


def _activity_customer_problems(key: str, act: ActivityTable, project: ProjectConfig) -> list[str]:
    """The activity's customer link points at a customer table that takes part in unification."""
    link = act.customer
    if _source_table(project, link.source, link.table) is None:
        return [
            f"{key}.customer: no table '{link.table}' in source '{link.source}'; "
            "point it at a customer table that takes part in unification"
        ]
    if project.unify is not None and not any(
        (t.source, t.table) == (link.source, link.table) for t in project.unify.tables
    ):
        return [
            f"{key}.customer: {link.source}.{link.table} does not take part in unification, "
            "so its records have no customer; add it to unify.tables or point at a table that does"
        ]
    return []


# --- measures ---------------------------------------------------------------------------------------------------


def measures_problems(project: ProjectConfig) -> list[str]:
    """Names, activities, fields and references that do not resolve, and cycles between measures."""
    section = project.measures
    found: list[str] = []
    activities = project.activities.tables
    seen: dict[str, str] = {}
    for kind in MEASURE_KINDS:
        for name, spec in getattr(section, kind).items():
            key = f"measures.{kind}.{name}"
            if name in RESERVED:
                found.append(f"{key}: the name {name} is reserved; choose another")
            if name in seen:
                found.append(f"{key}: the name is already used by measures.{seen[name]}.{name}; names are unique")
            seen.setdefault(name, kind)
            found.extend(_measure_shape_problems(key, kind, spec, section))
            found.extend(_expression_problems(key, kind, spec, section))
            found.extend(_aggregation_problems(key, spec, activities))
            where = [(c.field, c.op, c.value) for c in spec.where]
            found.extend(_filter_type_problems(key, spec.activity, where, activities, project.sources))
            found.extend(_sum_type_problems(key, spec, activities, project.sources))
    for kind in ("attributes", "business"):
        graph = {n: s.references() for n, s in getattr(section, kind).items()}
        found.extend(f"measures.{kind}.{c[0]}: reference cycle {' -> '.join(c)}; break it" for c in find_cycles(graph))
    return found


def _measure_shape_problems(key: str, kind: str, spec: MeasureSpec, section: MeasuresConfig) -> list[str]:
    """What a measure's kind allows: dimensions, aggregation and measures of measures."""
    found = []
    if kind == "customer" and spec.aggregate is None:
        found.append(f"{key}: a customer measure is an aggregation over activities with 'dimensions'")
    if kind == "customer" and not spec.dimensions:
        found.append(f"{key}.dimensions: a customer measure needs at least one dimension (else use attributes)")
    if kind == "attributes" and spec.dimensions:
        found.append(f"{key}.dimensions: attribute measures have one value per customer; move it to 'customer'")
    if spec.of_measure is not None and spec.dimensions:
        found.append(f"{key}.dimensions: a measure of a measure has no dimensions; remove them")
    if spec.of_measure is not None:
        if kind != "business":
            found.append(f"{key}.of_measure: only business measures aggregate another measure")
        elif spec.of_measure not in section.attributes:
            found.append(f"{key}.of_measure: no attribute measure named {spec.of_measure!r}")
    return found


def _expression_problems(key: str, kind: str, spec: MeasureSpec, section: MeasuresConfig) -> list[str]:
    """Measures an expression names that are not of its own kind."""
    if spec.expression is None:
        return []
    pool = section.attributes if kind == "attributes" else section.business if kind == "business" else {}
    return [
        f"{key}.expression: unknown measure {ref!r}{did_you_mean(ref, pool)}; expressions use {kind} measures "
        f"({', '.join(sorted(pool)) or 'none defined'})"
        for ref in sorted(references(parse(spec.expression)))
        if ref not in pool
    ]


#: Declared column types whose values are numbers.
_NUMERIC_TYPES = ("int64", "double", "decimal")
#: What a sum or an average finds in a field of each other declared type, in words.
_NOT_NUMBERS = {
    "string": "text",
    "json": "text",
    "guid": "text",
    "boolean": "true/false values",
    "date": "dates",
    "datetime": "dates",
    "time": "times of day",
}
#: The timeline's own columns that are no numbers, whatever the sources declare.
_FACT_NOT_NUMBERS = {"ActivityTimeStamp": "dates", "ActivityId": "text"}


def _declared_types(
    field: str, read: Sequence[str], activities: dict, sources: dict
) -> Iterator[tuple[ActivityTable, str, str]]:
    """``(activity table, column, declared type)`` of the column behind an activity field in each activity table
    ``read`` (names or types) whose source declares it under ``sources.*.tables.*.columns``.
    A column the source does not declare has no type known before the data is read (a CSV column is text that
    may hold numbers), so it is left out."""
    for table in tables_read(read, activities):
        column = table.fields.get(field)
        source = sources.get(table.source)
        declared = source.tables.get(table.table) if source else None
        spec_of = declared.columns.get(column) if declared and column else None
        if spec_of is not None:
            yield table, column, spec_of.type


def _filter_type_problems(
    key: str, read: Sequence[str], where: Iterable[tuple[str, str, Any]], activities: dict, sources: dict
) -> list[str]:
    """Filters ``(field, op, value)`` over the activities ``read`` (names or types) comparing a field that its source
    declares numeric with a value that is no number (``amount > "abc"``): the run would fail on them after ingest,
    unify and activities have run. One check for measure filters and segment activity conditions alike."""
    found = []
    for i, (field, op, value) in enumerate(where):
        values = value if isinstance(value, list | tuple) else [value]
        if op in ("is_null", "not_null", "in_last"):
            continue
        shown = list(value) if isinstance(value, tuple) else value
        dated = field == "ActivityTimeStamp" or any(
            declared in ("date", "datetime") for _, _, declared in _declared_types(field, read, activities, sources)
        )
        if dated and not all(_is_date(v) for v in values):
            found.append(
                f"{key}.where[{i}].value: field {field} is a date; write the value as YYYY-MM-DD, not {shown!r}"
            )
            continue
        if dated or all(is_number(v) for v in values):
            continue
        for table, column, declared in _declared_types(field, read, activities, sources):
            if declared in _NUMERIC_TYPES:
                found.append(
                    f"{key}.where[{i}].value: field {field} is a number ({table.source}.{table.table} column "
                    f"{column} is declared {declared}); "
                    f"compare it with a number, not {shown!r}{thousands_hint(values)}"
                )
                break
    return found


def _is_date(value) -> bool:
    """Whether a filter value reads as a date, as the run reads it (a date, or text such as ``2026-01-31``)."""
    if isinstance(value, dt.date):
        return True
    if not isinstance(value, str) or is_number(value):
        return False
    import pandas as pd  # only for a date filter: read as the run reads it (measures.conditions)

    try:
        pd.Timestamp(value)
    except (ValueError, TypeError):
        return False
    return True


def _sum_type_problems(key: str, spec: MeasureSpec, activities: dict, sources: dict) -> list[str]:
    """A sum or an average of a field that holds no numbers by its declared type (or by what the timeline column
    is): the run would refuse it only when the measures are computed, after ingest, unify and activities."""
    if spec.aggregate not in ("sum", "average") or spec.field is None or spec.of_measure is not None:
        return []
    fix = "or use an aggregate that does not add (count, count_distinct, min, max, first, last)"
    if spec.field in _FACT_NOT_NUMBERS:
        return [
            f"{key}.field: {spec.aggregate} needs numbers, but {spec.field} holds {_FACT_NOT_NUMBERS[spec.field]}; "
            f"name a numeric activity field {fix}"
        ]
    for table, column, declared in _declared_types(spec.field, spec.activity, activities, sources):
        if declared in _NOT_NUMBERS:
            return [
                f"{key}.field: {spec.aggregate} needs numbers, but field {spec.field} holds {_NOT_NUMBERS[declared]} "
                f"({table.source}.{table.table} column {column} is declared {declared}); if it holds numbers, "
                f"declare sources.{table.source}.tables.{table.table}.columns.{column} double, int64 or decimal, {fix}"
            ]
    return []


def _aggregation_problems(key: str, spec: MeasureSpec, activities: dict) -> list[str]:
    """Activities an aggregation reads that do not exist, and fields those activities do not have."""
    if spec.aggregate is None or spec.of_measure is not None:
        return []
    read = tables_read(spec.activity, activities)
    fields = set(ACTIVITY_COLUMNS) | {f for table in read for f in table.fields}
    known = sorted(activities) + sorted({t.type for t in activities.values()} - set(activities))
    found = [
        f"{key}.activity[{i}]: unknown activity {activity!r}{did_you_mean(activity, known)}; use one of "
        f"{', '.join(known) or '(none configured under activities.tables)'} (an activity or a type)"
        for i, activity in enumerate(spec.activity)
        if not tables_read([activity], activities)
    ]
    if not read:
        return found
    used = [("field", spec.field), ("order_by", spec.order_by)]
    used += [(f"where[{i}].field", c.field) for i, c in enumerate(spec.where)]
    used += [(f"dimensions[{i}]", d) for i, d in enumerate(spec.dimensions)]
    found += [
        f"{key}.{sub}: unknown field {field!r}{did_you_mean(field, fields)}; the activities have "
        f"{', '.join(sorted(fields))}"
        for sub, field in used
        if field is not None and field not in fields
    ]
    return found


# --- segments ---------------------------------------------------------------------------------------------------


def segments_problems(project: ProjectConfig) -> list[str]:
    """Rules that do not parse or name unknown segments, measures or activities; type mismatches; cycles."""
    section = project.segments
    found: list[str] = []
    if section.definitions and project.unify is None:
        found.append("segments.definitions: segments select unified customers; add a 'unify' section")
    graph: dict[str, set[str]] = {}
    names = _RuleNames(section, project)
    for name, spec in section.definitions.items():
        key = f"segments.definitions.{name}.rules"
        graph[name] = set()
        try:
            rules = parse_rules(spec.raw_rules(), key)
        except RuleError as exc:
            found.extend(_each_rule_problem(spec.raw_rules(), key) or [str(exc)])
            continue
        for node in (node for rule in rules for node in walk(rule.node)):
            if isinstance(node, SegmentTest):
                graph[name].add(node.name)
            found.extend(names.problems(node))
    return found + _segment_graph_problems(graph)


class _RuleNames:
    """What the names in segment rules can refer to: segments, measures, profile fields, activities."""

    def __init__(self, section: SegmentsConfig, project: ProjectConfig):
        self.segments = section.definitions
        self.project = project
        self.profile = profile_columns(project)
        self.measures = project.measures.attributes
        self.activities = project.activities.tables
        self.sources = project.sources
        self.types = {t.type for t in self.activities.values()}
        # The columns of the activity facts that ``where`` filters read: the timeline's own and every semantic field.
        self.fact_fields = {*FACT_COLUMNS, *(f for t in self.activities.values() for f in t.fields)}

    def problems(self, node) -> list[str]:
        """Names one rule node uses that resolve to nothing (or to a measure of another type)."""
        if isinstance(node, SegmentTest) and node.name not in self.segments:
            return [
                f"{node.key}: unknown segment {node.name!r}{did_you_mean(node.name, self.segments)}; "
                f"defined: {', '.join(sorted(self.segments))}"
            ]
        if isinstance(node, FieldTest) and node.namespace == "measure":
            return _measure_problems(node, self.measures)
        if isinstance(node, FieldTest) and node.namespace == "prediction":
            return _prediction_field_problems(node, self.project)
        if isinstance(node, FieldTest) and node.namespace == "enrichment":
            return _enrichment_field_problems(node, self.project)
        if isinstance(node, FieldTest) and self.profile and node.name not in self.profile:
            close = difflib.get_close_matches(node.name, self.profile, n=1, cutoff=0.6)
            return [
                f"{node.key}.field: unknown profile attribute {node.name!r}"
                f"{f' (did you mean profile.{close[0]}?)' if close else ''}; the unified profile has "
                f"{', '.join(self.profile)} (from unify.tables[*].columns and unify.merge)"
            ]
        if isinstance(node, ActivityTest):
            return self._activity_problems(node)
        return []

    def _activity_problems(self, node: ActivityTest) -> list[str]:
        found = [
            f"{node.key}.activity: unknown activity {activity!r}{did_you_mean(activity, self.activities)}; use one of "
            f"{', '.join(sorted(self.activities)) or '(none under activities.tables)'} or an activity type"
            for activity in node.activities
            if activity not in self.activities and activity not in self.types
        ]
        if self.activities:
            found += [
                f"{node.key}.where[{j}].field: unknown activity field {field!r}"
                f"{did_you_mean(field, self.fact_fields)}; the activities have {', '.join(sorted(self.fact_fields))}"
                for j, (field, _, _) in enumerate(node.where)
                if field not in self.fact_fields
            ]
        return found + _filter_type_problems(node.key, node.activities, node.where, self.activities, self.sources)


def _segment_graph_problems(graph: dict[str, set[str]]) -> list[str]:
    """Segments that reference each other in a cycle, or the first chain of references that is too long."""
    cycles = find_cycles(graph)
    if cycles:
        return [
            f"segments.definitions.{cycle[0]}: segments reference each other in a cycle {' -> '.join(cycle)}; break it"
            for cycle in cycles
        ]
    for name, length in _reference_chains(graph).items():
        if length > MAX_RULE_DEPTH:
            return [
                f"segments.definitions.{name}.rules: a chain of {length} segments each built on the next "
                f"passes the limit of {MAX_RULE_DEPTH}; build the later ones on fewer segments"
            ]
    return []


def _each_rule_problem(raw_rules: list, key: str) -> list[str]:
    """The first problem of every rule, not only of the first bad one (the parser stops at the first)."""
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

    The unified fields of :func:`ci_pipeline.config.unify.unified_fields` (from the map, derived names and
    ``unify.merge``), then one key column per table (``<source>_<table>_<primary key>``), all renamed by
    ``unify.merge.rename``, plus ``PreviousCustomerId``. Empty without a unify section.
    """
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


def _measure_problems(node: FieldTest, measures: dict[str, MeasureSpec]) -> list[str]:
    """A rule on ``measure.<name>``: the measure exists, and the operator and value fit its type."""
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
            return [
                f"{node.key}.value: measure {node.name} is a number; compare it with a number, not {node.value!r}"
                f"{thousands_hint(values)}"
            ]
    if kind == "date" and node.op != "in_last" and any(not isinstance(v, dt.date | str) for v in values):
        return [f"{node.key}.value: measure {node.name} is a date; compare it with a date (YYYY-MM-DD)"]
    return []


def _prediction_field_problems(node: FieldTest, project: ProjectConfig) -> list[str]:
    """A rule on ``prediction.<field>``: the field exists, its model runs, and the operator and value fit it."""
    if node.name not in SEGMENT_FIELDS:
        return [
            f"{node.key}.field: unknown prediction field {node.name!r}{did_you_mean(node.name, SEGMENT_FIELDS)}; "
            f"prediction fields are {', '.join(SEGMENT_FIELDS)}"
        ]
    model, _, kind = SEGMENT_FIELDS[node.name]
    section = project.predictions
    if section is None or model not in section.models:
        fix = "add a 'predictions' section" if section is None else f"add {model} to predictions.models"
        return [f"{node.key}.field: prediction.{node.name} comes from the {model} model, which does not run; {fix}"]
    values = node.value if isinstance(node.value, tuple) else (node.value,)
    if node.op in ("is_null", "not_null"):
        return []
    if kind == "number" and any(isinstance(v, bool) or not isinstance(v, int | float) for v in values):
        return [
            f"{node.key}.value: prediction.{node.name} is a number; compare it with a number, not {node.value!r}"
            f"{thousands_hint(values)}"
        ]
    if kind == "boolean" and any(not isinstance(v, bool) for v in values):
        return [f"{node.key}.value: prediction.{node.name} is true or false; compare it with true or false"]
    closed = SEGMENT_VALUES.get(node.name)
    if closed and node.op in ("=", "!=", "in", "not_in"):
        wrong = [v for v in values if v not in closed]
        if wrong:
            return [
                f"{node.key}.value: prediction.{node.name} is one of {', '.join(closed)}, not {wrong[0]!r}"
                f"{did_you_mean(str(wrong[0]), closed)} (values are compared as written)"
            ]
    return []


def _enrichment_field_problems(node: FieldTest, project: ProjectConfig) -> list[str]:
    """A rule on ``enrichment.<name>.<field>``: the enrichment is configured and its provider may write the field (as
    far as its configuration tells: an affinity's brands without ``chosen`` are known once it runs)."""
    name = node.name.split(".", 1)[0]
    configured = project.enrich.enrichments
    if name not in configured:
        return [
            f"{node.key}.field: enrichment.{node.name} names no configured enrichment {name!r}"
            f"{did_you_mean(name, configured)}; enrichments: {', '.join(configured) or 'none'} (enrich.enrichments)"
        ]
    problem = field_problem(configured[name], node.name.split(".", 1)[1] if "." in node.name else "")
    if problem:
        return [f"{node.key}.field: enrichment {name} ({configured[name].provider}) {problem}"]
    return []


# --- predictions --------------------------------------------------------------------------------------------------


def predictions_problems(project: ProjectConfig) -> list[str]:
    """Purchase and product activities and fields, signal activities and profile fields that do not exist."""
    section = project.predictions
    if section is None:
        return []
    activities = project.activities.tables
    found: list[str] = []
    if project.unify is None:
        found.append("predictions: the models score unified customers; add a 'unify' section")
    uses_purchases = {"churn", "clv"} & set(section.models)
    source = section.purchases
    if uses_purchases:
        found += _prediction_activity_problems(
            "predictions.purchases", source.activity, [source.amount, source.is_return], activities
        )
        found += _purchase_filter_problems(source, activities, project.sources)
    if "recommendation" in section.models:
        if source.product_activity is None:
            found.append(
                "predictions.purchases.product_activity: the recommendation model needs an activity with one row "
                f"per product bought; name one of {', '.join(sorted(activities)) or '(none under activities.tables)'}"
                " or remove recommendation from predictions.models"
            )
        else:
            found += _prediction_activity_problems(
                "predictions.purchases", source.product_activity, [source.product], activities, "product_activity"
            )
    for i, name in enumerate(section.signal_activities):
        if name not in activities:
            found.append(
                f"predictions.signal_activities[{i}]: unknown activity {name!r}{did_you_mean(name, activities)}; "
                f"use one of {', '.join(sorted(activities)) or '(none under activities.tables)'}"
            )
    profile = profile_columns(project)
    for i, name in enumerate(section.profile_fields):
        if profile and name not in profile:
            found.append(
                f"predictions.profile_fields[{i}]: unknown profile attribute {name!r}{did_you_mean(name, profile)}; "
                f"the unified profile has {', '.join(profile)}"
            )
    return found


def _purchase_filter_problems(source, activities: dict, sources: dict) -> list[str]:
    """``predictions.purchases.where`` checked as a measure's filters are: fields of the purchase activity, values
    its source's column types can hold; and no ``in_last``, which the models' own cutoffs make meaningless."""
    if source.activity not in activities:
        return []
    have = activities[source.activity].fields
    found = []
    for i, cond in enumerate(source.where):
        key = f"predictions.purchases.where[{i}]"
        if cond.field not in have and cond.field != "ActivityTimeStamp":
            found.append(
                f"{key}.field: activity {source.activity!r} has no field {cond.field!r}{did_you_mean(cond.field, have)}"
                f"; its fields are {', '.join(sorted(have)) or '(none)'} (activities.tables.{source.activity}.fields)"
            )
        elif cond.op == "in_last":
            found.append(
                f"{key}.op: 'in the last' is relative to each model's cutoff, which the models set themselves; keep "
                "rows by what they are (status, channel) or by a fixed date with before/after"
            )
    where = [(c.field, c.op, c.value) for c in source.where]
    return found + _filter_type_problems("predictions.purchases", [source.activity], where, activities, sources)


def _prediction_activity_problems(
    key: str, activity: str, fields: list[str | None], activities: dict, activity_key: str = "activity"
) -> list[str]:
    """The activity exists and has the named semantic fields."""
    if activity not in activities:
        return [
            f"{key}.{activity_key}: unknown activity {activity!r}{did_you_mean(activity, activities)}; use one of "
            f"{', '.join(sorted(activities)) or '(none under activities.tables)'}"
        ]
    have = activities[activity].fields
    keys = ("amount", "is_return") if activity_key == "activity" else ("product",)
    return [
        f"{key}.{field_key}: activity {activity!r} has no field {field!r}{did_you_mean(field, have)}; its fields "
        f"are {', '.join(sorted(have)) or '(none)'} (activities.tables.{activity}.fields)"
        for field_key, field in zip(keys, fields, strict=True)
        if field is not None and field not in have
    ]


# --- unify ------------------------------------------------------------------------------------------------------


def unify_problems(project: ProjectConfig) -> list[str]:
    """Tables that do not exist, rules naming unmapped fields, unknown aliases, attach and merge references."""
    unify = project.unify
    if unify is None:
        return []
    found: list[str] = []
    seen: set[tuple[str, str]] = set()
    mapped_anywhere: set[str] = set()
    for i, t in enumerate(unify.tables):
        key = f"unify.tables[{i}]"
        if (t.source, t.table) in seen:
            found.append(f"{key}: {t.ref} is listed twice; list each table once")
        seen.add((t.source, t.table))
        missing = _missing_table(key, t, project)
        if missing is not None:
            found.append(missing)
            continue
        found += _column_problems(key, t, project.sources[t.source].tables[t.table])
        attrs = set(derived_attributes(t.attributes()))
        mapped_anywhere |= attrs
        for ri, rule in enumerate(t.dedup.rules):
            found += _rule_problems(rule, f"{key}.dedup.rules[{ri}]", attrs, unify.normalize)
    for ri, rule in enumerate(unify.match.rules):
        found += _rule_problems(rule, f"unify.match.rules[{ri}]", mapped_anywhere, unify.normalize)
    found += _frequency_field_problems(unify, mapped_anywhere)
    found += _conflict_field_problems(unify, mapped_anywhere)
    found += _probabilistic_problems(unify, mapped_anywhere)
    refs = {t.ref for t in unify.tables}
    found += _attach_problems(unify, refs, mapped_anywhere)
    found += _merge_field_problems(unify, refs, mapped_anywhere)
    return _with_source_column_hints(found, unify, mapped_anywhere)


def _with_source_column_hints(problems: list[str], unify: UnifyConfig, mapped: set[str]) -> list[str]:
    """Each problem naming as unmapped a source column that is mapped (rules and comparisons read the attribute,
    ``first_name``, not the column, ``given_name``) says which attribute to name instead."""
    columns = {c: kind for t in unify.tables for c, kind in t.kinds().items() if kind != "custom" and c not in mapped}
    if not columns:
        return problems
    unmapped = re.compile(r"'([^']+)' is not mapped|reads '([^']+)', not mapped")
    out = []
    for problem in problems:
        found = unmapped.search(problem)
        name = found and (found.group(1) or found.group(2))
        if name in columns:
            problem += f" ('{name}' is a source column mapped to {columns[name]}: name the attribute, {columns[name]})"
        out.append(problem)
    return out


def _missing_table(key: str, t: UnifyTable, project: ProjectConfig) -> str | None:
    """The problem when a unify table names a source or table that is not configured."""
    source = project.sources.get(t.source)
    if source is None:
        return (
            f"{key}.source: no source named {t.source!r}{did_you_mean(t.source, project.sources)}; add it "
            "under 'sources' or fix the name"
        )
    if t.table not in source.tables:
        return (
            f"{key}.table: source {t.source!r} has no table {t.table!r}{did_you_mean(t.table, source.tables)}; "
            f"known: {sorted(source.tables)}"
        )
    return None


def _column_problems(key: str, t: UnifyTable, table) -> list[str]:
    """Mapped, recency and winner columns missing from a header-less table's declared columns."""
    if not table.columns or table.csv.header:
        return []
    used = list(t.columns) + [c for c in [t.recency_column, t.dedup.winner.column] if c]
    return [f"{key}.columns: {t.ref} has no column {column!r}" for column in used if column not in table.columns]


def _frequency_field_problems(unify: UnifyConfig, mapped_anywhere: set[str]) -> list[str]:
    """Frequency fields written in the configuration must be mapped somewhere: the list replaces the default, so a
    misspelt name silently leaves e-mail or phone uncapped. The default list is not checked (a project without
    phones is fine)."""
    if "frequency_fields" not in unify.guard.model_fields_set:
        return []
    return [
        f"unify.guard.frequency_fields[{fi}]: {field!r} is not mapped in any table"
        f"{did_you_mean(field, mapped_anywhere)}; the list replaces the default [email, phone], so a field that "
        f"is not mapped is capped nowhere; map a column to it in unify.tables[*].columns or fix or remove it "
        f"(mapped: {sorted(mapped_anywhere)})"
        for fi, field in enumerate(unify.guard.frequency_fields)
        if field not in mapped_anywhere
    ]


def _conflict_field_problems(unify: UnifyConfig, mapped_anywhere: set[str]) -> list[str]:
    """Conflict fields must be mapped somewhere and compared exactly."""
    found = []
    for fi, cond in enumerate(unify.guard.conflict_conditions()):
        if cond.field not in mapped_anywhere:
            found.append(
                f"unify.guard.conflict_fields[{fi}]: {cond.field!r} is not mapped in any table"
                f"{did_you_mean(cond.field, mapped_anywhere)}; map a column to "
                f"it in unify.tables[*].columns or remove it (mapped: {sorted(mapped_anywhere)})"
            )
        elif not cond.is_exact or cond.allow_missing:
            found.append(
                f"unify.guard.conflict_fields[{fi}]: values here are compared exactly after their normalizations "
                "and a missing one never conflicts; give only 'field' and 'normalize'"
            )
    return found


def _probabilistic_problems(unify: UnifyConfig, mapped_anywhere: set[str]) -> list[str]:
    """The model's settings: each comparison against the catalogue the matcher builds from (kind, keys, levels
    left out, thresholds) and on mapped attributes; blocking keys on mapped attributes."""
    settings = unify.match.probabilistic
    if not settings:
        return _too_few_to_weigh(unify, mapped_anywhere)
    key = "unify.match.probabilistic"
    found = _listed_problems(settings, key)
    comparisons = settings.get("comparisons")
    for ci, spec in enumerate(comparisons if isinstance(comparisons, list) else []):
        found += comparison_problems(spec, f"{key}.comparisons[{ci}]", mapped_anywhere)
    if isinstance(comparisons, list) and (twice := compared_twice_problem(comparisons, f"{key}.comparisons")):
        found.append(twice)
    for rules_key in ("blocking", "training_blocking"):
        rules = settings.get(rules_key)
        for ri, rule in enumerate(rules if isinstance(rules, list) else []):
            if problem := rule_problem(rule):
                found.append(f"{key}.{rules_key}[{ri}]: {problem}")
            found += _key_problems(rule, f"{key}.{rules_key}[{ri}]", mapped_anywhere)
    if "strata" in settings:
        found += strata_problems(settings["strata"], f"{key}.strata")
    strata = settings.get("strata")
    for si, stratum in enumerate(strata if isinstance(strata, list) else []):
        for ki, rule in enumerate(stratum if isinstance(stratum, list) else [stratum]):
            found += _key_problems(rule, f"{key}.strata[{si}][{ki}]", mapped_anywhere)
    return found


def _too_few_to_weigh(unify: UnifyConfig, mapped_anywhere: set[str]) -> list[str]:
    """The default model of a project that maps fewer than two attributes: every blocking rule would read the one
    attribute, so training could learn nothing of how one person's records differ and would stop the run."""
    if unify.match.method != "probabilistic" or len(mapped_anywhere) >= 2:
        return []
    return [
        f"unify.match.method: probabilistic weighs the evidence of several attributes, and the tables map "
        f"{len(mapped_anywhere)} ({', '.join(sorted(mapped_anywhere)) or 'none'}): map more columns (a name, a birth "
        "date, an address, an e-mail or phone) or use method: rules with a dedup rule on what is mapped"
    ]


def _listed_problems(settings: dict, key: str) -> list[str]:
    """Comparisons and blocking rules given other than as a list, or none of them: the matcher needs a list of at
    least one (``training_blocking`` may be empty: EM then trains on the blocking rules)."""
    found = []
    for listed, example in (
        ("comparisons", "[{kind: exact, column: email}]"),
        ("blocking", "[[email], [last_name, birth_date]]"),
        ("training_blocking", "[[last_name, birth_date]]"),
    ):
        if listed not in settings:
            continue
        value = settings[listed]
        if not isinstance(value, list) and value is not None:
            found.append(f"{key}.{listed}: {value!r} is no list; give a list, for example {example}")
        elif not value and listed != "training_blocking":
            found.append(f"{key}.{listed}: is empty; list at least one, for example {example}")
    return found


def _key_problems(rule, where: str, mapped_anywhere: set[str]) -> list[str]:
    """A blocking rule's or stratum's keys (one key or a list of keys): each readable, on mapped columns only."""
    hint = f"map a column to it in unify.tables[*].columns or remove it (mapped: {sorted(mapped_anywhere)})"
    found = []
    for text in [rule] if isinstance(rule, str) else rule if isinstance(rule, list) else []:
        try:
            columns = parse_key(text).columns
        except BlockingKeyError as exc:
            found.append(f"{where}: {exc}")
            continue
        found += [
            f"{where}: key {text!r} reads {name!r}, not mapped{did_you_mean(name, mapped_anywhere)}; {hint}"
            for name in columns
            if name not in mapped_anywhere
        ]
    return found


def _merge_field_problems(unify: UnifyConfig, refs: set[str], mapped_anywhere: set[str]) -> list[str]:
    """Merge fields whose priority or sources name no unify table or mapped attribute."""
    found = []
    for name, spec in unify.merge.fields.items():
        for ref in spec.priority:
            if ref not in refs:
                found.append(f"unify.merge.fields.{name}.priority: {ref!r} is not a unify table ({sorted(refs)})")
        for src in spec.sources:
            parts = src.split(".")
            if (len(parts) == 3 and f"{parts[0]}.{parts[1]}" in refs) or (len(parts) == 1 and src in mapped_anywhere):
                continue
            found.append(
                f"unify.merge.fields.{name}.sources: {src!r} is neither a mapped attribute nor "
                "'source.table.column' of a unify table"
            )
    return found


def _attach_problems(unify: UnifyConfig, refs: set[str], mapped_anywhere: set[str]) -> list[str]:
    """Attach rules naming tables, fields and conditions that unification cannot use."""
    found = []
    known = set(get_args(SemanticType)) | mapped_anywhere
    for ai, rule in enumerate(unify.match.attach):
        key = f"unify.match.attach[{ai}]"
        found += _attach_table_problems(key, rule, unify, refs)
        if rule.each_other and rule.among:
            found.append(
                f"{key}.among: a rule joining thin customers to each other ('each_other') looks for no other "
                "namesake; remove 'among' or 'each_other'"
            )
        found += [
            f"{key}.among[{ti}]: {ref!r} is not a unify table; use one of {sorted(refs)}"
            for ti, ref in enumerate(rule.among)
            if ref not in refs
        ]
        found += _attach_field_problems(key, rule, known)
    return found


def _attach_table_problems(key: str, rule, unify: UnifyConfig, refs: set[str]) -> list[str]:
    """An attach rule's tables must be unify tables that map every field of ``same``."""
    found = []
    for ti, ref in enumerate(rule.tables):
        if ref not in refs:
            found.append(f"{key}.tables[{ti}]: {ref!r} is not a unify table; use one of {sorted(refs)}")
            continue
        attrs = derived_attributes(unify.table(*ref.split(".", 1)).attributes())
        found += [
            f"{key}.same[{fi}]: {f!r} is not mapped in {ref}{did_you_mean(f, attrs)}; map a column to it or remove it "
            f"(mapped: {sorted(attrs)})"
            for fi, f in enumerate(rule.same)
            if f not in attrs
        ]
    return found


def _attach_field_problems(key: str, rule, known: set[str]) -> list[str]:
    """``must_not_differ`` and ``without`` name known fields, compared exactly, and not also in ``same``."""
    found = []
    for ci, cond in enumerate(rule.must_not_differ):
        where = f"{key}.must_not_differ[{ci}]"
        if cond.field not in known:
            found.append(f"{where}.field: {cond.field!r} is neither a semantic type nor a mapped custom column")
        elif not cond.is_exact:
            found.append(
                f"{where}.precision: values here are compared exactly after their normalizations; remove "
                f"'precision' (got {cond.precision!r})"
            )
        elif cond.field in rule.same:
            found.append(f"{where}.field: {cond.field!r} is also in 'same', which already requires it equal")
    for fi, f in enumerate(rule.without):
        if f not in known:
            found.append(f"{key}.without[{fi}]: {f!r} is neither a semantic type nor a mapped custom column")
        elif f in rule.same:
            found.append(f"{key}.without[{fi}]: {f!r} is also in 'same'; a field cannot be both compared and absent")
    return found


def _rule_problems(rule: Rule, key: str, attrs: set[str], normalize: NormalizeConfig) -> list[str]:
    """A match or dedup rule names mapped fields and known alias maps, and can be blocked."""
    found = []
    for ci, cond in enumerate(rule.conditions):
        if cond.field not in attrs:
            found.append(
                f"{key}.conditions[{ci}].field: {cond.field!r} is not mapped in any table it applies to"
                f"{did_you_mean(cond.field, attrs)}; map a "
                f"column to it in unify.tables[*].columns (mapped: {sorted(attrs)})"
            )
        for n in cond.normalize or []:
            if n.startswith("alias:") and n[6:] not in normalize.aliases:
                found.append(f"{key}.conditions[{ci}].normalize: alias map {n[6:]!r} is not in unify.normalize.aliases")
    found += [f"{key}.blocking: {f!r} is not a mapped field" for f in rule.blocking if f not in attrs]
    if not rule.blocking and not any(c.is_exact and not c.allow_missing for c in rule.conditions):
        found.append(
            f"{key} ({rule.name}): no exact condition and no 'blocking' fields; comparing every pair of records "
            "does not scale: add an exact condition or list blocking fields"
        )
    return found
