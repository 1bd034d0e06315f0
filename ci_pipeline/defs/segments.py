"""Dagster definitions of the segments stage: SegmentMembership, member-count history and static segment state."""

import datetime as dt
from collections.abc import Mapping

import dagster as dg
import pandas as pd

from ci_pipeline.arrow_text import text_isin
from ci_pipeline.config import ProjectConfig
from ci_pipeline.config.segments import SegmentSpec
from ci_pipeline.defs import activities, enrich, measures, predictions, unify
from ci_pipeline.defs.metadata import bullet_list, numbers, table_of
from ci_pipeline.defs.registry import Produced, Stage, asset_key
from ci_pipeline.defs.resources import asset_path
from ci_pipeline.measures import StoredFacts, run_date
from ci_pipeline.orchestration import MODE_TAG
from ci_pipeline.outputs import SEGMENT_MEMBERSHIP_COLUMNS
from ci_pipeline.segments import Reuse, SegmentInputs, SegmentRun, evaluate_segments
from ci_pipeline.segments.incremental import read_state, write_state
from ci_pipeline.segments.membership import read_retired_ids, run_sizes

GROUP = "segments"
MEMBERSHIP = asset_key(GROUP, "segment_membership")
HISTORY = asset_key(GROUP, "segment_member_history")
STATIC = asset_key(GROUP, "static_segment_state")
#: The columns of the ``segments`` metadata table of the membership: each segment's size and its change.
#: The description comes last: it is the long column, and the figures stay readable beside the names.
SIZE_COLUMNS = ("segment", "type", "members", "change", "added", "removed", "description")


class SegmentRunConfig(dg.Config):
    """Run options: static segments to evaluate again this run (``["*"]`` = every static segment)."""

    refresh_static: list[str] = []


def _ins(config: ProjectConfig) -> dict[str, dg.AssetIn]:
    """The inputs loaded whole: the profile, and the measure values, prediction and enrichment fields configured."""
    ins = {"customer_profile": dg.AssetIn(key=unify.STAGE.key("customer_profile"))}
    if config.measures.attributes:
        ins["customer_measure_values"] = dg.AssetIn(key=measures.STAGE.key("customer_measure_values"))
    if config.predictions is not None:
        ins["prediction_fields"] = dg.AssetIn(key=predictions.STAGE.key("prediction_fields"))
    if config.enrich.enrichments:
        ins["enrichment_fields"] = dg.AssetIn(key=enrich.STAGE.key("enrichment_fields"))
    return ins


def build(config: ProjectConfig, produced: Produced | None = None) -> dg.Definitions:
    """The segments assets and checks; none when no segments are configured."""
    section = config.segments
    if not section.definitions:
        return dg.Definitions()
    ins = _ins(config)
    # The facts are a dependency read from the lake in parts of whole customers when an activity condition is
    # evaluated: the IO manager would load every activity at once.
    facts_key = activities.STAGE.key("activity_facts") if config.activities.tables else None
    provider = section.provider or config.name
    record_level = config.orchestration.record_level_increments
    measures_section = config.measures

    @dg.multi_asset(
        name="evaluate_segments",
        group_name=GROUP,
        ins=ins,
        deps=[facts_key] if facts_key else [],
        required_resource_keys={"lake"},
        outs={
            "segment_membership": dg.AssetOut(
                key=MEMBERSHIP,
                description="One row per customer in at least one segment, with the sorted list of its segments.",
                kinds={"pandas", "parquet"},
            ),
            "segment_member_history": dg.AssetOut(
                key=HISTORY,
                description="One row per run and segment: members, added and removed since the previous run.",
                kinds={"pandas", "parquet"},
            ),
            "static_segment_state": dg.AssetOut(
                key=STATIC,
                description="One row per member of a static segment, kept until the segment is refreshed by hand.",
                kinds={"pandas", "parquet"},
            ),
        },
        check_specs=[
            dg.AssetCheckSpec("matches_output_contract", asset=MEMBERSHIP, description="Columns are exact."),
            dg.AssetCheckSpec(
                "members_are_profile_customers", asset=MEMBERSHIP, description="Every member is a current customer."
            ),
            dg.AssetCheckSpec(
                "no_empty_segments",
                asset=MEMBERSHIP,
                description="Every configured segment has at least one member.",
            ),
        ],
    )
    def segments(context: dg.AssetExecutionContext, config: SegmentRunConfig, customer_profile: pd.DataFrame, **inputs):
        lake = context.resources.lake.get_lake()

        def previous(key: dg.AssetKey) -> pd.DataFrame | None:
            path = asset_path(key)
            return lake.read_parquet(path) if lake.exists(path) else None

        result = evaluate_segments(
            section=section,
            as_of=run_date(measures_section.as_of),
            inputs=SegmentInputs(
                profile=customer_profile,
                measures=inputs.get("customer_measure_values"),
                facts=StoredFacts(lake.dataset(asset_path(facts_key))) if facts_key else None,
                predictions=inputs.get("prediction_fields"),
                enrichments=inputs.get("enrichment_fields"),
            ),
            previous_membership=previous(MEMBERSHIP),
            previous_history=previous(HISTORY),
            previous_static=previous(STATIC),
            refresh_static=config.refresh_static,
            provider=provider,
            run_time=pd.Timestamp(dt.datetime.now(dt.UTC)),
            reuse=_reuse(context, lake, record_level),
            id_change=read_retired_ids(lake, asset_path(unify.STAGE.key("id_change")))
            if lake.exists(asset_path(STATIC))
            else None,
        )
        context.log.info(f"segments: {result.report or 'every customer (record-level increments are off)'}")
        counts = {name: int(mask.sum()) for name, mask in result.masks.items()}
        yield dg.Output(
            result.membership,
            output_name="segment_membership",
            metadata={
                **numbers("members", counts),
                # The run's summary prints this table (ci_pipeline.commands.run).
                "segments": table_of(_size_rows(result, counts, section.definitions), list(SIZE_COLUMNS)),
                "conditions_evaluated": result.conditions_evaluated,
                "static_refreshed": dg.MetadataValue.text(", ".join(result.refreshed) or "none"),
            },
        )
        yield dg.Output(result.history, output_name="segment_member_history")
        yield dg.Output(result.static, output_name="static_segment_state")
        yield from _check_results(result, counts, customer_profile)
        if result.state is not None:
            # Kept last: a run that fails before here leaves the last good state, which still describes what it saw.
            write_state(lake, result.state)

    return dg.Definitions(assets=[segments])


def _size_rows(result: SegmentRun, counts: dict[str, int], specs: Mapping[str, SegmentSpec]) -> list[dict]:
    """Per configured segment: its type, members, the change in members and those added and removed since the last
    run (None on the first run), and its description from the configuration, so the page says what each one means
    (a suggested segment without one names its template)."""
    sizes = run_sizes(result.history).set_index("Segment")
    rows = []
    for name, members in counts.items():
        size = sizes.loc[name] if name in sizes.index else None
        change = None if size is None or pd.isna(size["Change"]) else int(size["Change"])
        added, removed = (None, None) if size is None else (int(size["Added"]), int(size["Removed"]))
        spec = specs[name]
        told = spec.description or (f"suggested segment {spec.template}" if spec.template else "")
        rows.append(
            {
                "segment": name,
                "type": spec.type,
                "members": members,
                "change": change,
                "added": added,
                "removed": removed,
                "description": told,
            }
        )
    return rows


def _reuse(context: dg.AssetExecutionContext, lake, record_level: bool) -> Reuse | None:
    """Evaluate only the customers whose inputs changed, unless the run is a full refresh; None (every customer,
    no state kept) when record-level increments are off."""
    if not record_level:
        return None
    if context.run.tags.get(MODE_TAG) == "full":
        return Reuse(None, "a full refresh evaluates every customer")
    return Reuse(*read_state(lake))


def _check_results(result: SegmentRun, counts: dict[str, int], customer_profile: pd.DataFrame):
    yield dg.AssetCheckResult(
        check_name="matches_output_contract",
        asset_key=MEMBERSHIP,
        passed=list(result.membership.columns) == SEGMENT_MEMBERSHIP_COLUMNS,
    )
    known = customer_profile["CustomerId"].astype("string")
    strangers = int((~text_isin(result.membership["CustomerId"], known)).sum())
    yield dg.AssetCheckResult(
        check_name="members_are_profile_customers",
        asset_key=MEMBERSHIP,
        passed=strangers == 0,
        metadata={"unknown_customers": strangers},
    )
    empty = sorted(name for name, n in counts.items() if n == 0)
    yield dg.AssetCheckResult(
        check_name="no_empty_segments",
        asset_key=MEMBERSHIP,
        passed=not empty,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={"empty_segments": bullet_list(empty)},
        # The run's summary prints the description with the failed check.
        description=(
            f"{len(empty)} segment(s) with no member: "
            + ", ".join(f"{n} ({result.hints[n]})" if n in result.hints else n for n in empty)
            if empty
            else None
        ),
    )


STAGE = Stage(
    name=GROUP,
    section="segments",
    front_door=evaluate_segments,
    build=build,
    summary="SegmentMembership and the member-count history",
    assets={"segment_membership": MEMBERSHIP, "segment_member_history": HISTORY, "static_segment_state": STATIC},
    produces={"SegmentMembership": MEMBERSHIP},
    active=lambda config: bool(config.segments.definitions),
)
