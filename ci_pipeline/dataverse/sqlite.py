"""The embedded sink: one SQLite database file holding the seven tables under their Dataverse logical names."""

from __future__ import annotations

import datetime as dt
import json
import shutil
import sqlite3
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import adbc_driver_sqlite.dbapi as adbc_sqlite
import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from ci_pipeline import outputs
from ci_pipeline.arrow_text import fixed_width_bytes
from ci_pipeline.dataverse.attachment import AttachmentClaim, check_marker
from ci_pipeline.dataverse.sink import Sink, SinkTable, TableResult, TableUsage
from ci_pipeline.errors import UserError
from ci_pipeline.side_by_side import in_background
from ci_pipeline.sql_text import literal, quoted

#: The table holding the attachment marker row (not one of the published tables).
MARKER_TABLE = "ci_pipeline_attachment"
#: Publishes of one table tried when another run keeps publishing it at the same time.
ATTEMPTS = 3
#: The table of the load database holding the rows to write.
LOAD_TABLE = "rows"
#: Page size of the load database (SQLite's largest).
LOAD_PAGE_BYTES = 65_536


@dataclass(frozen=True)
class _Seen:
    """What a table held when a publish read its state."""

    columns: list[str]
    fingerprints: pa.Table
    token: tuple
    #: The version of the rows the table holds (:mod:`ci_pipeline.table_delta`), when known.
    version: str | None
    #: The table's definition in the sink (None: no table yet).
    defined: str | None

    def laid_out_as(self, table: SinkTable) -> bool:
        """Whether the table has the layout :func:`_definition` gives it (a table laid out otherwise, by an
        earlier release, is written again whole)."""
        clustered = self.defined is not None and "WITHOUT ROWID" in self.defined.upper()
        return self.defined is None or clustered != _by_arrival(table)


@dataclass(frozen=True)
class _Staged:
    """The rows a publish loaded (new and changed) into the load database at ``path``, every row's fingerprint and
    the keys to delete."""

    path: Path
    fingerprints: pa.Table
    written: int
    stale: pa.Array
    rebuild: bool
    #: Staged from the table's delta, not by comparing every row.
    from_delta: bool = False


class SqliteSink(Sink):
    """Publishes each table in one transaction: compare the rows with what the table holds, write the new and
    changed ones by primary key, delete the rows whose key is gone, commit. A crash at any point leaves the table as
    it was before; a republish of unchanged data writes no row and leaves the sink file byte for byte the same (only
    its run marker in the state file moves).

    What a table holds is known by each row's key, content hash and size in bytes, kept as one Arrow blob per table
    in a state database beside the sink file (``<file>-state``, attached), so the published tables hold exactly the
    output tables' columns. The comparison reads that blob, never the rows; the bytes held are summed from it, never
    by scanning. Each commit that changes the sink stamps a new generation in both files (the sink's ``user_version``,
    the state's ``generation``); when they disagree (the state file lost, or a crash between the two files'
    commits), every table's state is computed again from its rows before comparing.

    The rows arrive in batches (:meth:`SinkTable.batches`); the new and changed ones are bulk-loaded from Arrow by
    the ADBC SQLite driver into a load database of their own (``<file>-load-*/``, removed after each table), then
    copied into the table with one ``INSERT ... SELECT`` in its transaction.

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
                "CREATE TABLE IF NOT EXISTS state.table_state (tbl TEXT PRIMARY KEY, columns TEXT, rows INTEGER, "
                "bytes INTEGER, generation INTEGER, published_at TEXT, hasher TEXT, fingerprints BLOB, version TEXT)"
            )
            held = {row[1] for row in self._con.execute("PRAGMA state.table_info(table_state)")}
            if "version" not in held:
                # A state file of an earlier release: its tables' versions are unknown, so compared row by row.
                self._con.execute("ALTER TABLE state.table_state ADD COLUMN version TEXT")
        except (OSError, sqlite3.Error) as exc:
            raise UserError(
                f"sink {self.path}: cannot open the SQLite database or its state file {self.state_path.name} "
                f"({exc}); check publish.sink.path"
            ) from exc

    def close(self) -> None:
        self._con.close()

    # -- attachment marker --------------------------------------------------------------------------------------
    def _marker(self) -> dict | None:
        self._con.execute(
            f"CREATE TABLE IF NOT EXISTS main.{MARKER_TABLE} (slot INTEGER PRIMARY KEY CHECK (slot = 1), "
            "environment_id TEXT, storage_account TEXT, region TEXT, attached_at TEXT)"
        )
        row = self._con.execute(
            f"SELECT environment_id, storage_account, region, attached_at FROM main.{MARKER_TABLE}"
        ).fetchone()
        keys = ("environment_id", "storage_account", "region", "attached_at")
        return dict(zip(keys, row, strict=True)) if row else None

    def claim(self, claim: AttachmentClaim) -> None:
        con = self._con
        con.execute("BEGIN IMMEDIATE")
        try:
            if check_marker(self._marker(), claim, f"sink {self.path}"):
                marker = claim.marker()
                con.execute(
                    f"INSERT INTO main.{MARKER_TABLE} (slot, environment_id, storage_account, region, attached_at) "
                    "VALUES (1, :environment_id, :storage_account, :region, :attached_at)",
                    marker,
                )
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise

    def release(self, environment_id: str) -> bool:
        con = self._con
        con.execute("BEGIN IMMEDIATE")
        try:
            marker = self._marker()
            mine = marker is not None and marker["environment_id"] == environment_id
            if mine:
                con.execute(f"DELETE FROM main.{MARKER_TABLE}")
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise
        return mine

    # -- writing ------------------------------------------------------------------------------------------------
    def publish(self, table: SinkTable) -> TableResult:
        started = time.monotonic()
        for _ in range(ATTEMPTS):
            seen = self._read_state(table.logical_name)
            staged = self._stage_delta(table, seen) or self._stage(table, seen)
            try:
                result = self._apply(table, seen, staged)
            finally:
                shutil.rmtree(staged.path.parent, ignore_errors=True)
            if result is not None:
                result.seconds = time.monotonic() - started
                return result
        raise UserError(
            f"sink {self.path}: {table.logical_name} changed {ATTEMPTS} times while this run published it (another "
            "run publishing into the same sink); run the publish again when the other run has finished"
        )

    def _read_state(self, name: str) -> _Seen:
        """What the table holds (its columns and fingerprints, the state brought in step first) and a token that
        changes with every publish of it."""
        con = self._con
        try:
            con.execute("BEGIN IMMEDIATE")
            self._resync()
            found = con.execute("SELECT version FROM state.table_state WHERE tbl = ?", (name,)).fetchone()
            layout = con.execute("SELECT sql FROM main.sqlite_master WHERE type = 'table' AND name = ?", (name,))
            defined = layout.fetchone()
            fingerprints, token = self._fingerprints(name), self._token(name)
            seen = _Seen(self._columns(name), fingerprints, token, found and found[0], defined and defined[0])
            con.execute("COMMIT")
        except sqlite3.Error as exc:
            if con.in_transaction:
                con.execute("ROLLBACK")
            raise UserError(f"sink {self.path}: reading the state of {name} failed ({exc}); check the file") from exc
        except BaseException:
            if con.in_transaction:
                con.execute("ROLLBACK")
            raise
        return seen

    def _columns(self, name: str) -> list[str]:
        return [row[1] for row in self._con.execute(f"PRAGMA main.table_info({quoted(name)})")]

    def _token(self, name: str) -> tuple:
        found = self._con.execute(
            "SELECT generation, published_at, hasher, rows FROM state.table_state WHERE tbl = ?", (name,)
        ).fetchone()
        return (found, tuple(self._columns(name)))

    def _stage(self, table: SinkTable, seen: _Seen) -> _Staged:
        """Read the table's batches once: fingerprint each, keep the rows that are new or changed against what the
        sink holds, and bulk-load them into a load database beside the sink (:meth:`_load`)."""
        rebuild = bool(seen.columns) and (seen.columns != table.columns or not seen.laid_out_as(table))
        merge = _Merge(FINGERPRINTS.empty_table() if rebuild else seen.fingerprints)
        prints: list[pa.Table] = []
        path, written = self._load(table, table.batches(), merge.changed, prints)
        fingerprints = pa.concat_tables(prints) if prints else FINGERPRINTS.empty_table()
        stale = _missing(seen.fingerprints, fingerprints) if rebuild else merge.stale()
        return _Staged(path, fingerprints, written, stale, rebuild)

    def _stage_delta(self, table: SinkTable, seen: _Seen) -> _Staged | None:
        """When the sink holds the version the table's delta starts from, load only the delta's new and changed
        rows (and nothing when it holds the table's version already); None when the delta cannot be used, so that
        every row is compared."""
        if table.version is None or seen.version is None or seen.columns != table.columns:
            return None
        if not seen.laid_out_as(table):
            return None
        if seen.version == table.version:
            batches, removed = iter(()), pa.array([], pa.string())
        elif table.delta is not None and table.delta.base == seen.version:
            batches, removed = table.delta.batches(), table.delta.removed
        else:
            return None
        held = _Held(seen.fingerprints)
        prints: list[pa.Table] = []
        path, written = self._load(table, batches, held.changed, prints)
        placed = pa.concat_tables(prints) if prints else FINGERPRINTS.empty_table()
        patched = held.patched(placed, removed)
        if patched is None or patched[0].num_rows != table.rows:
            # Not the table the delta promised (or keys the patch cannot order): compare every row instead.
            shutil.rmtree(path.parent, ignore_errors=True)
            return None
        return _Staged(path, patched[0], written, patched[1], rebuild=False, from_delta=True)

    def _load(
        self,
        table: SinkTable,
        batches: Iterator[pa.RecordBatch],
        changed: Callable[[pa.Table], np.ndarray],
        prints: list[pa.Table],
    ) -> tuple[Path, int]:
        """Fingerprint each of ``batches`` (into ``prints``), keep its rows at the positions ``changed`` gives, and
        bulk-load them (Arrow into SQLite, in C) into a load database beside the sink; its path and the rows
        written. Only that connection opens the load file while it is written: two SQLite libraries never share an
        open file.

        A thread of its own reads, converts and hashes the next batches while the driver writes the current one.
        The load table has the sink table's definition and gets the rows in key order, so that copying it into a
        new or emptied sink table is SQLite's page-level transfer, not a second insertion row by row."""
        failure: list[BaseException] = []
        written = 0

        def fingerprinted():
            hasher = duckdb.connect()
            try:
                for batch in batches:
                    # The load takes the columns by position.
                    if batch.schema.names != table.columns:
                        raise RuntimeError(f"{table.name}: a batch has the columns {batch.schema.names}")
                    yield batch, row_fingerprints(batch, table.primary_key, hasher)
            finally:
                hasher.close()

        def changed_rows():
            nonlocal written
            try:
                for batch, found in in_background(fingerprinted(), depth=1, name=f"sink-{table.name}"):
                    prints.append(found)
                    picked = changed(found)
                    written += len(picked)
                    if len(picked) == batch.num_rows:
                        yield batch
                    elif len(picked):
                        yield batch.take(pa.array(picked))
            except BaseException as exc:
                # The load driver sees only that the stream broke: the cause is raised again below.
                failure.append(exc)
                raise

        # A folder of its own per publish: steps of one run publish several tables of this sink at the same time.
        path = Path(tempfile.mkdtemp(prefix=f"{self.path.name}-load-", dir=self.path.parent)) / "rows.sqlite"
        try:
            with adbc_sqlite.connect(str(path), autocommit=True) as load, load.cursor() as cursor:
                # The largest pages: the load file is written once in key order and read once, whole, so fewer
                # pages are less work (a sixth less than SQLite's default 4 KB for the activities); the sink keeps
                # small pages, where a changed row rewrites its page.
                cursor.execute(f"PRAGMA page_size={LOAD_PAGE_BYTES}")
                cursor.execute("PRAGMA journal_mode=OFF")
                cursor.execute("PRAGMA synchronous=OFF")
                cursor.execute(f"CREATE TABLE {quoted(LOAD_TABLE)} {_definition(table)}")
                cursor.adbc_ingest(
                    LOAD_TABLE, pa.RecordBatchReader.from_batches(table.schema, changed_rows()), mode="append"
                )
        except BaseException as exc:
            shutil.rmtree(path.parent, ignore_errors=True)
            if failure:
                raise failure[0] from None
            if isinstance(exc, adbc_sqlite.Error):
                raise UserError(
                    f"sink {self.path}: loading the rows of {table.logical_name} into {path} failed "
                    f"({exc}); check the free space and permissions of its folder"
                ) from exc
            raise
        return path, written

    def _apply(self, table: SinkTable, seen: _Seen, staged: _Staged) -> TableResult | None:
        """In one transaction: write the staged rows, delete the stale keys, stamp the run marker and commit. None
        (nothing written) when another publish changed the table since its state was read."""
        con = self._con
        name, pk, columns = table.logical_name, table.primary_key, table.columns
        fingerprints, stale = staged.fingerprints, staged.stale
        if staged.written:
            con.execute("ATTACH DATABASE ? AS load", (str(staged.path),))
        try:
            con.execute("BEGIN IMMEDIATE")
            self._resync()
            if self._token(name) != seen.token:
                con.execute("ROLLBACK")
                return None
            if staged.rebuild:
                # The column set changed (e.g. a new unified attribute), or the table has an earlier release's
                # layout: rebuild it in this transaction; every row is written again, and the rows whose key is gone
                # count as deleted.
                con.execute(f"DROP TABLE main.{quoted(name)}")
            con.execute(f"CREATE TABLE IF NOT EXISTS main.{quoted(name)} {_definition(table)}")
            if staged.written:
                con.execute(_load_sql(name, pk, columns, fresh=staged.rebuild or seen.fingerprints.num_rows == 0))
            if len(stale) and not staged.rebuild:
                con.executemany(
                    f"DELETE FROM main.{quoted(name)} WHERE {quoted(pk)} = ?", ((k,) for k in stale.to_pylist())
                )
            held = int(pc.sum(fingerprints.column("bytes")).as_py() or 0)
            changed = staged.written > 0 or len(stale) > 0 or staged.rebuild or not seen.columns
            self._mark(name, columns, fingerprints, held, changed, table.version)
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
        finally:
            if staged.written:
                con.execute("DETACH DATABASE load")
        if self.hook:
            self.hook(table.name, "committed")
        rows = fingerprints.num_rows
        return TableResult(
            table=table.name,
            rows=rows,
            upserted=staged.written,
            deleted=len(stale),
            unchanged=rows - staged.written,
            bytes=held,
            from_delta=staged.from_delta,
        )

    def _fingerprints(self, name: str) -> pa.Table:
        """Key, content hash and byte size of every row table ``name`` holds, from the state database."""
        found = self._con.execute("SELECT fingerprints FROM state.table_state WHERE tbl = ?", (name,)).fetchone()
        if found is None or found[0] is None:
            return FINGERPRINTS.empty_table()
        return pa.ipc.open_stream(found[0]).read_all()

    def _resync(self) -> None:
        """Inside the open transaction: when the state is not in step with the sink (a different generation, or a
        table it has no record of), compute every table's state from its rows."""
        con = self._con
        generation = con.execute("PRAGMA main.user_version").fetchone()[0]
        marked = dict(con.execute("SELECT tbl, generation FROM state.table_state").fetchall())
        hashers = {h for (h,) in con.execute("SELECT DISTINCT hasher FROM state.table_state")}
        tables = self.tables()
        if set(marked) == set(tables) and max(marked.values(), default=0) == generation and hashers <= {HASHER}:
            return
        con.execute("DELETE FROM state.table_state")
        for name in tables:
            columns = [r[1] for r in con.execute(f"PRAGMA main.table_info({quoted(name)})")]
            frame = pd.DataFrame(con.execute(f"SELECT * FROM main.{quoted(name)}").fetchall(), columns=columns)
            frame = frame.astype("string")
            fingerprints = row_fingerprints(pa.Table.from_pandas(frame, preserve_index=False), columns[0])
            held = int(pc.sum(fingerprints.column("bytes")).as_py() or 0)
            con.execute(
                "INSERT INTO state.table_state (tbl, columns, rows, bytes, generation, hasher, fingerprints) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (name, json.dumps(columns), fingerprints.num_rows, held, generation, HASHER, _blob(fingerprints)),
            )

    def _mark(
        self, name: str, columns: list[str], fingerprints: pa.Table, held: int, changed: bool, version: str | None
    ) -> None:
        """The run marker: the table's row count, bytes, version and publish time in the state file. Only a publish
        that changed the sink (rows written or deleted, the table created or rebuilt) stamps a new generation in both
        files and stores the fingerprints again: an unchanged publish leaves the sink file byte for byte as it was
        (the generation is what tells a state out of step with the sink, so it needs to move only with the sink)."""
        con = self._con
        generation = con.execute("PRAGMA main.user_version").fetchone()[0]
        if changed:
            # _resync ran in this transaction, so the state's generations are at most the sink's.
            generation += 1
        now = dt.datetime.now(dt.UTC).isoformat()
        if changed or con.execute("SELECT 1 FROM state.table_state WHERE tbl = ?", (name,)).fetchone() is None:
            con.execute(
                "INSERT OR REPLACE INTO state.table_state "
                "(tbl, columns, rows, bytes, generation, published_at, hasher, fingerprints, version) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    name,
                    json.dumps(columns),
                    fingerprints.num_rows,
                    held,
                    generation,
                    now,
                    HASHER,
                    _blob(fingerprints),
                    version,
                ),
            )
        else:
            con.execute(
                "UPDATE state.table_state SET columns = ?, generation = ?, published_at = ?, version = ? WHERE tbl = ?",
                (json.dumps(columns), generation, now, version, name),
            )
        if changed:
            con.execute(f"PRAGMA main.user_version = {int(generation)}")

    # -- reading ------------------------------------------------------------------------------------------------
    def tables(self) -> list[str]:
        """Logical names of the tables in the database, sorted."""
        rows = self._con.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name != ? ORDER BY name", (MARKER_TABLE,)
        ).fetchall()
        return [r[0] for r in rows]

    def read(self, logical_name: str, where: dict[str, str] | None = None, limit: int | None = None) -> pd.DataFrame:
        """Rows of one table in primary-key order, optionally filtered by exact column values."""
        if logical_name not in self.tables():
            raise UserError(
                f"sink {self.path}: no table {logical_name!r}; it holds {', '.join(self.tables()) or 'no tables yet'}"
            )
        columns = [r[1] for r in self._con.execute(f"PRAGMA table_info({quoted(logical_name)})")]
        clauses, params = [], []
        for column, value in (where or {}).items():
            if column in columns:
                clauses.append(f"{quoted(column)} = ?")
                params.append(value)
        sql = f"SELECT * FROM {quoted(logical_name)}"
        if clauses:
            sql += " WHERE " + " AND ".join(clauses)
        sql += f" ORDER BY {quoted(columns[0])}"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        rows = self._con.execute(sql, params).fetchall()
        return pd.DataFrame(rows, columns=columns, dtype="string") if rows else pd.DataFrame(columns=columns)

    def dump(self) -> str:
        """The whole content as SQL text (schema and rows, in key order): equal dumps mean equal content, whatever
        order the rows were written in."""
        con = self._con
        lines = ["BEGIN TRANSACTION;"]
        tables = con.execute(
            "SELECT name, sql FROM main.sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name"
        ).fetchall()
        for name, sql in tables:
            lines.append(f"{sql};")
            columns = [r[1] for r in con.execute(f"PRAGMA main.table_info({quoted(name)})")]
            values = " || ',' || ".join(f"quote({quoted(c)})" for c in columns)
            rows = con.execute(
                f"SELECT 'INSERT INTO ' || {literal(quoted(name))} || ' VALUES(' || {values} || ');' "
                f"FROM main.{quoted(name)} ORDER BY {quoted(columns[0])}"
            )
            lines.extend(row[0] for row in rows)
        lines.append("COMMIT;")
        return "\n".join(lines)

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


#: The hash function of the stored fingerprints: another one (a new DuckDB) makes the next publish compute the state
#: again from the published rows rather than take every row for changed.
HASHER = f"duckdb {duckdb.__version__} hash"
#: What the state database keeps per row of a published table.
FINGERPRINTS = pa.schema([("key", pa.string()), ("hash", pa.int64()), ("bytes", pa.int64())])


def row_fingerprints(
    rows: pa.Table | pa.RecordBatch, key: str, con: duckdb.DuckDBPyConnection | None = None
) -> pa.Table:
    """Per row: its key, a 64-bit content hash of every column (NULL told apart from the empty string) and its
    size in bytes as SQLite counts it (the UTF-8 length of each non-NULL value); computed by DuckDB over the Arrow
    rows (vectorised, multi-threaded), in row order, on ``con`` when given."""
    own = con is None
    con = duckdb.connect() if own else con
    arrow = rows if isinstance(rows, pa.Table) else pa.Table.from_batches([rows])
    try:
        con.register("published", arrow)
        columns = [quoted(c) for c in arrow.column_names]
        sizes = " + ".join(f"coalesce(strlen({c}), 0)" for c in columns)
        found = con.sql(
            f"SELECT {quoted(key)}::VARCHAR AS key, hash({', '.join(columns)}) AS hash, ({sizes})::BIGINT AS bytes "
            "FROM published"
        ).to_arrow_table()
        con.unregister("published")
    finally:
        if own:
            con.close()
    # The comparison goes by position: DuckDB keeps the scan's row order (preserve_insertion_order), checked here.
    if not found.column("key").equals(arrow.column(key).cast(pa.string())):
        raise RuntimeError("row fingerprints came back in another row order than the rows")
    # DuckDB's hash is unsigned; the state keeps the same 64 bits as a signed integer.
    hashes = found.column("hash").to_numpy().view(np.int64)
    return pa.table(
        [found.column("key").cast(pa.string()), pa.array(hashes), found.column("bytes")], schema=FINGERPRINTS
    )


class _Merge:
    """Compares batches of new fingerprints, in increasing key order, with the held ones (sorted by key once): each
    batch is looked up in the window of held keys up to its last key, so the work is linear in both."""

    def __init__(self, held: pa.Table):
        _, self.keys, self.hashes = _sorted(held)
        self.at = 0
        self.last: str | None = None
        self.gone: list[pa.Array] = []

    def _after(self, key: str) -> int:
        """The position after the last held key not above ``key`` (binary search from the cursor)."""
        low, high = self.at, len(self.keys)
        while low < high:
            middle = (low + high) // 2
            if self.keys[middle].as_py() <= key:
                low = middle + 1
            else:
                high = middle
        return low

    def changed(self, new: pa.Table) -> np.ndarray:
        """Positions of the rows of ``new`` whose key is not held or whose hash differs."""
        keys = new.column("key").combine_chunks()
        if not len(keys):
            return np.arange(0)
        if self.last is not None and not keys[0].as_py() > self.last:
            raise RuntimeError("rows reached the sink out of key order")
        self.last = keys[-1].as_py()
        start, self.at = self.at, self._after(self.last)
        window = self.keys.slice(start, self.at - start)
        if not len(window):
            # Nothing held up to here (a first publish): every row is new, and no held key is gone.
            return np.arange(len(keys))
        position = _positions(window, keys)
        matched = np.zeros(len(window), dtype=bool)
        matched[position[position >= 0]] = True
        if not matched.all():
            self.gone.append(window.filter(pa.array(~matched)))
        return _differing(position, start, self.hashes, new)

    def stale(self) -> pa.Array:
        """The held keys no batch had."""
        rest = [*self.gone, self.keys.slice(self.at)]
        return pa.concat_arrays([a.cast(pa.string()) for a in rest])


class _Held:
    """The held fingerprints, sorted by key, for a delta: which of its rows differ from them, and the fingerprints
    once it is applied."""

    def __init__(self, held: pa.Table):
        self.held, self.keys, self.hashes = _sorted(held)
        #: The keys as fixed-width bytes, searched for every batch (None when they differ in length).
        self.fixed = fixed_width_bytes(self.keys)

    def _positions(self, keys: pa.Array) -> np.ndarray:
        """For each of ``keys`` its position among the held keys, or -1."""
        return _positions(self.keys, keys, self.fixed)

    def changed(self, new: pa.Table) -> np.ndarray:
        """Positions of the rows of ``new`` whose key is not held or whose hash differs."""
        return _differing(self._positions(new.column("key").combine_chunks()), 0, self.hashes, new)

    def patched(self, placed: pa.Table, removed: pa.Array) -> tuple[pa.Table, pa.Array] | None:
        """The fingerprints after the delta (the held ones but those of ``removed`` and of ``placed``'s keys, with
        ``placed``'s put in key order), and the held keys to delete (removed, not placed again); None when the
        placed keys do not increase."""
        keys = placed.column("key").combine_chunks()
        if not _increasing(keys):
            return None
        keep = np.ones(self.held.num_rows, dtype=bool)
        replaced = self._positions(keys)
        keep[replaced[replaced >= 0]] = False
        leaving = pc.filter(removed, pc.invert(pc.is_in(removed, value_set=keys))) if len(keys) else removed
        gone = self._positions(leaving.cast(pa.string()))
        keep[gone[gone >= 0]] = False
        stale = pc.take(self.keys, pa.array(np.unique(gone[gone >= 0])))
        if not len(keys) and keep.all():
            return self.held, stale
        # Where each placed key goes among all held keys; a held key it replaces is dropped, so it takes its place.
        given = fixed_width_bytes(keys) if self.fixed is not None else None
        if given is not None and given.dtype == self.fixed.dtype:
            at = np.searchsorted(self.fixed, given, side="left")
        else:
            at = np.searchsorted(_texts(self.keys), _texts(keys), side="left")
        # A held row moves down by the placed rows before it and up by the dropped rows before it; a placed row
        # comes after the kept held rows before its place and the placed rows before it.
        dropped_before = np.concatenate([[0], np.cumsum(~keep)])
        placed_up_to = np.cumsum(np.bincount(at, minlength=len(keep) + 1))
        held_rows = np.flatnonzero(keep)
        order = np.empty(len(held_rows) + len(keys), dtype=np.int64)
        order[held_rows - dropped_before[held_rows] + placed_up_to[held_rows]] = held_rows
        order[at - dropped_before[at] + np.arange(len(keys))] = len(keep) + np.arange(len(keys))
        both = pa.concat_tables([self.held, placed.select(FINGERPRINTS.names).cast(FINGERPRINTS)]).combine_chunks()
        return both.take(pa.array(order)), stale


def _texts(keys: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """Keys as Python strings, which compare by code point: the byte order of their UTF-8, as Arrow sorts them."""
    return np.array(keys.to_pylist(), dtype=object)


def _increasing(keys: pa.Array | pa.ChunkedArray) -> bool:
    """Whether each key is greater than the one before."""
    return len(keys) < 2 or pc.all(pc.greater(keys[1:], keys[:-1])).as_py()


def _sorted(held: pa.Table) -> tuple[pa.Table, pa.Array, np.ndarray]:
    """The held fingerprints in key order (:func:`_by_key`), their keys as one array and their hashes."""
    held = _by_key(held)
    keys = held.column("key").chunk(0) if held.num_rows else pa.array([], pa.string())
    return held, keys, held.column("hash").to_numpy()


def _differing(position: np.ndarray, offset: int, hashes: np.ndarray, new: pa.Table) -> np.ndarray:
    """Positions of the rows of ``new`` whose key is not held (``position`` -1) or whose hash differs from the held
    one at ``position + offset``."""
    found = position >= 0
    same = found & (hashes[np.where(found, position, 0) + offset] == new.column("hash").to_numpy())
    return np.flatnonzero(~same)


def _by_key(fingerprints: pa.Table) -> pa.Table:
    """Fingerprints in key order, in one chunk (a state computed again from a table's rows comes in their order)."""
    if not _increasing(fingerprints.column("key")):
        fingerprints = fingerprints.take(pc.array_sort_indices(fingerprints.column("key")))
    return fingerprints.combine_chunks()


def _positions(window: pa.Array, keys: pa.Array, held: np.ndarray | None = None) -> np.ndarray:
    """For each of ``keys`` its position in ``window``, or -1 (both sorted, unique). Keys of one width (the GUIDs of
    every published table) are compared as fixed-width bytes by a binary search in C, without building a hash table
    of either side; other keys are looked up by Arrow's hash join. ``held``: ``window`` as fixed-width bytes, when
    the caller has them already."""
    if not len(keys) or not len(window):
        return np.full(len(keys), -1, dtype=np.int64)
    held = fixed_width_bytes(window) if held is None else held
    given = fixed_width_bytes(keys) if held is not None else None
    if held is None or given is None or held.dtype != given.dtype:
        position = pc.index_in(keys, value_set=window)
        return pc.fill_null(position, -1).to_numpy(zero_copy_only=False).astype(np.int64)
    # Byte order is the order of Arrow's string comparison that sorted both sides.
    at = np.minimum(np.searchsorted(held, given), len(held) - 1)
    return np.where(held[at] == given, at, -1).astype(np.int64)


def _by_arrival(table: SinkTable) -> bool:
    """Whether the sink keeps ``table``'s rows in the order they arrive (:func:`_definition`)."""
    return table.name in outputs.OUTPUT_TABLES and outputs.contract(table.name).appended


def _definition(table: SinkTable) -> str:
    """The columns and key of a sink table (and of its load table): every column TEXT, the GUID as primary key.

    A table whose rows are mostly appended (UnifiedActivity) keeps them in the order they arrive, with an index of
    the keys: a run's new rows go to the table's end instead of to pages all over it, which a cold cache reads and
    writes back one by one (96,000 new activity rows into a table of 13 million: 6.4-6.6 s instead of 12.4-13.6 s
    with nothing cached), for a file about a sixth larger. The others, whose rows change in place from run to run,
    are clustered by their key: a changed row is found and rewritten in one page instead of an index page and a
    table page (a third of Enrichment's 4 million rows change with an append)."""
    columns = ", ".join(f"{quoted(c)} TEXT" + (" PRIMARY KEY" if c == table.primary_key else "") for c in table.columns)
    return f"({columns})" + ("" if _by_arrival(table) else " WITHOUT ROWID")


def _load_sql(name: str, pk: str, columns: list[str], fresh: bool) -> str:
    """Copy the loaded rows into the table: into an empty one as they are (``INSERT INTO ... SELECT *`` between
    tables of one definition is SQLite's transfer optimisation: whole records in key order, no row decoded),
    else inserted or replacing the row with their key."""
    if fresh:
        return f"INSERT INTO main.{quoted(name)} SELECT * FROM load.{quoted(LOAD_TABLE)}"
    cols = ", ".join(quoted(c) for c in columns)
    sql = f"INSERT INTO main.{quoted(name)} ({cols}) SELECT {cols} FROM load.{quoted(LOAD_TABLE)}"
    updates = ", ".join(f"{quoted(c)} = excluded.{quoted(c)}" for c in columns if c != pk)
    # "WHERE true" tells SQLite's parser that ON CONFLICT belongs to the INSERT, not to a join of the SELECT.
    return f"{sql} WHERE true ON CONFLICT({quoted(pk)}) " + (f"DO UPDATE SET {updates}" if updates else "DO NOTHING")


def _missing(old: pa.Table, new: pa.Table) -> pa.Array:
    """Keys of ``old`` rows that ``new`` does not have."""
    gone = pc.invert(pc.is_in(old.column("key"), value_set=new.column("key")))
    return pc.filter(old.column("key"), gone).combine_chunks()


def _blob(fingerprints: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, fingerprints.schema, options=pa.ipc.IpcWriteOptions(compression="zstd")) as writer:
        writer.write_table(fingerprints)
    return sink.getvalue().to_pybytes()
