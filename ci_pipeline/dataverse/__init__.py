"""The Dataverse sink: the seven output tables under Dataverse logical names, published to an embedded SQLite
database (the default) or to a Dataverse environment through its Web API.

The front door of the publish stage's sink side: :func:`prepare` a stage's table, :func:`open_sink` the configured
sink (:mod:`ci_pipeline.dataverse.factory` is the one place that picks an implementation), publish, and report
capacity with :func:`capacity_report`.
"""

from ci_pipeline.dataverse.capacity import capacity_report
from ci_pipeline.dataverse.factory import open_dataverse_sink, open_sink, open_sqlite_sink, sqlite_path
from ci_pipeline.dataverse.naming import entity_set, logical_column, logical_table, primary_key, sink_table
from ci_pipeline.dataverse.prepare import prepare, prepare_stored
from ci_pipeline.dataverse.sink import Sink, SinkTable, TableResult, TableUsage

__all__ = [
    "Sink",
    "SinkTable",
    "TableResult",
    "TableUsage",
    "capacity_report",
    "entity_set",
    "logical_column",
    "logical_table",
    "open_dataverse_sink",
    "open_sink",
    "open_sqlite_sink",
    "prepare",
    "prepare_stored",
    "primary_key",
    "sink_table",
    "sqlite_path",
]
