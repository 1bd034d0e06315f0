"""Dagster definitions of the publish stage: one asset per sink table, a capacity report and, per export, one
asset per table (its data files, written as soon as the table is made) and one for the snapshot's metadata.

Each asset depends on the upstream table it publishes when a stage of this configuration produces it; tables no
stage produces (Enrichment, Prediction, ...) are still published, empty, so the sink always holds all seven.
"""

import time
from collections.abc import Set as AbstractSet
from datetime import UTC, datetime

import dagster as dg

from ci_pipeline import outputs, table_delta
from ci_pipeline.config import ProjectConfig
from ci_pipeline.config.publish import ExportConfig
from ci_pipeline.dataverse import capacity_report, logical_table, prepare, prepare_stored
from ci_pipeline.defs.metadata import human_size, table_of
from ci_pipeline.defs.refresh import RUNS_WITH_DOWNSTREAM_TAG
from ci_pipeline.defs.registry import REFRESH_TAG, REFRESHED, JobSpec, Produced, Stage, asset_key
from ci_pipeline.defs.resources import (
    EXTERNAL_RETRY,
    LakeResource,
    SinkResource,
    asset_path,
    export_lake,
    fail_fast,
)
from ci_pipeline.defs.threaded import EXCLUSIVE_TAG, PRIORITY_TAG
from ci_pipeline.export import StoredTable, write_export, write_table
from ci_pipeline.redact import clipped, redact

GROUP = "publish"
CAPACITY_KEY = asset_key(GROUP, "sink_capacity")


def _snake(table: str) -> str:
    return "".join("_" + c.lower() if c.isupper() else c for c in table).lstrip("_")


def sink_asset_key(table: str) -> dg.AssetKey:
    """``CustomerProfile`` -> ``publish/sink_customer_profile``."""
    return asset_key(GROUP, f"sink_{_snake(table)}")


def export_asset_key(name: str) -> dg.AssetKey:
    """The asset of one configured export: ``publish/export_<name>``."""
    return asset_key(GROUP, f"export_{name}")


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
    row = outputs.contract(table).row

    @dg.asset(
        key=sink_asset_key(table),
        group_name=GROUP,
        kinds={"sqlite" if kind == "sqlite" else "dataverse"},
        description=f"One row per {row}, published to the Dataverse sink as {logical_table(table, publish.prefix)}.",
        # The table is read from the lake by the sink itself, in batches where it can be (prepare_stored): loading it
        # whole through the IO manager would hold millions of activity rows at once.
        deps=[upstream] if upstream is not None else [],
        tags={"ci_pipeline/output_table": table},
        # One sink at a time: its tables share one database (and its lock).
        op_tags={EXCLUSIVE_TAG: "sink"},
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
    def _publish(context: dg.AssetExecutionContext, lake: LakeResource, sink: SinkResource) -> dg.MaterializeResult:
        if upstream is None:
            prepared = prepare(table, None, publish.prefix, _entity_sets(config))
        else:
            store = lake.get_lake()
            stored = store.dataset(asset_path(upstream))
            delta = table_delta.read(store, asset_path(upstream))
            prepared = prepare_stored(table, stored, publish.prefix, _entity_sets(config), delta)
        with sink.open(lake, context.run_id) as opened:
            result = opened.publish(prepared)
        context.log.info(
            f"{table}: {result.rows} rows, {result.upserted} upserted, {result.deleted} deleted, "
            f"{result.unchanged} unchanged, {result.rejected} rejected in {result.seconds:.1f} s"
            + (" (from the delta its stage wrote)" if result.from_delta else "")
        )
        metadata = {**result.metadata(), "dagster/row_count": result.rows, "sink": kind}
        if isinstance(metadata.get("bytes"), int):
            metadata["size"] = dg.MetadataValue.text(human_size(metadata["bytes"]))
        if result.dead_letter:
            metadata["dead_letter"] = dg.MetadataValue.path(result.dead_letter)
        check = dg.AssetCheckResult(
            check_name="no_rejected_rows",
            passed=result.rejected == 0,
            severity=dg.AssetCheckSeverity.WARN,
            # The server's error texts can quote a request back.
            metadata={"rejected": result.rejected, "errors": redact("\n".join(result.errors[:20]))},
            # The run's summary prints the description with the failed check.
            description=_rejected(result) if result.rejected else None,
        )
        return dg.MaterializeResult(metadata=metadata, check_results=[check])

    return _publish


def _rejected(result) -> str:
    """What the summary says of rows the sink refused: how many, the first error, and where the rows are kept."""
    first = f"; first error: {clipped(result.errors[0], 200)}" if result.errors else ""
    kept = f"; the rows are in {result.dead_letter}" if result.dead_letter else ""
    return f"{result.rejected:,} row(s) of {result.rows:,} rejected by the sink{first}{kept}"


def _entity_sets(config: ProjectConfig) -> dict[str, str]:
    dataverse = config.publish.sink.dataverse
    return dict(dataverse.entity_sets) if dataverse is not None else {}


def _capacity_asset(config: ProjectConfig) -> dg.AssetsDefinition:
    publish = config.publish

    @dg.asset(
        key=CAPACITY_KEY,
        group_name=GROUP,
        kinds={"sqlite" if publish.sink.kind == "sqlite" else "dataverse"},
        description="One row per published table: Dataverse storage entitlement next to the rows and bytes published.",
        deps=[sink_asset_key(t) for t in outputs.OUTPUT_TABLES],
        op_tags={EXCLUSIVE_TAG: "sink"},
    )
    def _capacity(context: dg.AssetExecutionContext, lake: LakeResource, sink: SinkResource) -> dg.MaterializeResult:
        with sink.open(lake, context.run_id) as opened:
            report = capacity_report(opened.usage(), logical_table("CustomerProfile", publish.prefix))
        sink.record_capacity(lake, report)
        tables = report.pop("tables")
        metadata = {k: v for k, v in report.items() if v is not None}
        metadata["tables"] = table_of(
            [
                {"table": name, "rows": t["rows"], "size": human_size(t["bytes"]), "bytes": t["bytes"]}
                for name, t in tables.items()
            ],
            ["table", "rows", "size", "bytes"],
        )
        return dg.MaterializeResult(metadata=metadata)

    return _capacity


def export_tables(export: ExportConfig, produced: Produced) -> dict[str, dg.AssetKey | None]:
    """The tables one export writes: the listed ones (empty where no stage produces them), else every produced
    one."""
    names = export.tables or [t for t in outputs.OUTPUT_TABLES if t in produced]
    return {table: produced.get(table) for table in names}


def export_table_asset_key(name: str, table: str) -> dg.AssetKey:
    """The asset that writes one table's data files of an export: ``publish/unified_activity_to_<name>``."""
    return asset_key(GROUP, f"{_snake(table)}_to_{name}")


def _export_settings(export: ExportConfig) -> dict:
    return {
        "folder": export.folder,
        "fmt": export.format,
        "rows_per_part": export.rows_per_part,
        "escape_formulas": export.escape_formulas,
    }


def _export_spec(config: ProjectConfig, export: ExportConfig) -> dict:
    """What every asset of one export shares: its group, kind, retries and skipping when detached."""
    remote = export.connection or config.lake.url.startswith(("abfs://", "abfss://", "az://"))
    return {
        "group_name": GROUP,
        "kinds": {export.format},
        "retry_policy": EXTERNAL_RETRY if remote else None,
        # A detached export (its connection removed) produces nothing and is shown as skipped, not failed.
        "output_required": export.connection is None,
    }


def _detached(context: dg.AssetExecutionContext, lake: LakeResource, export: ExportConfig) -> bool:
    skipped = lake.access.inactive_exports.get(export.name)
    if skipped:
        # Nothing is yielded: the asset is not materialized in this run, and the step still succeeds.
        context.log.warning(f"skipped: {skipped}")
    return bool(skipped)


def _export_table_asset(
    config: ProjectConfig, export: ExportConfig, table: str, upstream: dg.AssetKey
) -> dg.AssetsDefinition:
    @dg.asset(
        key=export_table_asset_key(export.name, table),
        description=f"The {table} data files of this run's snapshot of the {export.name} export, written as soon as "
        "the table is made; the export's metadata points at them.",
        deps=[upstream],
        # The export writes a whole snapshot every run, so these files are written whenever it runs.
        tags={REFRESH_TAG: export.refresh, RUNS_WITH_DOWNSTREAM_TAG: "true"},
        # Of the ready steps, the stages and the sink go first: segments holds every customer's attributes, and
        # beside it the sink (which ran there before) keeps the peak lower than an export's batches do.
        op_tags={PRIORITY_TAG: "-1"},
        **_export_spec(config, export),
    )
    @fail_fast
    def _export_table(context: dg.AssetExecutionContext, lake: LakeResource):
        if _detached(context, lake, export):
            return
        started = time.monotonic()
        stored = StoredTable(lake.get_lake(), asset_path(upstream))
        record = write_table(
            export_lake(lake, export), export.name, table, stored, run_timestamp(context), **_export_settings(export)
        )
        yield dg.MaterializeResult(
            metadata={
                "dagster/row_count": record["rows"],
                "files": len(record["files"]),
                "size": dg.MetadataValue.text(human_size(record["bytes"])),
                "bytes": record["bytes"],
                "escaped_cells": record["escaped"],
                "duration_seconds": round(time.monotonic() - started, 3),
            }
        )

    return _export_table


def _export_asset(config: ProjectConfig, export: ExportConfig, produced: Produced) -> dg.AssetsDefinition:
    tables = export_tables(export, produced)

    @dg.asset(
        key=export_asset_key(export.name),
        description=f"One CDM folder snapshot per run of the output tables ({', '.join(tables)}) in the lake: the "
        "metadata, after the data files the tables' own assets wrote (a table whose files are not there is written "
        "here).",
        # The tables are read from the lake by the export itself, in batches where it can (StoredTable): loading
        # them whole through the IO manager would hold millions of activity rows at once.
        deps=[export_table_asset_key(export.name, table) for table, key in tables.items() if key is not None],
        tags={REFRESH_TAG: export.refresh},
        **_export_spec(config, export),
    )
    @fail_fast
    def _export(context: dg.AssetExecutionContext, lake: LakeResource):
        if _detached(context, lake, export):
            return
        started = time.monotonic()
        source = lake.get_lake()
        # The stage built the table; the export only checks it against the contract and orders it.
        shaped = {
            table: outputs.empty_table(table) if key is None else StoredTable(source, asset_path(key))
            for table, key in tables.items()
        }
        result = write_export(
            export_lake(lake, export),
            export.name,
            shaped,
            run_timestamp(context),
            retention=export.retention,
            **_export_settings(export),
        )
        metadata = {**result.metadata(), "duration_seconds": round(time.monotonic() - started, 3)}
        metadata["dagster/row_count"] = metadata["rows"]
        metadata["size"] = dg.MetadataValue.text(human_size(metadata["bytes"]))
        metadata["path"] = dg.MetadataValue.path(result.metadata_file)
        yield dg.MaterializeResult(metadata=metadata)

    return _export


def _export_assets(config: ProjectConfig, export: ExportConfig, produced: Produced) -> list[dg.AssetsDefinition]:
    """An export's assets: one per produced table (its data files), then the snapshot's metadata."""
    tables = export_tables(export, produced)
    parts = [_export_table_asset(config, export, t, key) for t, key in tables.items() if key is not None]
    return [*parts, _export_asset(config, export, produced)]


def build(config: ProjectConfig, produced: Produced | None = None) -> dg.Definitions:
    """The publish assets for a configuration: sink tables and capacity (unless ``sink.kind: none``), exports.

    Args:
        config: the project configuration.
        produced: output table -> producing asset, from the stages before (:func:`registry.produced_tables`);
            tables no stage produces are published empty.
    """
    produced = produced or {}
    assets: list[dg.AssetsDefinition] = []
    if config.publish.sink.kind != "none":
        assets.extend(_sink_asset(config, table, produced.get(table)) for table in outputs.OUTPUT_TABLES)
        assets.append(_capacity_asset(config))
    for export in config.publish.exports:
        assets.extend(_export_assets(config, export, produced))
    return dg.Definitions(assets=assets)


def jobs(config: ProjectConfig, keys: AbstractSet[dg.AssetKey]) -> list[JobSpec]:
    """Publishing only: the sink tables and the exports that follow every refresh."""
    return [
        JobSpec(
            "publish_only",
            dg.AssetSelection.groups(GROUP) & REFRESHED,
            "Publish the last computed tables to the sink and the lake.",
            "partial",
        )
    ]


STAGE = Stage(
    name=GROUP,
    section="publish",
    front_door=prepare,
    build=build,
    summary="the seven Dataverse-shaped tables in the sink; CDM folders in the lake",
    assets={"sink_capacity": CAPACITY_KEY},
    jobs=jobs,
)
