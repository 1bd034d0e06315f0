"""One segment run: evaluate every segment, keep static ones, and build membership, history and state tables."""

from __future__ import annotations

import dataclasses
import datetime as dt
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from ci_pipeline.arrow_text import text_isin
from ci_pipeline.config.segments import SegmentsConfig
from ci_pipeline.errors import UserError
from ci_pipeline.grammar.rules import Rule, RuleError, parse_rules
from ci_pipeline.measures.compute import customer_ids
from ci_pipeline.measures.conditions import column_kind
from ci_pipeline.measures.facts import FactIndex, StoredFacts, run_end
from ci_pipeline.measures.incremental import affected_customers
from ci_pipeline.segments.evaluate import SegmentEngine, activity_tests, field_tests, segment_tests
from ci_pipeline.segments.incremental import (
    STATE_FORMAT,
    SegmentsState,
    aligned,
    fingerprint,
    input_digests,
    masks_frame,
    merged_masks,
    read_columns,
    reusable,
)
from ci_pipeline.segments.membership import (
    HISTORY_COLUMNS,
    follow_retired_ids,
    frozen_members,
    history_rows,
    members_by_segment,
    membership_table,
    static_state,
)


@dataclass(frozen=True)
class SegmentInputs:
    """What segments are evaluated over."""

    profile: pd.DataFrame
    measures: pd.DataFrame | None = None
    #: The activity facts: a frame, or the stored table (read in parts of whole customers).
    facts: pd.DataFrame | StoredFacts | None = None
    #: ``CustomerId`` plus one column per prediction field (``prediction.ChurnScore``, ...); customers a model did
    #: not score have no row.
    predictions: pd.DataFrame | None = None
    #: ``CustomerId`` plus one ``<enrichment>.<field>`` column per enrichment field (``enrichment.<name>.<field>``).
    enrichments: pd.DataFrame | None = None


@dataclass(frozen=True)
class Reuse:
    """Evaluate only the customers whose inputs changed since the run that kept ``state`` (None: there is none,
    ``absent`` says why), and keep a state for the next run (see :mod:`ci_pipeline.segments.incremental`)."""

    state: SegmentsState | None
    absent: str = "no state of an earlier run"


@dataclass(frozen=True)
class SegmentRun:
    masks: dict[str, np.ndarray]
    membership: pd.DataFrame
    history: pd.DataFrame
    static: pd.DataFrame
    refreshed: list[str]
    conditions_evaluated: int
    #: With :class:`Reuse`: the state to keep, and whether the run reused the last one, why not, how many
    #: customers it evaluated.
    state: SegmentsState | None = None
    report: dict = field(default_factory=dict)
    #: Empty segment -> why it may be empty when a value of one of its rules is held only in another case.
    hints: dict[str, str] = field(default_factory=dict)


def parsed_rules(section: SegmentsConfig) -> dict[str, list[Rule]]:
    """Segment name -> its parsed rules (raises ``RuleError`` on the first bad rule)."""
    return {
        name: parse_rules(spec.raw_rules(), f"segments.definitions.{name}.rules")
        for name, spec in section.definitions.items()
    }


def build_engine(
    section: SegmentsConfig, as_of: dt.date, inputs: SegmentInputs, frozen: dict | None = None
) -> SegmentEngine:
    """A :class:`SegmentEngine` over the inputs, with the configured segments' rules parsed."""
    try:
        rules = parsed_rules(section)
    except RuleError as exc:
        raise UserError(str(exc)) from None
    customers = customer_ids(inputs.profile["CustomerId"])
    end = run_end(as_of)
    facts = inputs.facts
    if isinstance(facts, pd.DataFrame):
        facts = FactIndex(facts, customers, end)
    return SegmentEngine(
        customers,
        inputs.profile,
        inputs.measures,
        facts,
        end,
        rules,
        frozen,
        predictions=inputs.predictions,
        enrichments=inputs.enrichments,
    )


def evaluate_segments(
    section: SegmentsConfig,
    as_of: dt.date,
    inputs: SegmentInputs,
    previous_membership: pd.DataFrame | None,
    previous_history: pd.DataFrame | None,
    previous_static: pd.DataFrame | None,
    refresh_static: list[str],
    provider: str,
    run_time: pd.Timestamp,
    reuse: Reuse | None = None,
    id_change: pd.DataFrame | None = None,
) -> SegmentRun:
    """Evaluate every segment.

    Static segments with kept members use them (minus customers that no longer exist; a member whose id
    unification retired, under the id that holds their records now: :func:`follow_retired_ids`) unless named in
    ``refresh_static`` (``*`` = all); the others are evaluated and their members kept from now on. With
    ``reuse``, only the customers whose inputs changed since the last run are evaluated (the result is the same).
    """
    static = sorted(n for n, s in section.definitions.items() if s.type == "static")
    unknown = sorted(set(refresh_static) - set(static) - {"*"})
    if unknown:
        raise UserError(
            f"refresh_static: {', '.join(unknown)} is not a static segment; "
            f"static segments: {', '.join(static) or 'none'}"
        )
    refresh = set(static) if "*" in refresh_static else set(refresh_static)
    kept = follow_retired_ids(previous_static, id_change, inputs.profile["CustomerId"])
    if kept is not None and not kept.empty:
        kept = kept[kept["Segment"].isin(set(static) - refresh)]
    frozen = frozen_members(kept)
    if reuse is None:
        engine = build_engine(section, as_of, inputs, frozen)
        customers, masks, conditions = engine.customers, engine.evaluate_all(), engine.conditions_evaluated
        kept_state, report = None, {}
    else:
        customers, masks, conditions, kept_state, report = _evaluate_reusing(section, as_of, inputs, frozen, reuse)
    masks = {name: masks[name] for name in section.definitions}
    membership = membership_table(customers, masks, provider, section.membership_type, section.membership_name)
    history = history_rows(run_time, customers, masks, members_by_segment(previous_membership))
    if previous_history is not None and not previous_history.empty:
        history = pd.concat([previous_history[HISTORY_COLUMNS], history], ignore_index=True)
    state = static_state(customers, masks, static, kept, run_time)
    refreshed = sorted(set(static) - set(frozen))
    empty = [name for name, mask in masks.items() if not mask.any() and name not in frozen]
    hints = case_hints(section, empty, inputs)
    return SegmentRun(masks, membership, history, state, refreshed, conditions, kept_state, report, hints)


#: The input (of :class:`SegmentInputs`) holding each namespace's fields.
_TABLES = {"profile": "profile", "measure": "measures", "prediction": "predictions", "enrichment": "enrichments"}


def case_hints(section: SegmentsConfig, empty: list[str], inputs: SegmentInputs) -> dict[str, str]:
    """For each empty segment, a rule of its own comparing a text field (``=``, ``in``) with a value that no
    customer holds as written but some hold in another case (``gold`` for ``Gold``): values are compared as
    written, so the segment selects no one. Only the empty segments' own rules are looked at."""
    hints: dict[str, str] = {}
    rules = parsed_rules(section) if empty else {}
    for name in empty:
        for rule in rules.get(name, []):
            for test in field_tests(rule.node):
                said = _case_slip(test, getattr(inputs, _TABLES.get(test.namespace, ""), None))
                if said:
                    hints.setdefault(name, said)
    return hints


def _case_slip(test, table: pd.DataFrame | None) -> str | None:
    if test.op not in ("=", "in") or table is None or test.name not in table.columns:
        return None
    wanted = [v for v in (test.value if isinstance(test.value, tuple) else (test.value,)) if isinstance(v, str)]
    held = table[test.name]
    if not wanted or column_kind(held) != "text":
        return None
    present = pd.Series(held.dropna().astype(str).unique())
    by_lower = dict(zip(present.str.lower(), present, strict=False))
    for value in wanted:
        other = by_lower.get(value.lower())
        if other is not None and not (present == value).any():
            return f"{test.namespace}.{test.name} holds {other!r}, not {value!r} (values are compared as written)"
    return None


def _dependencies(section: SegmentsConfig, frozen: dict[str, pd.Series]) -> tuple[list[str], dict, dict]:
    """The fact fields the activity conditions filter on, the fields the other conditions read per namespace
    (profile, measure, ...), and the kept members of the static segments that an evaluated segment refers to
    (directly or through other segments): an evaluated membership depends on those."""
    try:
        rules = parsed_rules(section)
    except RuleError as exc:
        raise UserError(str(exc)) from None
    nodes = [rule.node for parsed in rules.values() for rule in parsed]
    fields = list(dict.fromkeys(name for node in nodes for test in activity_tests(node) for name, _, _ in test.where))
    named: dict[str, set[str]] = {}
    for test in (test for node in nodes for test in field_tests(node)):
        named.setdefault(test.namespace, set()).add(test.name)
    seen, waiting = set(), [n for n in rules if n not in frozen]
    while waiting:
        name = waiting.pop()
        if name in seen:
            continue
        seen.add(name)
        if name not in frozen:
            waiting += [ref for rule in rules.get(name, []) for ref in segment_tests(rule.node)]
    return fields, named, {name: frozen[name] for name in sorted(seen & set(frozen))}


def _evaluate_reusing(section: SegmentsConfig, as_of: dt.date, inputs: SegmentInputs, frozen: dict, reuse: Reuse):
    """Every segment's mask, evaluating only the customers whose inputs changed when the last state can be
    reused; returns the customers, the masks, the conditions evaluated, the state to keep and a report."""
    customers = customer_ids(inputs.profile["CustomerId"])
    fields, named, referred = _dependencies(section, frozen)
    given = {
        "profile": inputs.profile,
        "measure": inputs.measures,
        "prediction": inputs.predictions,
        "enrichment": inputs.enrichments,
    }
    # Only the columns the conditions read matter (a change elsewhere in a profile reaches no segment).
    tables = {name: aligned(read_columns(frame, named.get(name, set())), customers) for name, frame in given.items()}
    facts = inputs.facts
    stored = facts if isinstance(facts, StoredFacts) else None
    digests = input_digests(customers, tables, stored, fields)
    columns = {name: None if frame is None else list(map(str, frame.columns)) for name, frame in given.items()}
    meta = {"format": STATE_FORMAT, "fingerprint": fingerprint(section, as_of, tables, columns, stored, referred)}
    evaluated = sorted(n for n in section.definitions if n not in frozen)
    why, known = reusable(reuse.state, reuse.absent, meta, evaluated)
    if not why and isinstance(facts, pd.DataFrame):
        why = "the activity facts are not a stored table"
    if why:
        engine = build_engine(section, as_of, inputs, frozen)
        masks, conditions, affected = engine.evaluate_all(), engine.conditions_evaluated, customers
    else:
        affected = affected_customers(customers, digests, reuse.state.digests, known)
        fresh, conditions = {name: np.zeros(0, dtype=bool) for name in evaluated}, 0
        if len(affected):
            only = pc.field("CustomerId").isin(pa.array(affected.to_numpy(), pa.string()))

            def rows(table: pd.DataFrame | None) -> pd.DataFrame | None:
                return None if table is None else table.loc[affected]

            mine = SegmentInputs(
                profile=rows(tables["profile"]),
                measures=rows(tables["measure"]),
                facts=None if stored is None else dataclasses.replace(stored, where=only),
                predictions=rows(tables["prediction"]),
                enrichments=rows(tables["enrichment"]),
            )
            engine = build_engine(section, as_of, mine, frozen)
            fresh, conditions = engine.evaluate_all(), engine.conditions_evaluated
        masks = merged_masks(customers, reuse.state, affected, fresh, evaluated)
        for name, members in frozen.items():
            masks[name] = text_isin(customers, members.astype("string"))
    state = SegmentsState(digests, masks_frame(customers, {n: masks[n] for n in evaluated}), meta)
    report = {"incremental": not why, "reason": why, "customers": len(customers), "customers_evaluated": len(affected)}
    state.meta.update(customers=len(customers), run=report)
    return customers, masks, conditions, state, report
