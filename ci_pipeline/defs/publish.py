"""Dagster definitions of the publish stage: one asset per sink table, a capacity report and one asset per export.

Each asset depends on the upstream table it publishes when a stage of this configuration produces it; tables no
stage produces (Enrichment, Prediction, ...) are still published, empty, so the sink always holds all seven.
"""

import time
from datetime import UTC, datetime

import dagster as dg
import pandas as pd

from ci_pipeline import outputs
from ci_pipeline.config import ProjectConfig
from ci_pipeline.config.publish import OUTPUT_TABLE_NAMES, ExportConfig
from ci_pipeline.dataverse import logical_table, open_sink
from ci_pipeline.dataverse.capacity import capacity_report
from ci_pipeline.dataverse.prepare import prepare
from ci_pipeline.defs.resources import EXTERNAL_RETRY, LakeResource, fail_fast
from ci_pipeline.export import write_export
from ci_pipeline.redact import redact

#: Output table -> the upstream asset that produces it, and what one row is.
UPSTREAM = {
    "CustomerProfile": (["unify", "customer_profile"], "unified customer"),
    "AlternateKey": (["unify", "alternate_key"], "source record that took part in unification"),
    "UnifiedActivity": (["activities", "unified_activity"], "customer activity"),
    "CustomerMeasure": (["measures", "customer_measure"], "customer with customer attribute measures"),
    "Enrichment": (None, "customer enrichment from one provider"),
    "Prediction": (None, "customer prediction of one model"),
    "SegmentMembership": (["segments", "segment_membership"], "customer with their segment memberships"),
}
CAPACITY_KEY = dg.AssetKey(["publish", "sink_capacity"])


def available_tables(config: ProjectConfig) -> dict[str, dg.AssetKey]:
    """Output tables that a stage of this configuration produces, with the key of the producing asset.

    CustomerProfile and AlternateKey come with ``unify``; UnifiedActivity with ``activities.tables``;
    CustomerMeasure with customer attribute measures (``measures.attributes``); SegmentMembership with
    ``segments.definitions``.
    """
    present = {
        "CustomerProfile": config.unify is not None,
        "AlternateKey": config.unify is not None,
        "UnifiedActivity": bool(config.activities.tables),
        "CustomerMeasure": bool(config.measures.attributes),
        "SegmentMembership": bool(config.segments.definitions),
    }
    return {table: dg.AssetKey(UPSTREAM[table][0]) for table, ok in present.items() if ok}


def _snake(table: str) -> str:
    return "".join("_" + c.lower() if c.isupper() else c for c in table).lstrip("_")


def sink_asset_key(table: str) -> dg.AssetKey:
    """``CustomerProfile`` -> ``publish/sink_customer_profile``."""
    return dg.AssetKey(["publish", f"sink_{_snake(table)}"])


def export_asset_key(name: str) -> dg.AssetKey:
    """The asset of one configured export: ``publish/export_<name>``."""
    return dg.AssetKey(["publish", f"export_{name}"])


def export_asset_keys(config: ProjectConfig) -> list[dg.AssetKey]:
    """Keys of every export asset, for schedules of the orchestration stage."""
    return [export_asset_key(e.name) for e in config.publish.exports]


def run_timestamp(context: dg.AssetExecutionContext) -> datetime:
    """When this run started (UTC): names export snapshots, so a re-executed run writes the same snapshot."""
    record = context.instance.get_run_record_by_id(context.run_id)
    if record is not None and record.start_time:
        return datetime.fromtimestamp(record.start_time, UTC)
    if record is not None and record.create_timestamp:
        stamp = record.create_timestamp
        return stamp if stamp.tzinfo else stamp.replace(tzinfo=UTC)
    raise dg.Failure(f"run {context.run_id} has no start time to name the export snapshot")


def _sink_asset(config: ProjectConfig, table: str, upstream: dg.AssetKey | None) -> dg.AssetsDefinition:
    publish = config.publish
    kind = publish.sink.kind
    row = UPSTREAM[table][1]
    ins = {"upstream": dg.AssetIn(upstream)} if upstream is not None else {}

    @dg.asset(
        key=sink_asset_key(table),
        group_name="publish",
        kinds={"sqlite" if kind == "sqlite" else "dataverse"},
        description=f"One row per {row}, published to the Dataverse sink as {logical_table(table, publish.prefix)}.",
        ins=ins,
        tags={"ci_pipeline/output_table": table},
        # The Dataverse sink crosses the network; the embedded one does not need retries.
        retry_policy=EXTERNAL_RETRY if kind == "dataverse" else None,
        check_specs=[
            dg.AssetCheckSpec(
                "no_rejected_rows",
                asset=sink_asset_key(table),
                description="The sink accepted every row (rejected rows are dead-lettered to the lake).",
            )
        ],
    )
    @fail_fast
    def _publish(context: dg.AssetExecutionContext, lake: LakeResource, **upstream_frames) -> dg.MaterializeResult:
        frame: pd.DataFrame | None = upstream_frames.get("upstream")
        prepared = prepare(table, frame, publish.prefix, config.name, _entity_sets(config))
        sink = open_sink(publish, config.base_dir, lake.get_lake(), run_id=context.run_id)
        with sink:
            result = sink.publish(prepared)
        context.log.info(
            f"{table}: {result.rows} rows, {result.upserted} upserted, {result.deleted} deleted, "
            f"{result.unchanged} unchanged, {result.rejected} rejected in {result.seconds:.1f} s"
        )
        metadata = {**result.metadata(), "dagster/row_count": result.rows, "sink": kind}
        if result.dead_letter:
            metadata["dead_letter"] = dg.MetadataValue.path(result.dead_letter)
        check = dg.AssetCheckResult(
            check_name="no_rejected_rows",
            passed=result.rejected == 0,
            severity=dg.AssetCheckSeverity.WARN,
            # The server's error texts can quote a request back.
            metadata={"rejected": result.rejected, "errors": redact("\n".join(result.errors[:20]))},
        )
        return dg.MaterializeResult(metadata=metadata, check_results=[check])

    return _publish


def _entity_sets(config: ProjectConfig) -> dict[str, str]:
    dataverse = config.publish.sink.dataverse
    return dict(dataverse.entity_sets) if dataverse is not None else {}


def _capacity_asset(config: ProjectConfig) -> dg.AssetsDefinition:
    publish = config.publish

    @dg.asset(
        key=CAPACITY_KEY,
        group_name="publish",
        kinds={"sqlite" if publish.sink.kind == "sqlite" else "dataverse"},
        description="One row per published table: Dataverse storage entitlement next to the rows and bytes published.",
        deps=[sink_asset_key(t) for t in OUTPUT_TABLE_NAMES],
    )
    def _capacity(context: dg.AssetExecutionContext, lake: LakeResource) -> dg.MaterializeResult:
        with open_sink(publish, config.base_dir, lake.get_lake(), run_id=context.run_id) as sink:
            report = capacity_report(sink.usage(), logical_table("CustomerProfile", publish.prefix))
        tables = report.pop("tables")
        metadata = {k: v for k, v in report.items() if v is not None}
        metadata["tables"] = dg.MetadataValue.md(
            "| table | rows | bytes |\n|---|---|---|\n"
            + "\n".join(f"| {name} | {t['rows']:,} | {t['bytes']:,} |" for name, t in tables.items())
        )
        return dg.MaterializeResult(metadata=metadata)

    return _capacity


def export_tables(config: ProjectConfig, export: ExportConfig) -> dict[str, dg.AssetKey | None]:
    """The tables one export writes: the listed ones (empty where no stage produces them), else every available
    one."""
    available = available_tables(config)
    names = export.tables or [t for t in OUTPUT_TABLE_NAMES if t in available]
    return {table: available.get(table) for table in names}


def _export_asset(config: ProjectConfig, export: ExportConfig) -> dg.AssetsDefinition:
    tables = export_tables(config, export)
    ins = {_snake(table): dg.AssetIn(key) for table, key in tables.items() if key is not None}

    @dg.asset(
        key=export_asset_key(export.name),
        group_name="publish",
        kinds={export.format},
        description=f"One CDM folder snapshot per run of the output tables ({', '.join(tables)}) in the lake.",
        ins=ins,
        tags={"ci_pipeline/refresh": export.refresh},
        retry_policy=EXTERNAL_RETRY if config.lake.url.startswith(("abfs://", "abfss://", "az://")) else None,
    )
    @fail_fast
    def _export(context: dg.AssetExecutionContext, lake: LakeResource, **frames) -> dg.MaterializeResult:
        started = time.monotonic()
        shaped = {}
        for table in tables:
            frame = frames.get(_snake(table))
            if frame is None:
                shaped[table] = outputs.empty_table(table)
            elif table == "SegmentMembership":
                shaped[table] = outputs.shape_segment_membership(frame, provider=config.name)
            else:
                shaped[table] = outputs.SHAPERS[table](frame)
        result = write_export(
            lake.get_lake(),
            export.name,
            shaped,
            run_timestamp(context),
            folder=export.folder,
            fmt=export.format,
            rows_per_part=export.rows_per_part,
            retention=export.retention,
            escape_formulas=export.escape_formulas,
        )
        metadata = {**result.metadata(), "duration_seconds": round(time.monotonic() - started, 3)}
        metadata["dagster/row_count"] = metadata["rows"]
        metadata["path"] = dg.MetadataValue.path(result.metadata_file)
        return dg.MaterializeResult(metadata=metadata)

    return _export


def build(config: ProjectConfig) -> dg.Definitions:
    """The publish assets for a configuration: sink tables and capacity (unless ``sink.kind: none``), exports."""
    available = available_tables(config)
    assets: list[dg.AssetsDefinition] = []
    if config.publish.sink.kind != "none":
        assets.extend(_sink_asset(config, table, available.get(table)) for table in OUTPUT_TABLE_NAMES)
        assets.append(_capacity_asset(config))
    assets.extend(_export_asset(config, export) for export in config.publish.exports)
    return dg.Definitions(assets=assets)
