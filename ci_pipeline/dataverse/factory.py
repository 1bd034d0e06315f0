"""The one place that picks a sink implementation from the configuration (like the lake: local or Azure)."""

from __future__ import annotations

from pathlib import Path

from ci_pipeline.config.publish import DataverseConfig, PublishConfig
from ci_pipeline.dataverse.sink import Sink
from ci_pipeline.dataverse.sqlite import SqliteSink
from ci_pipeline.dataverse.webapi import DataverseClient, WebApiSink
from ci_pipeline.errors import UserError
from ci_pipeline.lake import Lake


def sqlite_path(path: str, base_dir: Path) -> Path:
    """The embedded database file: ``publish.sink.path`` resolved against the configuration file's folder."""
    given = Path(path).expanduser()
    return given if given.is_absolute() else base_dir / given


def open_sqlite_sink(path: Path) -> Sink:
    """The embedded sink on one database file (created on first use)."""
    return SqliteSink(path)


def open_dataverse_sink(
    settings: DataverseConfig | None, base_dir: Path, lake: Lake | None, run_id: str, connection: dict | None = None
) -> Sink:
    """A Web API sink for a ``publish.sink.dataverse`` block; secrets are resolved at its first request.

    With ``connection`` (a governed ``dataverse`` connection, resolved) its URL and credential are used and the
    block (optional then) gives only the tuning settings.
    """
    settings = settings or DataverseConfig()
    client = DataverseClient.from_config(settings, base_dir, connection)
    return WebApiSink(
        client,
        lake=lake,
        run_id=run_id,
        skip_unchanged=settings.skip_unchanged,
        marker_entity_set=settings.marker_entity_set,
    )


def open_sink(
    config: PublishConfig,
    base_dir: Path,
    lake: Lake | None = None,
    run_id: str = "manual",
    connection: dict | None = None,
) -> Sink | None:
    """The sink the configuration names, or None for ``kind: none``.

    Args:
        config: the ``publish`` section.
        base_dir: folder relative paths are resolved against (the configuration file's folder).
        lake: where the Web API sink dead-letters rejected rows.
        run_id: names the dead-letter files of this run.
        connection: ``publish.sink.connection`` resolved through the governance layer (required when set).
    """
    if config.sink.kind == "none":
        return None
    if config.sink.kind == "sqlite":
        return open_sqlite_sink(sqlite_path(config.sink.path, base_dir))
    if config.sink.connection and connection is None:
        raise UserError(
            f"publish.sink.connection {config.sink.connection!r}: a governed connection is resolved by the run, as "
            "the user who launched it; publish with `ci-pipeline run --select group:publish`"
        )
    return open_dataverse_sink(config.sink.dataverse, base_dir, lake, run_id, connection)
