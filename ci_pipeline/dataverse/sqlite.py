"""The embedded sink: one SQLite database file holding the seven tables under their Dataverse logical names."""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from ci_pipeline.dataverse.sink import Sink, SinkTable, TableResult, TableUsage
from ci_pipeline.errors import UserError


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


#: Rows per ``executemany`` batch: bounds the Python objects alive at once while loading a large table.
BATCH = 50_000


class SqliteSink(Sink):
    """Publishes each table in one transaction: compare the rows with what the table holds, write the new and
    changed ones by primary key, delete the rows whose key is gone, commit. A crash at any point leaves the table as
    it was before; a republish of unchanged data writes no row.

    What the table holds is known by a content hash and the byte size of each row, kept in a state database next
    to the sink file (``<file>-state``, attached), so the published tables hold exactly the output tables' columns.
    The comparison reads those hashes, never the rows; the bytes held are counted from the rows written and
    deleted, never by scanning. Each commit stamps a generation in both files (the sink's ``user_version``, the
    state's ``generation``); when they disagree (the state file lost, or a crash between the two files' commits),
    the state of that table is rebuilt from its rows before comparing.

    Args:
        path: the database file (created with its folder if missing).
        hook: called as ``hook(table, step)`` at ``"staged"`` (rows written, transaction still open) and
            ``"committed"``; lets callers report progress (and tests interrupt a publish).
    """

    def __init__(self, path: str | Path, hook: Callable[[str, str], None] | None = None):
        self.path = Path(path)
        self.state_path = self.path.with_name(self.path.name + "-state")
        self.hook = hook
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._con = sqlite3.connect(self.path, isolation_level=None, timeout=60)
            self._con.execute("ATTACH DATABASE ? AS state", (str(self.state_path),))
            for schema in ("main", "state"):
                self._con.execute(f"PRAGMA {schema}.journal_mode=WAL")
                self._con.execute(f"PRAGMA {schema}.synchronous=NORMAL")
            self._con.execute("PRAGMA temp_store=MEMORY")
            self._con.execute("PRAGMA cache_size=-65536")
            self._con.execute(
                "CREATE TABLE IF NOT EXISTS state.row_state (tbl TEXT, key TEXT, hash INTEGER, bytes INTEGER, "
                "PRIMARY KEY (tbl, key)) WITHOUT ROWID"
            )
            self._con.execute(
                "CREATE TABLE IF NOT EXISTS state.table_state (tbl TEXT PRIMARY KEY, columns TEXT, rows INTEGER, "
                "bytes INTEGER, generation INTEGER, published_at TEXT)"
            )
        except (OSError, sqlite3.Error) as exc:
            raise UserError(
                f"sink {self.path}: cannot open the SQLite database or its state file {self.state_path.name} "
                f"({exc}); check publish.sink.path"
            ) from exc

    def close(self) -> None:
        self._con.close()

    # -- writing ------------------------------------------------------------------------------------------------
    def publish(self, table: SinkTable) -> TableResult:
        started = time.monotonic()
        con = self._con
        name, pk, columns = table.logical_name, table.primary_key, table.columns
        arrow = pa.Table.from_pandas(table.frame, preserve_index=False).cast(
            pa.schema([pa.field(c, pa.string()) for c in columns])
        )
        hashes, sizes = row_fingerprints(table.frame, arrow)
        keys = table.frame[pk].to_numpy(dtype=object)
        try:
            con.execute("BEGIN IMMEDIATE")
            self._resync()
            existing = [row[1] for row in con.execute(f"PRAGMA main.table_info({_q(name)})")]
            if existing and existing != columns:
                # The column set changed (e.g. a new unified attribute): rebuild the table in this transaction;
                # every row is written again, and the rows whose key is gone count as deleted.
                old_keys = self._state(name)[0]
                deleted = int((~old_keys.isin(keys)).sum())
                con.execute(f"DROP TABLE main.{_q(name)}")
                con.execute("DELETE FROM state.row_state WHERE tbl = ?", (name,))
                old_keys, old_hashes, old_sizes = pd.Index([], dtype=object), np.array([], np.int64), np.array([])
                rebuilt = True
            else:
                definition = ", ".join(f"{_q(c)} TEXT" + (" PRIMARY KEY" if c == pk else "") for c in columns)
                con.execute(f"CREATE TABLE IF NOT EXISTS main.{_q(name)} ({definition}) WITHOUT ROWID")
                old_keys, old_hashes, old_sizes = self._state(name)
                deleted, rebuilt = 0, False
            if rebuilt:
                definition = ", ".join(f"{_q(c)} TEXT" + (" PRIMARY KEY" if c == pk else "") for c in columns)
                con.execute(f"CREATE TABLE main.{_q(name)} ({definition}) WITHOUT ROWID")
            position = old_keys.get_indexer(pd.Index(keys, dtype=object))
            found = position >= 0
            same = np.zeros(len(keys), dtype=bool)
            same[found] = old_hashes[position[found]] == hashes[found]
            changed = np.flatnonzero(~same)
            kept = np.zeros(len(old_keys), dtype=bool)
            kept[position[found]] = True
            stale = old_keys[~kept]
            replaced = position[changed][found[changed]]
            held = self._held_bytes(name) if not rebuilt else 0
            held += int(sizes[changed].sum()) - int(old_sizes[replaced].sum()) - int(old_sizes[~kept].sum())
            self._write(name, pk, arrow, changed, hashes, sizes, fresh=len(old_keys) == 0)
            if len(stale):
                con.executemany(f"DELETE FROM main.{_q(name)} WHERE {_q(pk)} = ?", ((k,) for k in stale))
                con.executemany("DELETE FROM state.row_state WHERE tbl = ? AND key = ?", ((name, k) for k in stale))
            self._mark(name, columns, len(keys), held)
            if self.hook:
                self.hook(table.name, "staged")
            con.execute("COMMIT")
        except sqlite3.Error as exc:
            if con.in_transaction:
                con.execute("ROLLBACK")
            raise UserError(
                f"sink {self.path}: publishing {name} failed ({exc}); nothing of {name} was changed"
            ) from exc
        except BaseException:
            if con.in_transaction:
                con.execute("ROLLBACK")
            raise
        if self.hook:
            self.hook(table.name, "committed")
        rows = len(keys)
        return TableResult(
            table=table.name,
            rows=rows,
            upserted=len(changed),
            deleted=deleted + len(stale),
            unchanged=rows - len(changed),
            bytes=held,
            seconds=time.monotonic() - started,
        )

    def _write(self, name, pk, arrow, changed, hashes, sizes, fresh: bool) -> None:
        """Write the rows at positions ``changed`` of ``arrow`` (inserted, or replacing the row with their key) and
        their state, in batches converted column by column from Arrow."""
        con, columns = self._con, arrow.column_names
        cols = ", ".join(_q(c) for c in columns)
        marks = ", ".join("?" for _ in columns)
        if fresh:
            # An empty table takes the rows directly: nothing to conflict with.
            sql = f"INSERT INTO main.{_q(name)} ({cols}) VALUES ({marks})"
        else:
            updates = ", ".join(f"{_q(c)} = excluded.{_q(c)}" for c in columns if c != pk)
            conflict = f"DO UPDATE SET {updates}" if updates else "DO NOTHING"
            sql = f"INSERT INTO main.{_q(name)} ({cols}) VALUES ({marks}) ON CONFLICT({_q(pk)}) {conflict}"
        state_sql = "INSERT OR REPLACE INTO state.row_state (tbl, key, hash, bytes) VALUES (?, ?, ?, ?)"
        everything = len(changed) == arrow.num_rows
        for begin in range(0, len(changed), BATCH):
            at = changed[begin : begin + BATCH]
            part = arrow.slice(begin, len(at)) if everything else arrow.take(pa.array(at))
            values = [part.column(c).to_pylist() for c in columns]
            con.executemany(sql, zip(*values, strict=True))
            key = values[columns.index(pk)]
            con.executemany(state_sql, zip([name] * len(at), key, hashes[at].tolist(), sizes[at].tolist(), strict=True))

    def _state(self, name: str) -> tuple[pd.Index, np.ndarray, np.ndarray]:
        """Keys, content hashes and byte sizes of the rows table ``name`` holds, from the state database."""
        rows = self._con.execute("SELECT key, hash, bytes FROM state.row_state WHERE tbl = ?", (name,)).fetchall()
        keys, hashes, sizes = zip(*rows, strict=True) if rows else ((), (), ())
        return pd.Index(keys, dtype=object), np.array(hashes, np.int64), np.array(sizes, np.int64)

    def _resync(self) -> None:
        """Inside the open transaction: when the state is not in step with the sink (a different generation, or a
        table it has no record of), compute every table's state from its rows."""
        con = self._con
        generation = con.execute("PRAGMA main.user_version").fetchone()[0]
        marked = dict(con.execute("SELECT tbl, generation FROM state.table_state").fetchall())
        tables = self.tables()
        if set(marked) == set(tables) and max(marked.values(), default=0) == generation:
            return
        con.execute("DELETE FROM state.row_state")
        con.execute("DELETE FROM state.table_state")
        for name in tables:
            columns = [r[1] for r in con.execute(f"PRAGMA main.table_info({_q(name)})")]
            frame = pd.DataFrame(con.execute(f"SELECT * FROM main.{_q(name)}").fetchall(), columns=columns)
            frame = frame.astype("string")
            hashes, sizes = row_fingerprints(frame, pa.Table.from_pandas(frame, preserve_index=False))
            keys = frame[columns[0]].to_numpy(dtype=object)
            con.executemany(
                "INSERT INTO state.row_state (tbl, key, hash, bytes) VALUES (?, ?, ?, ?)",
                zip([name] * len(keys), keys, hashes.tolist(), sizes.tolist(), strict=True),
            )
            con.execute(
                "INSERT INTO state.table_state (tbl, columns, rows, bytes, generation) VALUES (?, ?, ?, ?, ?)",
                (name, json.dumps(columns), len(keys), int(sizes.sum()), generation),
            )

    def _held_bytes(self, name: str) -> int:
        found = self._con.execute("SELECT bytes FROM state.table_state WHERE tbl = ?", (name,)).fetchone()
        return int(found[0]) if found else 0

    def _mark(self, name: str, columns: list[str], rows: int, held: int) -> None:
        """The run marker: the table's row count, bytes and publish time, and a new generation in both files."""
        con = self._con
        generation = (
            max(
                con.execute("PRAGMA main.user_version").fetchone()[0],
                con.execute("SELECT coalesce(max(generation), 0) FROM state.table_state").fetchone()[0],
            )
            + 1
        )
        con.execute(
            "INSERT OR REPLACE INTO state.table_state (tbl, columns, rows, bytes, generation, published_at) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (name, json.dumps(columns), rows, held, generation, dt.datetime.now(dt.UTC).isoformat()),
        )
        con.execute(f"PRAGMA main.user_version = {int(generation)}")

    # -- reading ------------------------------------------------------------------------------------------------
    def tables(self) -> list[str]:
        """Logical names of the tables in the database, sorted."""
        rows = self._con.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name").fetchall()
        return [r[0] for r in rows]

    def read(self, logical_name: str, where: dict[str, str] | None = None, limit: int | None = None) -> pd.DataFrame:
        """Rows of one table in primary-key order, optionally filtered by exact column values."""
        if logical_name not in self.tables():
            raise UserError(
                f"sink {self.path}: no table {logical_name!r}; it holds {', '.join(self.tables()) or 'no tables yet'}"
            )
        columns = [r[1] for r in self._con.execute(f"PRAGMA table_info({_q(logical_name)})")]
        clauses, params = [], []
        for column, value in (where or {}).items():
            if column in columns:
                clauses.append(f"{_q(column)} = ?")
                params.append(value)
        sql = f"SELECT * FROM {_q(logical_name)}"
        if clauses:
            sql += " WHERE " + " AND ".join(clauses)
        sql += f" ORDER BY {_q(columns[0])}"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        rows = self._con.execute(sql, params).fetchall()
        return pd.DataFrame(rows, columns=columns, dtype="string") if rows else pd.DataFrame(columns=columns)

    def dump(self) -> str:
        """The whole content as SQL text (schema and rows, in key order): equal dumps mean equal content."""
        return "\n".join(self._con.iterdump())

    def usage(self) -> dict[str, TableUsage]:
        """Rows and bytes per table as the publishes counted them (the state database), without scanning."""
        con = self._con
        con.execute("BEGIN IMMEDIATE")
        try:
            self._resync()
            held = con.execute("SELECT tbl, rows, bytes FROM state.table_state ORDER BY tbl").fetchall()
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise
        return {name: TableUsage(rows=rows, bytes=size) for name, rows, size in held}


def row_fingerprints(frame: pd.DataFrame, arrow: pa.Table) -> tuple[np.ndarray, np.ndarray]:
    """Per row: a 64-bit content hash (of every column, NULL told apart from the empty string) and its size in
    bytes as SQLite counts it (the UTF-8 length of each non-NULL value), both vectorised."""
    hashes = pd.util.hash_pandas_object(frame, index=False).to_numpy().view(np.int64)
    sizes = np.zeros(len(frame), dtype=np.int64)
    for column in arrow.columns:
        sizes += pc.fill_null(pc.binary_length(column), 0).to_numpy()
    return hashes, sizes
