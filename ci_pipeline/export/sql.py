"""SQL over the lake exports with DuckDB: one view per exported table, built from model.json or the manifest
(the logical data warehouse pattern). Azure storage is read through the lake's fsspec filesystem, so no DuckDB
extension is downloaded."""

from __future__ import annotations

import duckdb
import pandas as pd

from ci_pipeline.errors import UserError
from ci_pipeline.export.cdm import read_export
from ci_pipeline.lake import Lake

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


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _lit(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def connect(lake: Lake, exports: list[str], folder: str | dict[str, str] = "exports", default: str | None = None):
    """A DuckDB connection with a schema per export holding one view per table.

    Args:
        lake: the data lake.
        exports: export names.
        folder: lake folder of the exports (or one per export name).
        default: the export whose views are also created unqualified (default: the only export, if one).
    """
    con = duckdb.connect(config={"autoinstall_known_extensions": False, "autoload_known_extensions": False})
    con.execute("SET TimeZone = 'UTC'")
    if lake.protocol != "file":
        con.register_filesystem(lake.fs)
    if default is None and len(exports) == 1:
        default = exports[0]
    for export in exports:
        con.execute(f"CREATE SCHEMA IF NOT EXISTS {_ident(export)}")
        where = folder.get(export, "exports") if isinstance(folder, dict) else folder
        for entity in read_export(lake, export, where):
            paths = [_location(lake, f) for f in entity.files]
            listed = "[" + ", ".join(_lit(p) for p in paths) + "]"
            if entity.format == "parquet":
                source = f"read_parquet({listed})"
            else:
                columns = ", ".join(f"{_lit(n)}: {_lit(DUCKDB_TYPES.get(t, 'VARCHAR'))}" for n, t in entity.attributes)
                source = (
                    f"read_csv({listed}, header = false, delim = ',', quote = '\"', escape = '\"', "
                    f"columns = {{{columns}}}, auto_detect = false)"
                )
            targets = [f"{_ident(export)}.{_ident(entity.name)}"]
            if export == default:
                targets.append(_ident(entity.name))
            for target in targets:
                con.execute(f"CREATE OR REPLACE VIEW {target} AS SELECT * FROM {source}")
    return con


def _location(lake: Lake, relative: str) -> str:
    if lake.protocol == "file":
        return lake.path(relative)
    protocol = lake.fs.protocol[0] if isinstance(lake.fs.protocol, tuple | list) else lake.fs.protocol
    return f"{protocol}://{lake.path(relative)}"


def query(
    lake: Lake, sql: str, exports: list[str], folder: str | dict[str, str] = "exports", default: str | None = None
) -> pd.DataFrame:
    """Run one SQL query over the exports and return the result.

    Examples:
        >>> query(lake, "SELECT count(*) AS n FROM CustomerProfile", ["warehouse"])  # doctest: +SKIP
    """
    con = connect(lake, exports, folder, default)
    try:
        return con.execute(sql).fetchdf()
    except duckdb.Error as exc:
        raise UserError(f"sql: {str(exc).splitlines()[0]}; the views are {', '.join(_views(con))}") from None
    finally:
        con.close()


def _views(con) -> list[str]:
    rows = con.execute("SELECT schema_name, view_name FROM duckdb_views() WHERE NOT internal ORDER BY 1, 2").fetchall()
    return [name if schema == "main" else f"{schema}.{name}" for schema, name in rows]
