"""The sink interface shared by the embedded SQLite database and the Dataverse Web API.

This module knows no implementation; :mod:`ci_pipeline.dataverse.factory` picks one from the configuration.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import cached_property

import pandas as pd
import pyarrow as pa

from ci_pipeline.dataverse.attachment import AttachmentClaim

#: Rows handed to a sink at a time: bounds what a publish holds of a large table.
BATCH_ROWS = 65_536


@dataclass(frozen=True)
class TableDelta:
    """What changed in a table since its version ``base`` (:mod:`ci_pipeline.table_delta`), in the sink's text:
    the rows placed since (new, changed or the same again), in key order, and the keys of rows that left (a key
    placed again may be among them)."""

    base: str
    removed: pa.Array = field(repr=False)
    source: Callable[[], Iterator[pa.RecordBatch]] = field(repr=False)

    def batches(self) -> Iterator[pa.RecordBatch]:
        yield from self.source()


@dataclass(frozen=True)
class SinkTable:
    """One output table ready for a sink: logical column names, every value as text, primary key first, rows in
    increasing key order (unique keys).

    The rows are either held (``source`` an Arrow table) or read again from the lake on each call of
    :meth:`batches` (``source`` a function returning the batches), so a sink can stream a table larger than memory.
    """

    name: str
    logical_name: str
    entity_set: str
    primary_key: str
    #: Text columns (``pa.string()``) under their logical names, primary key first.
    schema: pa.Schema
    rows: int
    source: pa.Table | Callable[[], Iterator[pa.RecordBatch]] = field(repr=False, compare=False)
    #: The version the stored table is stamped with (None: unknown, every row is compared).
    version: str | None = None
    #: The changes from an earlier version to ``version``, when the producing stage wrote them: a sink holding that
    #: version may apply them instead of comparing every row.
    delta: TableDelta | None = field(default=None, repr=False, compare=False)

    @property
    def columns(self) -> list[str]:
        return list(self.schema.names)

    def batches(self) -> Iterator[pa.RecordBatch]:
        """The rows in key order, at most :data:`BATCH_ROWS` at a time."""
        if isinstance(self.source, pa.Table):
            yield from self.source.to_batches(max_chunksize=BATCH_ROWS)
        else:
            yield from self.source()

    def to_arrow(self) -> pa.Table:
        """All rows as one Arrow table."""
        if isinstance(self.source, pa.Table):
            return self.source
        return pa.Table.from_batches(list(self.batches()), schema=self.schema)

    @cached_property
    def frame(self) -> pd.DataFrame:
        """All rows as a pandas frame of text (``string`` dtype, missing values as ``<NA>``), read once: the Web API
        sink sends rows as JSON records."""
        return self.to_arrow().to_pandas(types_mapper={pa.string(): pd.StringDtype()}.get)

    def with_rows(self, frame: pd.DataFrame) -> SinkTable:
        """The same table holding other rows (text columns named as :attr:`columns`, in key order)."""
        arrow = pa.Table.from_pandas(frame, preserve_index=False).cast(self.schema)
        return SinkTable(
            self.name, self.logical_name, self.entity_set, self.primary_key, self.schema, arrow.num_rows, arrow
        )


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
    #: Whether the sink applied the table's delta instead of comparing every row.
    from_delta: bool = False

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
            "from_delta": self.from_delta,
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
