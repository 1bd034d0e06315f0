"""Read-only SQL over the lake with DuckDB: one view per exported table, built from model.json or the manifest
(the logical data warehouse pattern), and one view per table of the lake's assets in the schema ``lake``. Azure
storage is read through the lake's fsspec filesystem, so no DuckDB extension is downloaded.

Read-only is enforced twice: only a single SELECT statement runs (no COPY, ATTACH, INSTALL, LOAD, SET, CREATE, ...),
and DuckDB itself may open only the files the views read (``allowed_paths``, external access off, configuration
locked), so no query can read another file or write one.
"""

from __future__ import annotations

import logging
import posixpath

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
        raise UserError(f"sql: {str(exc).splitlines()[0]}; the views are {', '.join(_views(con))}{hint}") from None
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
