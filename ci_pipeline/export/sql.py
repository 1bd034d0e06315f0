"""Read-only SQL over the lake with DuckDB: one view per exported table, built from model.json or the manifest
(the logical data warehouse pattern), and one view per table of the lake's assets in the schema ``lake``. Azure
storage is read through the lake's fsspec filesystem, so no DuckDB extension is downloaded.

Read-only is enforced twice: only a single SELECT statement runs (no COPY, ATTACH, INSTALL, LOAD, SET, CREATE, ...),
and DuckDB itself may open only the files the views read (``allowed_paths``, external access off, configuration
locked), so no query can read another file or write one.
"""

from __future__ import annotations

import difflib
import json
import logging
import posixpath
import re

import duckdb
import pandas as pd

from ci_pipeline.errors import UserError
from ci_pipeline.export.cdm import NoExport, read_export
from ci_pipeline.lake import Lake
from ci_pipeline.sql_text import literal, quoted

#: The schema holding one view per asset table of the lake (``<lake>/ci_pipeline/<key parts>.parquet``).
LAKE_SCHEMA = "lake"
#: Where the IO manager keeps asset tables in the lake.
ASSET_FOLDER = "ci_pipeline"

log = logging.getLogger(__name__)

#: Lines of a DuckDB error that name what was probably meant ("Candidate bindings: ...", "Did you mean ...?").
HINT_LINES = ("Candidate bindings:", "Did you mean")
#: At most this many columns of a table are named after an unknown column.
COLUMNS_SHOWN = 40

#: CDM data type -> DuckDB column type.
DUCKDB_TYPES = {
    "string": "VARCHAR",
    "guid": "VARCHAR",
    "json": "VARCHAR",
    "int64": "BIGINT",
    "double": "DOUBLE",
    "decimal": "DECIMAL(38, 10)",
    "boolean": "BOOLEAN",
    "date": "DATE",
    "dateTime": "TIMESTAMPTZ",
    "dateTimeOffset": "TIMESTAMPTZ",
    "time": "TIME",
}


def connect(
    lake: Lake,
    exports: list[str],
    folder: str | dict[str, str] = "exports",
    default: str | None = None,
    lake_tables: bool = True,
    unwritten: list[str] | None = None,
):
    """A locked-down DuckDB connection: a schema per export holding one view per table, and the schema ``lake``.

    Args:
        lake: the data lake.
        exports: export names.
        folder: lake folder of the exports (or one per export name).
        default: the export whose views are also created unqualified (default: the only export, if one).
        lake_tables: also create ``lake.<key parts joined by __>`` for every asset table in the lake
            (``lake.unify__customer_profile`` for ``<lake>/ci_pipeline/unify/customer_profile.parquet``).
        unwritten: when given, an export not written yet (a run that failed before publishing it) gets no views
            and its name is appended here, so the lake's tables stay readable; else it is an error.

    Raises:
        UserError: an export is named like the ``lake`` schema.
    """
    if lake_tables and LAKE_SCHEMA in exports:
        raise UserError(
            f"publish.exports: an export named {LAKE_SCHEMA!r} would hide the schema of the lake's tables in SQL; "
            "rename the export"
        )
    con = duckdb.connect(config={"autoinstall_known_extensions": False, "autoload_known_extensions": False})
    con.execute("SET TimeZone = 'UTC'")
    if lake.protocol != "file":
        con.register_filesystem(lake.fs)
    if default is None and len(exports) == 1:
        default = exports[0]
    readable: list[str] = []
    for export in exports:
        con.execute(f"CREATE SCHEMA IF NOT EXISTS {quoted(export)}")
        where = folder.get(export, "exports") if isinstance(folder, dict) else folder
        try:
            entities = read_export(lake, export, where)
        except NoExport:
            if unwritten is None:
                raise
            unwritten.append(export)
            continue
        for entity in entities:
            paths = [_location(lake, f) for f in entity.files]
            readable += paths
            listed = "[" + ", ".join(literal(p) for p in paths) + "]"
            if entity.format == "parquet":
                source = f"read_parquet({listed})"
            else:
                columns = ", ".join(
                    f"{literal(n)}: {literal(DUCKDB_TYPES.get(t, 'VARCHAR'))}" for n, t in entity.attributes
                )
                source = (
                    f"read_csv({listed}, header = false, delim = ',', quote = '\"', escape = '\"', "
                    f"columns = {{{columns}}}, auto_detect = false)"
                )
            targets = [f"{quoted(export)}.{quoted(entity.name)}"]
            if export == default:
                targets.append(quoted(entity.name))
            for target in targets:
                con.execute(f"CREATE OR REPLACE VIEW {target} AS SELECT * FROM {source}")
    if lake_tables:
        readable += _lake_views(con, lake)
    _lock(con, readable)
    return con


def _lake_views(con, lake: Lake) -> list[str]:
    """One view per asset table in the lake, in the schema ``lake``; returns the files they read."""
    con.execute(f"CREATE SCHEMA IF NOT EXISTS {LAKE_SCHEMA}")
    files = []
    for relative in lake.find(ASSET_FOLDER):
        # Hidden files are writes in progress (see Lake.write_bytes); only finished tables become views, and a
        # stage's bookkeeping for its next run (``_state``) is no table.
        if not relative.endswith(".parquet") or posixpath.basename(relative).startswith("."):
            continue
        if relative.startswith(f"{ASSET_FOLDER}/_state/"):
            continue
        name = relative[len(ASSET_FOLDER) + 1 : -len(".parquet")].replace("/", "__")
        location = _location(lake, relative)
        try:
            con.execute(f"CREATE VIEW {LAKE_SCHEMA}.{quoted(name)} AS SELECT * FROM read_parquet({literal(location)})")
        except duckdb.Error as exc:  # one damaged table must not keep the others from being queried
            log.warning("sql: %s is left out: %s", lake.url(relative), str(exc).splitlines()[0])
            continue
        files.append(location)
    return files


def _lock(con, readable: list[str]) -> None:
    """From here on DuckDB opens only ``readable`` files, loads no extension and its settings cannot change."""
    con.execute(f"SET allowed_paths = [{', '.join(literal(p) for p in sorted(set(readable)))}]")
    con.execute("SET enable_external_access = false")
    con.execute("SET lock_configuration = true")


def _location(lake: Lake, relative: str) -> str:
    if lake.protocol == "file":
        return lake.path(relative)
    protocol = lake.fs.protocol[0] if isinstance(lake.fs.protocol, tuple | list) else lake.fs.protocol
    return f"{protocol}://{lake.path(relative)}"


def query(
    lake: Lake, sql: str, exports: list[str], folder: str | dict[str, str] = "exports", default: str | None = None
) -> pd.DataFrame:
    """Run one read-only SQL query (a single SELECT) over the exports and the lake's tables and return the result.

    Examples:
        >>> query(lake, "SELECT count(*) AS n FROM CustomerProfile", ["warehouse"])  # doctest: +SKIP
        >>> query(lake, "SELECT count(*) AS n FROM lake.unify__customer_profile", [])  # doctest: +SKIP

    Raises:
        UserError: the query is not one SELECT, fails, or reads a file that is not a table of the lake.
    """
    unwritten: list[str] = []
    con = connect(lake, exports, folder, default, unwritten=unwritten)
    try:
        _check_select(con, sql)
        cursor = con.execute(sql)
        wide = [i for i, column in enumerate(cursor.description) if str(column[1]) in {"HUGEINT", "UHUGEINT"}]
        frame = cursor.fetchdf()
        # DuckDB sums integers as 128-bit integers, which pandas receives as floats: give whole numbers back.
        for i in wide:
            if frame.iloc[:, i].abs().max() < 2**63:
                frame.isetitem(i, frame.iloc[:, i].astype("Int64"))
        return frame
    except duckdb.PermissionException as exc:
        raise UserError(
            f"sql: {str(exc).splitlines()[0]}: only the lake's tables can be read, through the views "
            f"{', '.join(_views(con))}"
        ) from None
    except duckdb.Error as exc:
        hint = (
            ""
            if exports
            else (
                "; tables such as CustomerProfile are views of an export, and no export is configured "
                "(publish.exports): query the lake's tables as lake.<stage>__<table>"
            )
        )
        if unwritten:
            hint += (
                f"; export(s) {', '.join(unwritten)} not written yet (the last run did not publish them): run the "
                "pipeline, or query the lake's tables as lake.<stage>__<table>"
            )
        raise UserError(f"sql: {_failure(con, sql, exc)}{hint}") from None
    finally:
        con.close()


def _check_select(con, sql: str) -> None:
    """Refuse anything but one SELECT (``WITH``, ``FROM``, ``DESCRIBE``, ``SHOW`` and ``SUMMARIZE`` are SELECTs)."""
    statements = con.extract_statements(sql)
    if len(statements) != 1:
        raise UserError(f"sql: give one query at a time (this holds {len(statements)} statements)")
    kind = statements[0].type
    if kind != duckdb.StatementType.SELECT:
        raise UserError(
            f"sql: only SELECT queries run: the lake is read-only here (this is a {kind.name} statement); "
            "write results elsewhere with --format csv or json and a shell redirect"
        )


def _views(con) -> list[str]:
    rows = con.execute("SELECT schema_name, view_name FROM duckdb_views() WHERE NOT internal ORDER BY 1, 2").fetchall()
    return [name if schema == "main" else f"{schema}.{name}" for schema, name in rows]


def _failure(con, sql: str, exc: duckdb.Error) -> str:
    """DuckDB's error, short: its first line and its own hint of what was meant; for an unknown column the columns
    of the views the query reads; for an unknown table the views, unless DuckDB names a view close to it."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    first = lines[0] if lines else type(exc).__name__
    hints = [line for line in lines[1:] if line.startswith(HINT_LINES)]
    missing = re.match(r"Catalog Error: Table with name (\S+) does not exist", first)
    if missing:
        views = _views(con)
        wanted = missing.group(1).strip('"').lower()
        for meant in (m for h in hints for m in re.findall(r'"([^"]+)"', h)):
            # DuckDB names a view of the lake schema without its schema.
            view = meant if meant in views else f"{LAKE_SCHEMA}.{meant}"
            if view in views and difflib.get_close_matches(wanted, [meant.lower()], cutoff=0.6):
                return f"{first} Did you mean {view}?"
        # DuckDB suggests a system table, or a view nothing like the name: the views are the better hint.
        return f"{first}; the views are {', '.join(views)}"
    message = " ".join([first, *hints])
    if isinstance(exc, duckdb.BinderException) and "column" in first:
        held = [f"{name} has the columns {columns}" for name, columns in _columns_read(con, sql)]
        message += "".join(f"; {h}" for h in held)
    return message


def _columns_read(con, sql: str) -> list[tuple[str, str]]:
    """(view, its columns listed) for each view the query reads, from DuckDB's parse of it: no file is read."""
    try:
        tree = json.loads(con.execute("SELECT json_serialize_sql(?)", [sql]).fetchone()[0])
    except (duckdb.Error, TypeError, ValueError):
        return []
    named: list[tuple[str, str]] = []
    pending = [tree]
    while pending:
        node = pending.pop()
        if isinstance(node, list):
            pending.extend(reversed(node))
        elif isinstance(node, dict):
            if node.get("type") == "BASE_TABLE":
                pair = ((node.get("schema_name") or "main").lower(), str(node.get("table_name", "")).lower())
                if pair not in named:
                    named.append(pair)
            pending.extend(reversed(list(node.values())))
    found = []
    for schema, table in named:
        rows = con.execute(
            "SELECT schema_name, table_name, column_name FROM duckdb_columns() WHERE NOT internal "
            "AND lower(schema_name) = ? AND lower(table_name) = ? ORDER BY column_index",
            [schema, table],
        ).fetchall()
        if not rows:
            continue
        names = [r[2] for r in rows]
        shown = ", ".join(names[:COLUMNS_SHOWN]) + (
            f" (and {len(names) - COLUMNS_SHOWN} more)" if len(names) > COLUMNS_SHOWN else ""
        )
        view = rows[0][1] if rows[0][0] == "main" else f"{rows[0][0]}.{rows[0][1]}"
        found.append((view, shown))
    return found
