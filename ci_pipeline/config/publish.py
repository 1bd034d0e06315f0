"""Publishing: the Dataverse sink (embedded SQLite or the Dataverse Web API) and CDM exports to the lake."""

from __future__ import annotations

import posixpath
from pathlib import Path, PureWindowsPath
from typing import Literal

from pydantic import Field, model_validator

from ci_pipeline.config.base import REGION_PATTERN, Name, SecretRef, StrictModel
from ci_pipeline.outputs import OUTPUT_TABLES

#: The seven output tables, in publishing order (the contract in :mod:`ci_pipeline.outputs` owns them).
OUTPUT_TABLE_NAMES = tuple(OUTPUT_TABLES)


class DataverseConfig(StrictModel):
    """How to reach a Dataverse environment through its Web API."""

    #: Environment URL, e.g. ``https://contoso.crm.dynamics.com`` (the token scope is ``<url>/.default``). Not
    #: given with ``publish.sink.connection``, which supplies it.
    url: str | None = None
    api_path: str = "/api/data/v9.2/"
    #: azure-identity credential: ``client_secret``, ``certificate``, ``managed_identity`` or ``default``.
    credential: Literal["client_secret", "certificate", "managed_identity", "default"] = "default"
    tenant_id: str | None = None
    client_id: str | None = None
    client_secret: SecretRef | None = None
    #: PEM or PFX certificate file for ``credential: certificate`` (a path, not a secret).
    certificate_path: str | None = None
    certificate_password: SecretRef | None = None
    #: Rows per UpsertMultiple request for standard and elastic tables.
    chunk_size: int = Field(1000, ge=1, le=1000)
    elastic_chunk_size: int = Field(100, ge=1, le=1000)
    #: Output tables created as elastic tables in Dataverse (they take smaller chunks).
    elastic_tables: list[str] = ["AlternateKey", "UnifiedActivity"]
    #: Requests in flight at once (Dataverse allows 52 per user; leave room for other clients).
    max_concurrency: int = Field(8, ge=1, le=52)
    #: Retries of one request on 5xx, dropped connections and 429 before the table fails.
    max_retries: int = Field(8, ge=0, le=50)
    timeout_seconds: float = Field(120.0, gt=0)
    #: Requests per $batch when deleting stale rows.
    delete_batch_size: int = Field(500, ge=1, le=1000)
    page_size: int = Field(5000, ge=1, le=5000)
    #: Do not resend rows published before with the same content (row hashes are kept in the lake).
    skip_unchanged: bool = True
    #: Entity-set names per output table, when they differ from ``<prefix>_<table>s``.
    entity_sets: dict[str, str] = {}
    #: The table holding the attachment marker row (docs/governance.md): one row naming the pipeline environment
    #: and storage account this Dataverse environment serves.
    marker_entity_set: str = Field("msdynci_pipelineattachments", pattern=r"^[a-z][a-z0-9]*_[a-z0-9_]+$")

    @model_validator(mode="after")
    def _credential_settings(self):
        if self.credential == "client_secret" and not (self.tenant_id and self.client_id and self.client_secret):
            raise ValueError("credential 'client_secret' needs tenant_id, client_id and client_secret")
        if self.credential == "certificate" and not (self.tenant_id and self.client_id and self.certificate_path):
            raise ValueError("credential 'certificate' needs tenant_id, client_id and certificate_path")
        if self.url is not None and not self.url.startswith(("https://", "http://")):
            raise ValueError(f"url {self.url!r} must start with https:// (e.g. https://contoso.crm.dynamics.com)")
        return self


class SinkConfig(StrictModel):
    """Where the seven Dataverse-shaped tables are published."""

    #: ``sqlite``: one embedded database file (the default); ``dataverse``: the Web API; ``none``: no sink.
    kind: Literal["sqlite", "dataverse", "none"] = "sqlite"
    #: The SQLite file (relative to the configuration file's folder).
    path: str = "sink.sqlite"
    dataverse: DataverseConfig | None = None
    #: A governed ``dataverse`` connection (``ci-pipeline connections``) that supplies the URL and credential;
    #: the ``dataverse`` block then holds only tuning settings (docs/governance.md).
    connection: str | None = Field(None, min_length=1, max_length=200)
    #: Azure region of the Dataverse environment (``westeurope``); must equal ``lake.region`` when both are set.
    region: str | None = Field(None, pattern=REGION_PATTERN)

    @model_validator(mode="after")
    def _dataverse_needs_settings(self):
        if self.connection and self.kind != "dataverse":
            raise ValueError("connection applies to kind 'dataverse' only; remove it or set kind: dataverse")
        if self.kind == "dataverse" and self.connection is None and (self.dataverse is None or not self.dataverse.url):
            raise ValueError("kind 'dataverse' needs a 'dataverse' block with at least 'url', or a connection")
        if self.connection and self.dataverse is not None:
            inline = [
                k
                for k in ("url", "tenant_id", "client_id", "client_secret", "certificate_path", "certificate_password")
                if getattr(self.dataverse, k)
            ]
            if inline or self.dataverse.credential != "default":
                named = ", ".join(f"dataverse.{k}" for k in inline or ["credential"])
                raise ValueError(
                    f"connection {self.connection!r} supplies the URL and credential; remove {named} (or remove "
                    "connection to keep the inline settings)"
                )
        return self


class ExportConfig(StrictModel):
    """One CDM folder in the lake holding a snapshot of the output tables."""

    name: Name
    #: ``csv``: headerless CSV partitions + model.json; ``parquet``: Parquet partitions + default.manifest.cdm.json.
    format: Literal["csv", "parquet"] = "csv"
    #: Output tables to export (default: every available one).
    tables: list[str] | None = None
    #: Folder in the lake that holds the export folders.
    folder: str = "exports"
    #: Rows per data file; larger tables are split into parts.
    rows_per_part: int = Field(1_000_000, ge=1)
    #: Snapshots kept per table; older ones are deleted after a successful export.
    retention: int = Field(3, ge=1)
    #: ``every_refresh`` exports with each pipeline run; ``on_demand`` only when materialised explicitly (or by a
    #: schedule of the orchestration section).
    refresh: Literal["every_refresh", "on_demand"] = "every_refresh"
    #: CSV only: a text cell starting with ``=``, ``+``, ``-``, ``@``, tab, carriage return, line feed or NUL gets a
    #: leading ``'`` so a spreadsheet shows it as text instead of running it as a formula (OWASP CSV injection).
    #: Parquet keeps every value as it is. Turn it off only when no spreadsheet ever opens the files.
    escape_formulas: bool = True
    #: A governed connection the export is bound to (``ci-pipeline exports add``). Such an export runs only while
    #: its binding is active; a detached one is skipped, not failed (docs/governance.md).
    connection: str | None = Field(None, min_length=1, max_length=200)


class PublishConfig(StrictModel):
    """Where the output tables go: a Dataverse sink and any number of CDM exports."""

    #: Prefix of Dataverse logical names (``msdynci_customerid``). Change it where Customer Insights itself runs:
    #: its ``msdynci_*`` tables belong to that service.
    prefix: str = Field("msdynci", pattern=r"^[a-z][a-z0-9]{1,15}$")
    sink: SinkConfig = SinkConfig()
    exports: list[ExportConfig] = []
    #: Let the sink file and export folders lie outside the project folder (the configuration file's folder) and
    #: the lake. Off by default, so a path such as ``../../etc`` or ``/home/other`` is refused, not written to.
    allow_outside_project: bool = False

    def problems(self, project) -> list[str]:
        """Cross-section problems: unknown table names, duplicate export names, outputs outside project and lake."""
        found: list[str] = [] if self.allow_outside_project else self._outside_problems(project)
        seen: set[str] = set()
        for i, export in enumerate(self.exports):
            if export.name in seen:
                found.append(f"publish.exports[{i}].name: export {export.name!r} is defined twice; rename one")
            seen.add(export.name)
            for table in export.tables or []:
                if table not in OUTPUT_TABLE_NAMES:
                    found.append(
                        f"publish.exports[{i}].tables: {table!r} is not an output table; "
                        f"use one of {', '.join(OUTPUT_TABLE_NAMES)}"
                    )
        lake_region, sink_region = project.lake.region, self.sink.region
        if lake_region and sink_region and lake_region != sink_region and self.sink.kind != "none":
            found.append(
                f"publish.sink.region: {sink_region!r} differs from lake.region {lake_region!r}; a Dataverse "
                "environment and its lake must be in the same Azure region: correct one of the two keys"
            )
        dataverse = self.sink.dataverse
        if dataverse is not None:
            for table in [*dataverse.elastic_tables, *dataverse.entity_sets]:
                if table not in OUTPUT_TABLE_NAMES:
                    found.append(
                        f"publish.sink.dataverse: {table!r} is not an output table; "
                        f"use one of {', '.join(OUTPUT_TABLE_NAMES)}"
                    )
        return found

    def _outside_problems(self, project) -> list[str]:
        """Output locations that resolve outside the project folder and the lake (``..``, absolute paths)."""
        found: list[str] = []
        fix = "keep it inside them, or set publish.allow_outside_project: true to write there on purpose"
        for i, export in enumerate(self.exports):
            folder = export.folder.replace("\\", "/")
            normal = posixpath.normpath(folder)
            if "://" in folder or PureWindowsPath(folder).drive or folder.startswith("/") or normal.startswith(".."):
                found.append(
                    f"publish.exports[{i}].folder: {export.folder!r} is not a folder inside the lake (exports are "
                    f"written below the lake root); give a relative folder such as 'exports', or set "
                    "publish.allow_outside_project: true to write there on purpose"
                )
        if self.sink.kind == "sqlite":
            base = project.base_dir.resolve()
            path = Path(self.sink.path).expanduser()
            target = (path if path.is_absolute() else base / path).resolve()
            roots = [base]
            lake_url = project.lake.url
            if "://" not in lake_url or lake_url.startswith("file://"):
                roots.append(Path(project.resolve_location(lake_url.removeprefix("file://"))).resolve())
            if not any(target.is_relative_to(root) for root in roots):
                found.append(
                    f"publish.sink.path: {self.sink.path!r} resolves to {target}, outside the project folder "
                    f"({base}) and the lake; {fix}"
                )
        return found
