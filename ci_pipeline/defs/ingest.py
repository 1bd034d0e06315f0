"""Dagster definitions of the ingest stage: one multi-asset per configured table (its data and its quarantine)."""

from collections.abc import Set as AbstractSet

import dagster as dg

from ci_pipeline.config import ProjectConfig
from ci_pipeline.config.sources import SourceConfig, TableConfig
from ci_pipeline.defs.metadata import FIRST_N, bullet_list, counts_table, numbers, table_of
from ci_pipeline.defs.registry import JobSpec, Produced, Stage
from ci_pipeline.defs.resources import LakeResource, asset_path
from ci_pipeline.errors import UserError
from ci_pipeline.ingest import IngestResult, ingest_table, remember
from ci_pipeline.ingest.quality import PROFILE_COLUMNS
from ci_pipeline.orchestration.refresh import table_fingerprint
from ci_pipeline.redact import redact

GROUP = "ingest"
_KIND = {"csv": "csv", "parquet": "parquet", "cdm": "cdm", "delta": "delta"}


def table_key(source: str, table: str) -> dg.AssetKey:
    """The asset of one ingested table: ``<source>/<table>``."""
    return dg.AssetKey([source, table])


def corrupt_key(source: str, table: str) -> dg.AssetKey:
    """The quarantine asset of one ingested table: ``<source>/<table>_corrupt``.

    The source is in the key's prefix already; repeating it in the name made the asset graph cut the label."""
    return dg.AssetKey([source, f"{table}_corrupt"])


def build(config: ProjectConfig, produced: Produced | None = None) -> dg.Definitions:
    """The ingest assets and their checks for a configuration.

    Raises:
        UserError: a table is named like another table's quarantine asset (``<table>_corrupt``).
    """
    for source_name, source in config.sources.items():
        taken = sorted(set(source.tables) & {corrupt_key(source_name, t).path[-1] for t in source.tables})
        if taken:
            raise UserError(
                f"sources.{source_name}.tables.{taken[0]}: the name is that of the quarantine asset of table "
                f"{taken[0].removesuffix('_corrupt')} ({source_name}/{taken[0]}); rename the table"
            )
    assets = [
        _table_asset(config, source_name, source, table_name, table)
        for source_name, source in config.sources.items()
        for table_name, table in source.tables.items()
    ]
    return dg.Definitions(assets=assets)


def jobs(config: ProjectConfig, keys: AbstractSet[dg.AssetKey]) -> list[JobSpec]:
    """One job per source: its tables and their quarantine tables."""
    return [
        JobSpec(
            f"ingest_{source}",
            dg.AssetSelection.groups(GROUP) & dg.AssetSelection.key_prefixes([source]),
            f"Ingest the tables of source {source} (and their quarantine tables) only.",
            "partial",
        )
        for source in config.sources
    ]


def _outs(source_name: str, source: SourceConfig, table_name: str, table: TableConfig) -> dict[str, dg.AssetOut]:
    key, corrupt = table_key(source_name, table_name), corrupt_key(source_name, table_name)
    owners = [source.dagster_owner] if source.dagster_owner else []
    kinds = {_KIND[table.format], "pandas"}
    where = table.path if table.format != "cdm" else f"{table.path} (entity {table.entity or table_name})"
    common = {"source_owner": source.owner, "source_path": where, "format": table.format}
    return {
        key.to_python_identifier(): dg.AssetOut(
            key=key,
            description=(
                f"One row per {table_name} record of {source_name} by {table.primary_key}, read in place from "
                f"{where}. {table.description or source.description}"
            ).strip(),
            group_name=GROUP,
            kinds=kinds,
            owners=owners,
            metadata={**common, "primary_key": table.primary_key},
        ),
        corrupt.to_python_identifier(): dg.AssetOut(
            key=corrupt,
            description=(
                f"One row per {source_name}.{table_name} input row that was quarantined, with its file, line, raw "
                "text, reason and severity."
            ),
            group_name=GROUP,
            kinds=kinds,
            owners=owners,
            metadata=common,
        ),
    }


def _checks(key: dg.AssetKey, table: TableConfig) -> list[dg.AssetCheckSpec]:
    return [
        dg.AssetCheckSpec(
            "rows_balance",
            asset=key,
            blocking=True,
            description="Rows read = rows accepted + rows quarantined (+ rows merged by incremental changes).",
        ),
        dg.AssetCheckSpec(
            "quarantine_severity",
            asset=key,
            blocking=True,
            description=(
                f"Fails when rows were quarantined; blocks downstream when their severity is error "
                f"(bad_rows: {table.bad_rows})."
            ),
        ),
        dg.AssetCheckSpec(
            "schema_drift",
            asset=key,
            description="Warns when a column appeared, disappeared or changed type since the previous run.",
        ),
    ]


def _table_asset(
    config: ProjectConfig, source_name: str, source: SourceConfig, table_name: str, table: TableConfig
) -> dg.AssetsDefinition:
    key, corrupt = table_key(source_name, table_name), corrupt_key(source_name, table_name)

    @dg.multi_asset(
        name=f"ingest_{source_name}__{table_name}",
        outs=_outs(source_name, source, table_name, table),
        check_specs=_checks(key, table),
        can_subset=False,
    )
    def _ingest(context: dg.AssetExecutionContext, lake: LakeResource):
        store = lake.get_lake()
        # Taken before reading: a file that changes while it is read makes the next incremental run read it again.
        version = dg.DataVersion(table_fingerprint(store, config, source_name, table_name))
        previous = None
        if table.format == "delta" and store.exists(asset_path(key)):
            previous = store.read_parquet(asset_path(key))
        result = ingest_table(config, store, source_name, table_name, previous=previous)
        for note in result.notes:
            context.log.info(f"{source_name}.{table_name}: {note}")
        for message in [*result.drift, *result.warnings]:
            context.log.warning(message)
        if result.rows_quarantined:
            context.log.warning(
                f"{source_name}.{table_name}: {result.rows_quarantined} row(s) quarantined "
                f"(worst severity {result.worst_severity}); see {corrupt.to_user_string()}"
            )
        counts = {
            "rows_read": dg.MetadataValue.int(result.rows_read),
            "rows_accepted": dg.MetadataValue.int(result.rows_accepted),
            "rows_quarantined": dg.MetadataValue.int(result.rows_quarantined),
        }
        if table.incremental is not None:
            counts["rows_merged"] = dg.MetadataValue.int(result.rows_merged)
        reasons = {str(k): int(v) for k, v in result.quarantine["kind"].value_counts().sort_index().items()}
        yield dg.Output(
            result.data,
            output_name=key.to_python_identifier(),
            data_version=version,
            metadata={
                **counts,
                "drift": dg.MetadataValue.md(_drift_text(result)),
                "profile": table_of(result.profile, PROFILE_COLUMNS),
                "files": len(result.files),
                # File locations and reader notes are the source's own words: a signed URL must not be kept.
                f"files (first {FIRST_N})": bullet_list(redact(f) for f in result.files[:FIRST_N]),
                "notes": dg.MetadataValue.text(redact("\n".join(result.notes))),
                "warnings": dg.MetadataValue.text("\n".join(result.warnings)),
            },
        )
        yield dg.Output(
            result.quarantine,
            output_name=corrupt.to_python_identifier(),
            data_version=version,
            metadata={
                **counts,
                **numbers("quarantined", reasons),
                "reasons": counts_table(reasons, "reason", "rows"),
            },
        )
        # Only now that both outputs are stored does the next run compare against this schema / Delta version.
        remember(store, result)
        yield from _check_results(key, corrupt, result, counts)

    return _ingest


def _check_results(key: dg.AssetKey, corrupt: dg.AssetKey, result: IngestResult, counts: dict):
    yield dg.AssetCheckResult(
        check_name="rows_balance",
        asset_key=key,
        passed=result.balanced,
        metadata={**counts, "rows_merged": dg.MetadataValue.int(result.rows_merged)},
        description=None if result.balanced else "rows read differ from rows accepted + quarantined",
    )
    severity = result.worst_severity
    yield dg.AssetCheckResult(
        check_name="quarantine_severity",
        asset_key=key,
        passed=severity is None,
        severity=dg.AssetCheckSeverity.ERROR if severity == "error" else dg.AssetCheckSeverity.WARN,
        metadata={"rows_quarantined": dg.MetadataValue.int(result.rows_quarantined)},
        description=(
            None
            if severity is None
            else f"{result.rows_quarantined} row(s) in {corrupt.to_user_string()}, worst severity {severity}"
        ),
    )
    yield dg.AssetCheckResult(
        check_name="schema_drift",
        asset_key=key,
        passed=not result.drift,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={"changes": dg.MetadataValue.md(_drift_text(result))},
        # The run's summary and the UI give the description: the changes themselves, as the log said them.
        description="; ".join(result.drift) or None,
    )


def _drift_text(result: IngestResult) -> str:
    if result.first_schema:
        return "First run: this schema is the baseline for drift detection."
    return "\n".join(f"- {m}" for m in result.drift) or "No schema change since the previous run."


STAGE = Stage(
    name=GROUP,
    section="sources",
    front_door=ingest_table,
    build=build,
    summary="typed tables read in place from the lake; bad rows quarantined with file, line, raw row and reason",
    keys="`<source>/<table>`, `<source>/<table>_corrupt`",
    jobs=jobs,
)
