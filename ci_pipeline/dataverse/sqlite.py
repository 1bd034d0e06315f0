"""The embedded sink: one SQLite database file holding the seven tables under their Dataverse logical names."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

import pandas as pd

from ci_pipeline.dataverse.sink import Sink, SinkTable, TableResult, TableUsage
from ci_pipeline.errors import UserError


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


class SqliteSink(Sink):
    """Publishes each table in one transaction: stage the rows, upsert the changed ones by primary key, delete the
    rows that are no longer present, commit. A crash at any point leaves the table as it was before.

    Args:
        path: the database file (created with its folder if missing).
        hook: called as ``hook(table, step)`` at ``"staged"`` (inside the open transaction) and ``"committed"``;
            lets callers report progress (and tests interrupt a publish).
    """

    def __init__(self, path: str | Path, hook: Callable[[str, str], None] | None = None):
        self.path = Path(path)
        self.hook = hook
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._con = sqlite3.connect(self.path, isolation_level=None, timeout=60)
            self._con.execute("PRAGMA journal_mode=WAL")
            self._con.execute("PRAGMA synchronous=NORMAL")
            self._con.execute("PRAGMA temp_store=MEMORY")
            self._con.execute("PRAGMA cache_size=-65536")
        except (OSError, sqlite3.Error) as exc:
            raise UserError(
                f"sink {self.path}: cannot open the SQLite database ({exc}); check publish.sink.path"
            ) from exc

    def close(self) -> None:
        self._con.close()

    # -- writing ------------------------------------------------------------------------------------------------
    def publish(self, table: SinkTable) -> TableResult:
        started = time.monotonic()
        con = self._con
        name, pk, columns = table.logical_name, table.primary_key, table.columns
        frame = table.frame
        values = frame.to_numpy(dtype=object, na_value=None).tolist()
        cols = ", ".join(_q(c) for c in columns)
        same = " AND ".join(f"t.{_q(c)} IS s.{_q(c)}" for c in columns)
        definition = ", ".join(f"{_q(c)} TEXT" + (" PRIMARY KEY" if c == pk else "") for c in columns)
        try:
            con.execute("BEGIN IMMEDIATE")
            existing = [row[1] for row in con.execute(f"PRAGMA table_info({_q(name)})")]
            deleted_by_rebuild = 0
            if existing and existing != columns:
                # The column set changed (e.g. a new unified attribute): rebuild the table in this transaction.
                old = con.execute(f"SELECT {_q(existing[0])} FROM {_q(name)}").fetchall()
                new_keys = set(frame[pk].tolist())
                deleted_by_rebuild = sum(1 for (key,) in old if key not in new_keys)
                con.execute(f"DROP TABLE {_q(name)}")
            con.execute(f"CREATE TABLE IF NOT EXISTS {_q(name)} ({definition}) WITHOUT ROWID")
            if con.execute(f"SELECT NOT EXISTS (SELECT 1 FROM {_q(name)})").fetchone()[0]:
                # An empty table takes the rows directly: nothing to compare, nothing stale.
                marks = ", ".join("?" for _ in columns)
                con.executemany(f"INSERT INTO {_q(name)} ({cols}) VALUES ({marks})", values)
                if self.hook:
                    self.hook(table.name, "staged")
                con.execute("COMMIT")
                return self._result(table, started, unchanged=0, deleted=deleted_by_rebuild)
            con.execute("DROP TABLE IF EXISTS temp.stage")
            con.execute(f"CREATE TEMP TABLE stage ({definition}) WITHOUT ROWID")
            marks = ", ".join("?" for _ in columns)
            con.executemany(f"INSERT INTO temp.stage ({cols}) VALUES ({marks})", values)
            if self.hook:
                self.hook(table.name, "staged")
            unchanged = con.execute(
                f"SELECT count(*) FROM temp.stage s JOIN {_q(name)} t ON t.{_q(pk)} = s.{_q(pk)} WHERE {same}"
            ).fetchone()[0]
            updates = ", ".join(f"{_q(c)} = excluded.{_q(c)}" for c in columns if c != pk)
            differs = " OR ".join(f"{_q(name)}.{_q(c)} IS NOT excluded.{_q(c)}" for c in columns if c != pk)
            conflict = f"DO UPDATE SET {updates} WHERE {differs}" if updates else "DO NOTHING"
            con.execute(
                f"INSERT INTO {_q(name)} ({cols}) SELECT {cols} FROM temp.stage WHERE true "
                f"ON CONFLICT({_q(pk)}) {conflict}"
            )
            deleted = con.execute(
                f"DELETE FROM {_q(name)} WHERE {_q(pk)} NOT IN (SELECT {_q(pk)} FROM temp.stage)"
            ).rowcount
            con.execute("DROP TABLE temp.stage")
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
        return self._result(table, started, unchanged=unchanged, deleted=deleted + deleted_by_rebuild)

    def _result(self, table: SinkTable, started: float, unchanged: int, deleted: int) -> TableResult:
        if self.hook:
            self.hook(table.name, "committed")
        rows = len(table.frame)
        return TableResult(
            table=table.name,
            rows=rows,
            upserted=rows - unchanged,
            deleted=deleted,
            unchanged=unchanged,
            bytes=self._table_usage(table.logical_name).bytes,
            seconds=time.monotonic() - started,
        )

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

    def _table_usage(self, logical_name: str) -> TableUsage:
        columns = [r[1] for r in self._con.execute(f"PRAGMA table_info({_q(logical_name)})")]
        length = " + ".join(f"coalesce(length(CAST({_q(c)} AS BLOB)), 0)" for c in columns) or "0"
        rows, size = self._con.execute(
            f"SELECT count(*), coalesce(sum({length}), 0) FROM {_q(logical_name)}"
        ).fetchone()
        return TableUsage(rows=rows, bytes=size)

    def usage(self) -> dict[str, TableUsage]:
        return {name: self._table_usage(name) for name in self.tables()}
