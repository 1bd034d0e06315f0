"""The Dataverse sink: the seven output tables under Dataverse logical names, published to an embedded SQLite
database (the default) or to a Dataverse environment through its Web API.

Public names: :class:`Sink`, :class:`SinkTable`, :class:`TableResult`, :func:`sink_table`, :func:`open_sink`.
"""

from ci_pipeline.dataverse.naming import entity_set, logical_column, logical_table, primary_key, sink_table
from ci_pipeline.dataverse.sink import Sink, SinkTable, TableResult, open_sink

__all__ = [
    "Sink",
    "SinkTable",
    "TableResult",
    "entity_set",
    "logical_column",
    "logical_table",
    "open_sink",
    "primary_key",
    "sink_table",
]
