"""What the activities stage keeps between runs, and which rows of the activity tables it places again.

A row's place on the timeline depends on its own values, on the CustomerId of the record it names, on whether
another row has its key, and on the run's clock (a timestamp in the future is quarantined). So the stage keeps, per
activity table, a hash of each row's ActivityId and one of the whole row, and whether the row was placed; and per
customer table the CustomerId of each key. The next run places again only the rows that are new or changed, that
were quarantined (the clock moved on, a missing customer may have come), whose key is repeated now, or whose
record's CustomerId changed; every other row placed before is taken from the stored timeline as it is, and the rows
that are gone or placed again leave it. The result equals placing every row (tested).

The state is written after the two tables, and its meta file is removed before they are rewritten: a run stopped
in between leaves no state, and the next run places every row.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

import ci_pipeline
from ci_pipeline.arrow_text import duckdb_hashes
from ci_pipeline.lake import Lake
from ci_pipeline.run_state import META
from ci_pipeline.sql_text import literal, quoted

#: Where the state is kept in the lake.
STATE_DIR = "ci_pipeline/_state/activities"
#: Changes whenever what the state holds, or what it means, changes: an older state is not used.
STATE_FORMAT = 1
#: Columns of a table's kept rows, sorted by ``id_hash`` (the hash of the row's ActivityId text).
ROWS = pa.schema([("id_hash", pa.int64()), ("row_hash", pa.int64()), ("placed", pa.bool_())])
#: Columns of a customer table's kept lookup (the key of each record and its CustomerId).
LOOKUP = pa.schema([("value", pa.large_string()), ("customer", pa.large_string())])
#: UnifiedActivity's key.
GUID = "msdynci_unifiedactivityid"
#: The name under which a batch's key text joins its columns to be hashed (a source column never has it).
_KEY = "ci_pipeline key text"
#: DuckDB's ``hash`` of a text, as the ActivityIds of stored rows are hashed to find the ones that leave.
_ID_HASH = "hash({})"


@dataclass(frozen=True)
class TimelineState:
    """What a run kept for the next: the meta, each activity table's rows and each customer table's lookup."""

    meta: dict
    rows: dict[str, pa.Table]
    lookups: dict[tuple[str, str], pa.Table]


def fingerprint(sources: dict, orders: dict[str, bool] | None = None) -> str:
    """A digest of everything but the data that decides where rows go: each activity table's configuration and key
    column, the code's version and the hash function's; and ``orders``, per activity whether its year-last
    timestamps are read day first (the whole table's values decide it)."""
    described = {
        "format": STATE_FORMAT,
        "version": ci_pipeline.__version__,
        "hasher": duckdb.__version__,
        "tables": {
            name: [s.spec.model_dump(mode="json"), s.primary_key, repr(getattr(s, "dates", None))]
            for name, s in sorted(sources.items())
        },
        **({"orders": dict(sorted(orders.items()))} if orders else {}),
    }
    return hashlib.sha256(json.dumps(described, sort_keys=True, default=str).encode()).hexdigest()


def row_fingerprints(
    con: duckdb.DuckDBPyConnection, batch: pa.RecordBatch, keys: pa.Array, prefix: str
) -> tuple[np.ndarray, np.ndarray]:
    """Per row of ``batch``: a 64-bit hash of its ActivityId (``prefix`` and its key text, ``keys``) and one of all
    its columns (DuckDB's ``hash``, vectorised, in row order), as signed integers."""
    table = pa.Table.from_batches([batch]).append_column(_KEY, keys)
    columns = ", ".join(quoted(c) for c in batch.schema.names)
    activity_id = _ID_HASH.format(f"{literal(prefix)} || {quoted(_KEY)}")
    found = duckdb_hashes(table, [activity_id, f"hash({columns})"], con)
    return found[0], found[1]


def id_hashes(con: duckdb.DuckDBPyConnection, ids: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """The hash :func:`row_fingerprints` gives each ActivityId."""
    return duckdb_hashes(pa.table({"id": ids}), [_ID_HASH.format("id")], con)[0]


class Refused(Exception):
    """The stored tables cannot be reused after all (the message says why): every row is placed."""


class KeptRows:
    """The rows of one activity table as this run leaves them, collected batch by batch (for the next state)."""

    def __init__(self):
        self.parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        self._table: pa.Table | None = None

    def add(self, id_hash: np.ndarray, row_hash: np.ndarray, placed: np.ndarray) -> None:
        self.parts.append((id_hash, row_hash, placed))
        self._table = None

    def table(self) -> pa.Table:
        """The rows sorted by ActivityId hash (equal hashes in table order)."""
        if self._table is None:
            self._table = self._sorted()
        return self._table

    def _sorted(self) -> pa.Table:
        if not self.parts:
            return ROWS.empty_table()
        id_hash, row_hash, placed = (np.concatenate([p[i] for p in self.parts]) for i in range(3))
        order = np.argsort(id_hash, kind="stable")
        return pa.table([id_hash[order], row_hash[order], placed[order]], schema=ROWS)


def version(
    fingerprint_: str,
    rows: dict[str, KeptRows],
    whole: dict[str, bool | None],
    lookups: dict,
    con: duckdb.DuckDBPyConnection,
) -> str:
    """The version of the stored timeline a state describes: a digest of everything the state holds but the run's
    time and the row counts (the configuration's fingerprint, each table's rows, each customer table's lookup,
    hashed on ``con``). The rows of stored tables are reused on the strength of these alone, so two timelines of
    one version hold the same rows."""
    digest = hashlib.sha256(json.dumps([fingerprint_, sorted(whole.items())], default=str).encode())
    for name in sorted(rows):
        table = rows[name].table()
        digest.update(f"|{name}|{table.num_rows}|".encode())
        for column in table.columns:
            digest.update(column.to_numpy().tobytes())
    for linked in sorted(lookups):
        found = lookups[linked]
        pairs = pa.table({"v": found.values.cast(pa.large_string()), "c": found.ids.cast(pa.large_string())})
        digest.update(f"|{linked}|{pairs.num_rows}|".encode())
        digest.update(duckdb_hashes(pairs, ["hash(v, c)"], con)[0].tobytes())
    return digest.hexdigest()


def write_state(lake: Lake, state: TimelineState) -> None:
    """Store the state (its tables first, the meta file last)."""
    forget(lake)
    for name, file in state.meta["names"].items():
        _write(lake, file["file"], state.rows[name])
    for entry in state.meta["lookups"]:
        _write(lake, entry["file"], state.lookups[(entry["source"], entry["table"])])
    lake.write_bytes(f"{STATE_DIR}/{META}", json.dumps(state.meta, sort_keys=True).encode())


def _write(lake: Lake, file: str, table: pa.Table) -> None:
    with lake.writing(f"{STATE_DIR}/{file}.parquet") as local:
        pq.write_table(table, local, compression="zstd")


def _read(lake: Lake, file: str, schema: pa.Schema) -> pa.Table:
    return lake.dataset(f"{STATE_DIR}/{file}.parquet").to_table().cast(schema)


def forget(lake: Lake) -> None:
    """Remove the meta file: from now on the stored timeline may differ from what the state says."""
    lake.delete(f"{STATE_DIR}/{META}")


def read_state(lake: Lake) -> tuple[TimelineState | None, str]:
    """The last run's state, or None and why there is none to use."""
    meta_path = f"{STATE_DIR}/{META}"
    if not lake.exists(meta_path):
        return None, f"no state of an earlier run at {lake.url(meta_path)}"
    try:
        meta = json.loads(lake.read_bytes(meta_path))
        rows = {name: _read(lake, file["file"], ROWS) for name, file in meta["names"].items()}
        lookups = {(e["source"], e["table"]): _read(lake, e["file"], LOOKUP) for e in meta["lookups"]}
    except Exception as exc:  # any damage means placing every row, never a wrong reuse
        return None, f"the state at {lake.url(STATE_DIR)} is unreadable ({type(exc).__name__}: {exc})"
    sizes = [(len(rows[n]), f["rows"]) for n, f in meta["names"].items()]
    sizes += [(len(lookups[(e["source"], e["table"])]), e["rows"]) for e in meta["lookups"]]
    if any(found != said for found, said in sizes):
        return None, f"the state at {lake.url(STATE_DIR)} is incomplete (its files do not match its meta file)"
    return TimelineState(meta, rows, lookups), ""


def new_state(
    fingerprint_: str,
    now: pd.Timestamp,
    rows: dict[str, KeptRows],
    whole: dict[str, bool | None],
    lookups: dict,
    outputs: dict[str, int],
) -> TimelineState:
    """The state a run leaves: ``outputs`` are the rows of the two stored tables it describes."""
    tables = {name: kept.table() for name, kept in rows.items()}
    lookup_tables = {
        linked: pa.table([found.values.cast(pa.large_string()), found.ids.cast(pa.large_string())], schema=LOOKUP)
        for linked, found in lookups.items()
    }
    meta = {
        "format": STATE_FORMAT,
        "fingerprint": fingerprint_,
        "now": now.isoformat(),
        "names": {
            name: {"file": f"rows-{i}", "rows": len(tables[name]), "whole": whole[name]}
            for i, name in enumerate(sorted(tables))
        },
        "lookups": [
            {"source": s, "table": t, "file": f"lookup-{i}", "rows": len(lookup_tables[(s, t)])}
            for i, (s, t) in enumerate(sorted(lookup_tables))
        ],
        "outputs": outputs,
    }
    return TimelineState(meta, tables, lookup_tables)


class Reuse:
    """Which rows of each activity table this run places again, given the last run's state; and what of the
    stored timeline it keeps."""

    def __init__(self, state: TimelineState, lookups: dict, linked):
        """``linked``: activity name -> its customer table."""
        self.rows = {}
        for name, table in state.rows.items():
            self.rows[name] = (
                table.column("id_hash").to_numpy(),
                table.column("row_hash").to_numpy(),
                table.column("placed").to_numpy(zero_copy_only=False),
            )
        #: Per activity name, the kept rows a row of this run reuses unchanged.
        self.reused = {name: np.zeros(len(table), dtype=bool) for name, table in state.rows.items()}
        self.changed = {
            name: _changed_customers(state.lookups.get(customer), lookups[customer])
            for name, customer in linked.items()
        }

    @classmethod
    def plan(
        cls,
        state: TimelineState | None,
        no_state: str,
        fingerprint_: str,
        sources: dict,
        whole: dict[str, bool | None],
        lookups: dict,
        now: pd.Timestamp,
        stored_rows: Callable[[], dict[str, int | None]],
    ) -> tuple[Reuse | None, str]:
        """The reuse of ``state``, or None and why every row is placed (``stored_rows``: the rows of the stored
        UnifiedActivity and facts, None for a table that is not there)."""
        if state is None:
            return None, no_state
        meta = state.meta
        if meta.get("format") != STATE_FORMAT or meta.get("fingerprint") != fingerprint_:
            return None, "the activity tables' configuration or the pipeline's version changed since the last run"
        if now < pd.Timestamp(meta["now"]):
            return None, f"the run's time {now.isoformat()} is earlier than the last run's {meta['now']}"
        tables = [(s.spec.source, s.spec.table) for s in sources.values()]
        if len(set(tables)) < len(tables):
            return None, "two activities read one table (their ActivityIds are alike): every row is placed"
        changed = [name for name, kept in meta["names"].items() if kept["whole"] != whole.get(name)]
        if changed:
            return None, f"the keys of {', '.join(changed)} are written differently now (whole numbers or not)"
        if stored_rows() != meta["outputs"]:
            return None, "the stored timeline is not the one the state describes"
        linked = {name: (s.spec.customer.source, s.spec.customer.table) for name, s in sources.items()}
        return cls(state, lookups, linked), ""

    def select(
        self,
        name: str,
        id_hash: np.ndarray,
        row_hash: np.ndarray,
        links: Callable[[], pd.Series],
        repeated: np.ndarray,
    ) -> np.ndarray:
        """Which rows of a batch of ``name`` are placed again (True); marks the others' kept rows as reused.

        ``links``: the batch's customer keys as the placing writes them (asked for only when a customer changed);
        ``repeated``: which rows have a key that more than one row of the whole table has now (all quarantined).
        """
        hashes, stored_rows, placed = self.rows[name]
        n = len(hashes)
        reuse = np.zeros(len(id_hash), dtype=bool)
        if n == 0 or len(id_hash) == 0:
            return ~reuse
        # Looked up in hash order: each search starts where the last one ended (and stays in the cache).
        order = np.argsort(id_hash)
        at = np.empty(len(id_hash), dtype=np.int64)
        at[order] = np.minimum(np.searchsorted(hashes, id_hash[order]), n - 1)
        # Two ActivityIds of one hash are told apart by the row hash, which covers the key: the row is placed again
        # (and the kept row of its hash leaves), which is right whichever rows they are.
        same = hashes[at] == id_hash
        reuse[same] = (stored_rows[at[same]] == row_hash[same]) & placed[at[same]]
        reuse &= ~repeated
        changed = self.changed[name]
        if len(changed) and reuse.any():
            reuse &= ~np.asarray(links().isin(changed), dtype=bool)
        self.reused[name][at[reuse]] = True
        return ~reuse

    def removed(self) -> tuple[np.ndarray, int]:
        """The ActivityId hashes of the stored rows that leave the timeline (gone from their table, or placed
        again), sorted, and how many rows they are."""
        leaving = [hashes[placed & ~self.reused[name]] for name, (hashes, _, placed) in self.rows.items()]
        found = np.concatenate(leaving) if leaving else np.zeros(0, dtype=np.int64)
        return np.unique(found), len(found)


def _changed_customers(before: pa.Table | None, now) -> pd.Series:
    """The record keys of a customer table whose CustomerId changed or that are gone since ``before`` (``now``:
    the table's ``CustomerLookup``)."""
    if before is None:
        return pd.Series([], dtype="string")
    position = now.index.positions(before.column("value").combine_chunks())
    current = pc.take(now.ids.cast(pa.large_string()), position)
    differ = pc.fill_null(pc.not_equal(before.column("customer"), current), True)
    return pd.Series(pd.array(before.column("value").filter(differ), dtype="string"))


class Kept:
    """The stored rows that stay, batch by batch in their order: every row but those whose ActivityId hash is one
    of ``removed``. Each table must lose exactly ``rows`` rows (one per leaving ActivityId); another count means
    a kept ActivityId shares a hash with a leaving one, and :meth:`batches` raises :class:`Refused`."""

    def __init__(self, removed: np.ndarray, rows: int):
        self.removed, self.rows = removed, rows

    def batches(self, batches: Iterator[pa.RecordBatch], left: list[pa.Array] | None = None) -> Iterator[pa.Table]:
        """The kept rows of each batch (``left``: gets the GUIDs of the rows that leave, when given)."""
        dropped = 0
        with duckdb.connect() as con:
            for batch in batches:
                table = pa.Table.from_batches([batch])
                if len(self.removed):
                    hashes = id_hashes(con, table.column("ActivityId"))
                    at = np.minimum(np.searchsorted(self.removed, hashes), len(self.removed) - 1)
                    leaving = self.removed[at] == hashes
                    dropped += int(leaving.sum())
                    if left is not None and leaving.any():
                        left.append(table.column(GUID).filter(pa.array(leaving)).combine_chunks())
                    table = table.filter(pa.array(~leaving))
                if table.num_rows:
                    yield table
        if dropped != self.rows:
            raise Refused(f"{dropped} stored rows matched the {self.rows} that leave (a hash shared by two ids)")
