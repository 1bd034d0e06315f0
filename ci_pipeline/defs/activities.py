"""Dagster definitions of the activities stage: the unified timeline, its quarantine and typed facts."""

import datetime as dt

import dagster as dg
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from ci_pipeline.activities import Timeline, build_timeline
from ci_pipeline.config import ProjectConfig
from ci_pipeline.defs import ingest, unify
from ci_pipeline.defs.metadata import counts_table, numbers, table_of
from ci_pipeline.defs.registry import Produced, Stage, asset_key
from ci_pipeline.outputs import UNIFIED_ACTIVITY_COLUMNS

GROUP = "activities"
UNIFIED = asset_key(GROUP, "unified_activity")
CORRUPT = asset_key(GROUP, "unified_activity_corrupt")
FACTS = asset_key(GROUP, "activity_facts")


def input_name(source: str, table: str) -> str:
    return f"{source}__{table}"


def build(config: ProjectConfig, produced: Produced | None = None) -> dg.Definitions:
    """The activities assets and checks; none when no activity tables are configured."""
    section = config.activities
    if not section.tables:
        return dg.Definitions()
    tables = {(t.source, t.table) for t in section.tables.values()}
    ins = {input_name(s, t): dg.AssetIn(key=ingest.table_key(s, t)) for s, t in sorted(tables)}
    ins["alternate_key"] = dg.AssetIn(key=unify.STAGE.key("alternate_key"))

    @dg.multi_asset(
        name="place_activities",
        group_name=GROUP,
        ins=ins,
        outs={
            "unified_activity": dg.AssetOut(
                key=UNIFIED,
                description="One row per activity of a unified customer (UnifiedActivity), from every activity table.",
                kinds={"pandas", "parquet"},
            ),
            "unified_activity_corrupt": dg.AssetOut(
                key=CORRUPT,
                description="One row per activity that could not be placed on the timeline, with the reason.",
                kinds={"pandas", "parquet"},
            ),
            "activity_facts": dg.AssetOut(
                key=FACTS,
                description="One row per activity with typed semantic fields, for measures and segments.",
                kinds={"pandas", "parquet"},
            ),
        },
        check_specs=[
            dg.AssetCheckSpec(
                "matches_output_contract", asset=UNIFIED, description="Columns are exactly UnifiedActivity's."
            ),
            dg.AssetCheckSpec("activity_ids_unique", asset=UNIFIED, description="ActivityId identifies one row."),
            dg.AssetCheckSpec(
                "every_row_accounted_for", asset=UNIFIED, description="Rows read = rows placed + rows quarantined."
            ),
            dg.AssetCheckSpec(
                "no_quarantined_activities", asset=CORRUPT, description="Every activity found its customer."
            ),
        ],
    )
    def activities(context: dg.AssetExecutionContext, alternate_key: pd.DataFrame, **frames: pd.DataFrame):
        now = pd.Timestamp(dt.datetime.now(dt.UTC)) + pd.Timedelta(hours=section.future_tolerance_hours)
        inputs = {}
        for name, spec in section.tables.items():
            key = spec.primary_key or config.sources[spec.source].tables[spec.table].primary_key
            inputs[name] = (spec, frames[input_name(spec.source, spec.table)], key)
        timeline = build_timeline(inputs, alternate_key, now)
        placed = timeline.facts["Activity"].value_counts().to_dict()
        quarantined = timeline.corrupt["Activity"].value_counts().to_dict()
        per_table = {
            name: {"read": read, "placed": int(placed.get(name, 0)), "quarantined": int(quarantined.get(name, 0))}
            for name, read in timeline.rows_read.items()
        }
        by_type = timeline.unified["ActivityType"].value_counts().sort_index()
        yield dg.Output(
            timeline.unified,
            output_name="unified_activity",
            metadata={
                "per_table": table_of(
                    [{"activity": name, **counts} for name, counts in per_table.items()],
                    ["activity", "read", "placed", "quarantined"],
                ),
                **numbers("placed", {name: counts["placed"] for name, counts in per_table.items()}),
                "per_type": counts_table({str(k): int(v) for k, v in by_type.items()}, "type", "rows"),
                "customers": dg.MetadataValue.int(int(timeline.unified["CustomerId"].nunique())),
            },
        )
        reasons = timeline.corrupt["Reason"].str.replace(r"'[^']*'", "'…'", regex=True).value_counts()
        yield dg.Output(
            timeline.corrupt,
            output_name="unified_activity_corrupt",
            metadata={
                **numbers("quarantined", {name: counts["quarantined"] for name, counts in per_table.items()}),
                "reasons": counts_table({str(k): int(v) for k, v in reasons.head(20).items()}, "reason", "rows"),
            },
        )
        yield dg.Output(timeline.facts, output_name="activity_facts")
        yield from _check_results(timeline, per_table)

    return dg.Definitions(assets=[activities])


def repeated_ids(sorted_ids: pd.Series) -> int:
    """How many ids equal the one before them (``duplicated().sum()``) in a sorted column: equal ids are neighbours,
    so one comparison of the column with itself shifted by a row does it, without hashing millions of strings."""
    if len(sorted_ids) < 2:
        return 0
    ids = pa.chunked_array(pa.array(sorted_ids, type=pa.large_string(), from_pandas=True))
    return int(pc.sum(pc.equal(ids[1:], ids[:-1])).as_py() or 0)


def _check_results(timeline: Timeline, per_table: dict):
    yield dg.AssetCheckResult(
        check_name="matches_output_contract",
        asset_key=UNIFIED,
        passed=list(timeline.unified.columns) == UNIFIED_ACTIVITY_COLUMNS,
        metadata={"columns": list(timeline.unified.columns)},
    )
    duplicates = repeated_ids(timeline.facts["ActivityId"])
    yield dg.AssetCheckResult(
        check_name="activity_ids_unique",
        asset_key=UNIFIED,
        passed=duplicates == 0,
        metadata={"duplicates": duplicates},
    )
    unbalanced = {n: c for n, c in per_table.items() if c["read"] != c["placed"] + c["quarantined"]}
    yield dg.AssetCheckResult(
        check_name="every_row_accounted_for",
        asset_key=UNIFIED,
        passed=not unbalanced,
        metadata={
            "unbalanced": table_of(
                [{"activity": name, **counts} for name, counts in unbalanced.items()],
                ["activity", "read", "placed", "quarantined"],
            )
        },
    )
    yield dg.AssetCheckResult(
        check_name="no_quarantined_activities",
        asset_key=CORRUPT,
        passed=timeline.corrupt.empty,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={"quarantined": len(timeline.corrupt)},
    )


STAGE = Stage(
    name=GROUP,
    section="activities",
    front_door=build_timeline,
    build=build,
    summary="UnifiedActivity: one timeline of orders, web visits, loyalty, feedback, ... per customer",
    assets={"unified_activity": UNIFIED, "unified_activity_corrupt": CORRUPT, "activity_facts": FACTS},
    produces={"UnifiedActivity": UNIFIED},
    active=lambda config: bool(config.activities.tables),
)
