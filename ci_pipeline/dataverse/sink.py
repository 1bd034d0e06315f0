"""The sink interface shared by the embedded SQLite database and the Dataverse Web API.

This module knows no implementation; :mod:`ci_pipeline.dataverse.factory` picks one from the configuration.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field

import pandas as pd

from ci_pipeline.dataverse.attachment import AttachmentClaim


@dataclass(frozen=True)
class SinkTable:
    """One output table ready for a sink: logical column names, text values, primary key first, sorted by it."""

    name: str
    logical_name: str
    entity_set: str
    primary_key: str
    frame: pd.DataFrame

    @property
    def columns(self) -> list[str]:
        return list(self.frame.columns)


@dataclass
class TableResult:
    """What one publish of one table did."""

    table: str
    rows: int
    upserted: int = 0
    deleted: int = 0
    #: Rows already identical in the sink (not written again).
    unchanged: int = 0
    #: Rows the sink rejected; each is dead-lettered with its error.
    rejected: int = 0
    bytes: int = 0
    seconds: float = 0.0
    requests: int = 0
    retries: int = 0
    throttles: int = 0
    dead_letter: str | None = None
    errors: list[str] = field(default_factory=list)

    def metadata(self) -> dict:
        """Plain values for asset metadata and logs."""
        return {
            "rows": self.rows,
            "rows_upserted": self.upserted,
            "rows_deleted": self.deleted,
            "rows_unchanged": self.unchanged,
            "rows_rejected": self.rejected,
            "bytes": self.bytes,
            "duration_seconds": round(self.seconds, 3),
            "requests": self.requests,
            "retries": self.retries,
            "throttles": self.throttles,
        }


@dataclass(frozen=True)
class TableUsage:
    """Rows and bytes a sink holds for one table."""

    rows: int
    bytes: int


class Sink(abc.ABC):
    """A place the seven output tables are published to. Publishing a table makes the sink hold exactly its rows:
    new and changed rows are upserted by primary key, then rows whose key is no longer present are deleted."""

    @abc.abstractmethod
    def publish(self, table: SinkTable) -> TableResult:
        """Upsert every row of ``table``, then delete the sink's rows whose key is not in it."""

    @abc.abstractmethod
    def usage(self) -> dict[str, TableUsage]:
        """Rows and bytes held per logical table name."""

    @abc.abstractmethod
    def claim(self, claim: AttachmentClaim) -> None:
        """Apply the attachment rules (:func:`~ci_pipeline.dataverse.attachment.check_marker`) before publishing;
        write the marker row when there is none."""

    @abc.abstractmethod
    def release(self, environment_id: str) -> bool:
        """Remove the marker row if ``environment_id`` wrote it (detaching); True when one was removed."""

    def close(self) -> None:  # noqa: B027 - most sinks hold nothing to release
        """Release connections."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
