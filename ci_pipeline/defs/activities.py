"""Dagster definitions of the activities stage: the unified timeline, its quarantine and typed facts."""

import datetime as dt
from pathlib import Path

import dagster as dg
import pandas as pd

from ci_pipeline.activities import (
    LOOKUP_COLUMNS,
    QUARANTINE_LOOKUP_COLUMNS,
    AcceptedDates,
    ActivitySource,
    QuarantinedCustomers,
    StoredTimeline,
    latest_accepted,
    write_timeline,
)
from ci_pipeline.activities.currencies import CURRENCY, currency_counts, currency_mix
from ci_pipeline.activities.diagnose import key_column_hint, missing_keys
from ci_pipeline.activities.incremental import forget, read_state, write_state
from ci_pipeline.config import ProjectConfig
from ci_pipeline.defs import ingest, unify
from ci_pipeline.defs.metadata import counts_table, numbers, table_of
from ci_pipeline.defs.registry import Produced, Stage, asset_key
from ci_pipeline.defs.resources import LakeResource, asset_path
from ci_pipeline.orchestration import MODE_TAG
from ci_pipeline.outputs import UNIFIED_ACTIVITY_COLUMNS
from ci_pipeline.redact import redact
from ci_pipeline.scratch import spill_folder

GROUP = "activities"
UNIFIED = asset_key(GROUP, "unified_activity")
CORRUPT = asset_key(GROUP, "unified_activity_corrupt")
FACTS = asset_key(GROUP, "activity_facts")


CHECKS = [
    dg.AssetCheckSpec("matches_output_contract", asset=UNIFIED, description="Columns are exactly UnifiedActivity's."),
    dg.AssetCheckSpec("activity_ids_unique", asset=UNIFIED, description="ActivityId identifies one row."),
    dg.AssetCheckSpec(
        "every_row_accounted_for", asset=UNIFIED, description="Rows read = rows placed + rows quarantined."
    ),
    dg.AssetCheckSpec("no_quarantined_activities", asset=CORRUPT, description="Every activity found its customer."),
    dg.AssetCheckSpec(
        "one_currency_per_activity", asset=FACTS, description="An activity's amounts are in one currency."
    ),
]


def build(config: ProjectConfig, produced: Produced | None = None) -> dg.Definitions:
    """The activities assets and checks; none when no activity tables are configured."""
    section = config.activities
    if not section.tables:
        return dg.Definitions()
    tables = {(t.source, t.table) for t in section.tables.values()}
    customers = sorted({(t.customer.source, t.customer.table) for t in section.tables.values()})

    # The activity tables are read by the step itself, in batches (Lake.dataset), never loaded whole: dependencies,
    # not inputs. So is AlternateKey (one row per customer record), only the columns of the customer lookup: its
    # key rings and identifiers would cost more to load than the lookup itself. The customer tables' quarantines
    # tell an activity whose customer record was quarantined at ingest where that record went.
    @dg.multi_asset(
        name="place_activities",
        group_name=GROUP,
        deps=[
            unify.STAGE.key("alternate_key"),
            *(ingest.table_key(s, t) for s, t in sorted(tables)),
            *(ingest.corrupt_key(s, t) for s, t in customers),
        ],
        outs={
            "unified_activity": dg.AssetOut(
                key=UNIFIED,
                description="One row per activity of a unified customer (UnifiedActivity), from every activity table.",
                kinds={"duckdb", "parquet"},
            ),
            "unified_activity_corrupt": dg.AssetOut(
                key=CORRUPT,
                description="One row per activity that could not be placed on the timeline, with the reason.",
                kinds={"pandas", "parquet"},
            ),
            "activity_facts": dg.AssetOut(
                key=FACTS,
                description="One row per activity with typed semantic fields, for measures and segments.",
                kinds={"duckdb", "parquet"},
            ),
        },
        check_specs=CHECKS,
    )
    def activities(context: dg.AssetExecutionContext, lake: LakeResource):
        now = latest_accepted(pd.Timestamp(dt.datetime.now(dt.UTC)), section.future_tolerance_hours)
        store = lake.get_lake()
        stored_keys = store.dataset(asset_path(unify.STAGE.key("alternate_key")))
        alternate_key = stored_keys.to_table(columns=LOOKUP_COLUMNS).to_pandas()
        sources = {}
        for name, spec in section.tables.items():
            key = spec.primary_key or config.sources[spec.source].tables[spec.table].primary_key
            rows = store.dataset(asset_path(ingest.table_key(spec.source, spec.table)))
            dates = AcceptedDates.of(spec, config.sources[spec.source].tables[spec.table])
            sources[name] = ActivitySource(spec, key, rows, dates)
        quarantined = _quarantined_customers(store, customers)
        timeline = _placed(context, store, sources, alternate_key, now, quarantined)
        report = timeline.report
        quarantined = timeline.corrupt["Activity"].value_counts().to_dict()
        per_table = {
            name: {"read": read, "placed": timeline.placed[name], "quarantined": int(quarantined.get(name, 0))}
            for name, read in timeline.rows_read.items()
        }
        yield dg.Output(
            timeline.unified,
            output_name="unified_activity",
            metadata={
                "per_table": table_of(
                    [{"activity": name, **counts} for name, counts in per_table.items()],
                    ["activity", "read", "placed", "quarantined"],
                ),
                **numbers("placed", {name: counts["placed"] for name, counts in per_table.items()}),
                "per_type": counts_table(timeline.per_type, "type", "rows"),
                "customers": dg.MetadataValue.int(timeline.customers),
                "rows_placed_this_run": dg.MetadataValue.int(report["rows_placed"]),
                "rows_quarantined_this_run": dg.MetadataValue.int(report["rows_quarantined"]),
                "rows_kept_from_last_run": dg.MetadataValue.int(report["rows_reused"]),
                "placed_every_row_because": dg.MetadataValue.text(report["reason"] or "-"),
            },
        )
        reasons = reason_kinds(timeline.corrupt["Reason"]).value_counts()
        yield dg.Output(
            timeline.corrupt,
            output_name="unified_activity_corrupt",
            metadata={
                **numbers("quarantined", {name: counts["quarantined"] for name, counts in per_table.items()}),
                "reasons": counts_table({str(k): int(v) for k, v in reasons.head(20).items()}, "reason", "rows"),
            },
        )
        yield dg.Output(timeline.facts, output_name="activity_facts")
        yield from _check_results(timeline, per_table, _key_hints(context, config, store, sources, timeline))
        yield _currency_check(context, store, section.tables)

    return dg.Definitions(assets=[activities])


def _quarantined_customers(store, customers: list[tuple[str, str]]) -> dict[tuple[str, str], QuarantinedCustomers]:
    """The rows each customer table's ingest quarantined, named as the user finds them (asset and SQL view)."""
    found = {}
    for source, table in customers:
        key = ingest.corrupt_key(source, table)
        path = asset_path(key)
        if store.exists(path):
            rows = store.dataset(path).to_table(columns=QUARANTINE_LOOKUP_COLUMNS).to_pandas()
            where = f"{key.to_user_string()} (lake.{'__'.join(key.path)} in SQL)"
            found[(source, table)] = QuarantinedCustomers(where, rows)
    return found


def _placed(context: dg.AssetExecutionContext, store, sources: dict, alternate_key: pd.DataFrame, now, quarantined):
    """The stored timeline: only the rows that changed placed, from the last run's state (every row on a full
    refresh); the state for the next run stored once the tables are."""
    if context.run.tags.get(MODE_TAG) == "full":
        previous, no_previous = None, "a full refresh places every row"
    else:
        previous, no_previous = read_state(store)
    # The stored tables are about to change: until the new state is written, there is none to trust.
    forget(store)
    with spill_folder("ci-pipeline-activities-") as work:
        paths = (asset_path(UNIFIED), asset_path(FACTS))
        timeline = write_timeline(
            sources, alternate_key, now, store, paths, Path(work), previous, no_previous, quarantined
        )
    if timeline.state is not None:
        write_state(store, timeline.state)
    report = timeline.report
    context.log.info(f"activities: {'incremental' if report['incremental'] else 'every row placed'} {report}")
    for told in timeline.warnings:
        context.log.warning(f"activities: {told}")
    return timeline


def _key_hints(context, config: ProjectConfig, store, sources: dict, timeline: StoredTimeline) -> dict[str, str]:
    """Per activity more than half of whose rows found no customer record: what its customer keys look like
    (another column of the customer table, e-mail addresses) and the fix (:mod:`ci_pipeline.activities.diagnose`),
    each also logged as a warning."""
    hints = {}
    for name, read in timeline.rows_read.items():
        spec = sources[name].spec
        missing, keys = missing_keys(timeline.corrupt, name, spec)
        if keys.empty or missing * 2 <= read:
            continue
        path = asset_path(ingest.table_key(spec.customer.source, spec.customer.table))
        customers = store.dataset(path) if store.exists(path) else None
        customer_key = config.sources[spec.customer.source].tables[spec.customer.table].primary_key
        hint = key_column_hint(name, spec, keys, (sources[name].primary_key, customer_key), customers)
        if hint:
            context.log.warning(f"activities: {hint}")
            hints[name] = hint
    return hints


def _currency_check(context, store, specs: dict) -> dg.AssetCheckResult:
    """A warning, also in the run log, per activity whose placed amounts are in more than one currency."""
    told = {}
    if any(CURRENCY in spec.fields for spec in specs.values()):
        told = currency_mix(currency_counts(store.dataset(asset_path(FACTS))), specs)
    for text in told.values():
        context.log.warning(f"activities: {text}")
    return dg.AssetCheckResult(
        check_name="one_currency_per_activity",
        asset_key=FACTS,
        passed=not told,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={"activities": dg.MetadataValue.text(", ".join(told) or "-")},
        description="; ".join(told.values()) or None,
    )


def _check_results(timeline: StoredTimeline, per_table: dict, hints: dict[str, str] | None = None):
    columns = timeline.unified.schema.names
    yield dg.AssetCheckResult(
        check_name="matches_output_contract",
        asset_key=UNIFIED,
        passed=columns == UNIFIED_ACTIVITY_COLUMNS,
        metadata={"columns": columns},
    )
    duplicates = timeline.repeated_activity_ids
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
    lost = {n: c for n, c in per_table.items() if c["quarantined"]}
    # An activity none of whose rows was placed is a mistake of its configuration (a key column that is no key,
    # customers looked up in the wrong table), not a few bad rows: an error the end of the run shows as such.
    whole = [n for n, c in lost.items() if c["placed"] == 0]
    yield dg.AssetCheckResult(
        check_name="no_quarantined_activities",
        asset_key=CORRUPT,
        passed=timeline.corrupt.empty,
        severity=dg.AssetCheckSeverity.ERROR if whole else dg.AssetCheckSeverity.WARN,
        metadata={"quarantined": len(timeline.corrupt)},
        description=quarantine_summary(timeline.corrupt, lost, whole, hints) if lost else None,
    )


def reason_kinds(reasons: pd.Series) -> pd.Series:
    """Reasons with the values and file lines in them left out, so that rows quarantined for one cause count
    together (``no ecommerce.customers record with key '…'``)."""
    return reasons.str.replace(r"'[^']*'", "'…'", regex=True).str.replace(r"\bline \d+", "line …", regex=True)


def quarantine_summary(corrupt: pd.DataFrame, lost: dict, whole: list[str], hints: dict[str, str] | None = None) -> str:
    """Per activity with quarantined rows: how many of those read, and its most frequent kind of reason, told by its
    first row (with its value: the kind alone, ``key '…'``, leaves the user to open the quarantine to see what was
    looked up); first whether any activity lost every row, and where the rows are; then each of ``hints`` (what a
    wrong customer column holds, :func:`_key_hints`)."""
    kinds = reason_kinds(corrupt["Reason"])
    parts = []
    for name, counts in lost.items():
        mine = corrupt["Activity"] == name
        top = kinds[mine].value_counts()
        common = ""
        if len(top):
            example = redact(corrupt.loc[mine & (kinds == top.index[0]), "Reason"].iloc[0])
            like = f" ({top.iloc[0]:,} row(s) alike)" if top.iloc[0] > 1 else ""
            common = f", most often{like}: {example}"
        parts.append(f"{name} {counts['quarantined']:,} of {counts['read']:,} row(s){common}")
    every = (
        f"{', '.join(whole)} placed no row at all (check its primary_key, timestamp and customer); " if whole else ""
    )
    told = "".join(f". {hint}" for hint in (hints or {}).values())
    return f"{every}rows quarantined in {CORRUPT.to_user_string()}: " + "; ".join(parts) + told


STAGE = Stage(
    name=GROUP,
    section="activities",
    front_door=write_timeline,
    build=build,
    summary="UnifiedActivity: one timeline of orders, web visits, loyalty, feedback, ... per customer",
    assets={"unified_activity": UNIFIED, "unified_activity_corrupt": CORRUPT, "activity_facts": FACTS},
    produces={"UnifiedActivity": UNIFIED},
    active=lambda config: bool(config.activities.tables),
)
