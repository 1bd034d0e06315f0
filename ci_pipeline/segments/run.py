"""One segment run: evaluate every segment, keep static ones, and build membership, history and state tables."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ci_pipeline.config.segments import SegmentsConfig
from ci_pipeline.errors import UserError
from ci_pipeline.grammar.rules import Rule, RuleError, parse_rules
from ci_pipeline.measures.facts import FactIndex, StoredFacts, run_end
from ci_pipeline.segments.evaluate import SegmentEngine
from ci_pipeline.segments.membership import (
    HISTORY_COLUMNS,
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
class SegmentRun:
    masks: dict[str, np.ndarray]
    membership: pd.DataFrame
    history: pd.DataFrame
    static: pd.DataFrame
    refreshed: list[str]
    conditions_evaluated: int


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
    customers = pd.Index(sorted(inputs.profile["CustomerId"].astype("string").dropna().unique()), dtype="string")
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
) -> SegmentRun:
    """Evaluate every segment.

    Static segments with kept members use them (minus customers that no longer exist) unless named in
    ``refresh_static`` (``*`` = all); the others are evaluated and their members kept from now on.
    """
    static = sorted(n for n, s in section.definitions.items() if s.type == "static")
    unknown = sorted(set(refresh_static) - set(static) - {"*"})
    if unknown:
        raise UserError(
            f"refresh_static: {', '.join(unknown)} is not a static segment; "
            f"static segments: {', '.join(static) or 'none'}"
        )
    refresh = set(static) if "*" in refresh_static else set(refresh_static)
    kept = previous_static
    if kept is not None and not kept.empty:
        kept = kept[kept["Segment"].isin(set(static) - refresh)]
    frozen = frozen_members(kept)
    engine = build_engine(section, as_of, inputs, frozen)
    masks = engine.evaluate_all()
    masks = {name: masks[name] for name in section.definitions}
    membership = membership_table(engine.customers, masks, provider, section.membership_type, section.membership_name)
    history = history_rows(run_time, engine.customers, masks, members_by_segment(previous_membership))
    if previous_history is not None and not previous_history.empty:
        history = pd.concat([previous_history[HISTORY_COLUMNS], history], ignore_index=True)
    state = static_state(engine.customers, masks, static, kept, run_time)
    refreshed = sorted(set(static) - set(frozen))
    return SegmentRun(masks, membership, history, state, refreshed, engine.conditions_evaluated)
