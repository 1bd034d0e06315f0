"""One bad cell costs one row: out-of-range integers, impossible dates, non-finite numbers, padded or null-marker
keys and bare-CR files each quarantine (or read) only what they must, and rows read = accepted + quarantined."""

from __future__ import annotations

from datetime import date

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from deltalake import write_deltalake

from ci_pipeline.config.model import ConfigError
from ci_pipeline.config.sources import CsvOptions
from ci_pipeline.errors import UserError
from ci_pipeline.ingest.csvfile import header_names
from ci_pipeline.ingest.preflight import source_problems
from ci_pipeline.lake import Lake
from ci_pipeline_tests.ingest.conftest import write_config


def csv_table(path="t.csv", **extra):
    return {"t": {"format": "csv", "path": path, "primary_key": "id", **extra}}


def balanced(result) -> None:
    assert result.rows_read == result.rows_accepted + result.rows_quarantined
    assert result.balanced


def reasons(result) -> dict[str, str]:
    """Key -> reason of the quarantined rows."""
    return dict(zip(result.quarantine["key"], result.quarantine["reason"], strict=True))


BAD_INTEGERS = {
    "b1": "99999999999999999999",
    "b2": "1e19",
    "b3": "inf",
    "b4": "five",
    "b5": "4.5",
    "b6": "9223372036854775808",
    "b7": "18446744073709551615",
    "b8": "-9223372036854775809",
    "b9": "NaN",
}
GOOD_INTEGERS = {
    "g1": ("9223372036854775807", 9223372036854775807),
    "g2": ("-9223372036854775807", -9223372036854775807),
    "g3": ("-9223372036854775808", -9223372036854775808),
    "g4": ("007", 7),
    "g5": ("+5", 5),
    "g6": (" 12 ", 12),
    "g7": ("9007199254740993", 9007199254740993),
    "g8": ("2.0", 2),
    "g9": ("1e3", 1000),
}


def test_integers_that_int64_cannot_hold_quarantine_only_their_row(tmp_path, ingest):
    rows = [f"{k},{v}" for k, v in BAD_INTEGERS.items()] + [f'{k},"{v}"' for k, (v, _) in GOOD_INTEGERS.items()]
    (tmp_path / "t.csv").write_text("id,n\n" + "\n".join(rows) + "\n")
    result = ingest(csv_table(columns={"n": "int64"}))
    assert dict(zip(result.data["id"], result.data["n"], strict=True)) == {k: v for k, (_, v) in GOOD_INTEGERS.items()}
    assert result.data["n"].dtype == "Int64"
    why = reasons(result)
    assert set(why) == set(BAD_INTEGERS)
    assert set(result.quarantine["kind"]) == {"malformed_value"}
    for key, value in BAD_INTEGERS.items():
        assert why[key].startswith(f"malformed value in column 'n': '{value}' is not a valid int64"), why[key]
    assert "outside the int64 range -9223372036854775808..9223372036854775807" in why["b6"]
    assert "outside the int64 range" in why["b1"] and "outside the int64 range" in why["b2"]
    assert "not a finite number" in why["b3"] and "not a whole number" in why["b5"]
    assert why["b4"] == "malformed value in column 'n': 'five' is not a valid int64"
    balanced(result)


def test_parquet_numbers_get_the_same_checks_as_text(tmp_path, ingest):
    table = pa.table(
        {
            "id": ["a", "b", "c", "d", "e", "f", "g"],
            # declared int64 but stored as float
            "n": pa.array([1.0, 1e19, float("inf"), 4.5, None, 2.0**62, float("nan")]),
            "u": pa.array([1, 2, 3, 4, 2**64 - 1, 5, 6], type=pa.uint64()),
            # undeclared floats: the source's type is checked like a declared double
            "amount": pa.array([1.5, 2.5, 3.5, 4.5, 5.5, float("-inf"), None]),
        }
    )
    pq.write_table(table, tmp_path / "t.parquet")
    result = ingest({"t": {"format": "parquet", "path": "t.parquet", "primary_key": "id", "columns": {"n": "int64"}}})
    assert result.data["id"].tolist() == ["a"]
    why = reasons(result)
    assert set(why) == {"b", "c", "d", "e", "f", "g"}
    assert "column 'n'" in why["b"] and "outside the int64 range" in why["b"]
    assert "column 'n'" in why["c"] and "not a finite number" in why["c"]
    assert "column 'n'" in why["d"] and "not a whole number" in why["d"]
    assert "column 'u'" in why["e"] and "18446744073709551615" in why["e"]
    assert "column 'amount'" in why["f"] and "not a valid double" in why["f"]
    assert "column 'n'" in why["g"]  # NaN is not a missing value, and not an integer
    assert result.data["n"].tolist() == [1]
    assert result.data["u"].dtype == "Int64" and result.data["amount"].dtype == "float64"
    balanced(result)


def test_parquet_null_is_missing_but_nan_is_malformed_unless_allowed(tmp_path, ingest):
    table = pa.table({"id": ["a", "b", "c"], "x": pa.array([1.0, None, float("nan")])})
    pq.write_table(table, tmp_path / "t.parquet")
    strict = ingest({"t": {"format": "parquet", "path": "t.parquet", "primary_key": "id"}})
    assert strict.data["id"].tolist() == ["a", "b"] and pd.isna(strict.data["x"].iloc[1])
    assert "column 'x': 'nan' is not a valid double" in reasons(strict)["c"]
    balanced(strict)
    lenient = ingest(
        {
            "t": {
                "format": "parquet",
                "path": "t.parquet",
                "primary_key": "id",
                "columns": {"x": {"type": "double", "allow_nan": True}},
            }
        }
    )
    assert lenient.data["id"].tolist() == ["a", "b", "c"] and lenient.rows_quarantined == 0
    assert lenient.data["x"].isna().tolist() == [False, True, True]
    balanced(lenient)


def test_delta_table_with_non_finite_amounts(tmp_path, ingest):
    frame = pd.DataFrame({"id": ["a", "b", "c"], "amount": [1.0, np.inf, 3.0]})
    write_deltalake(str(tmp_path / "d"), frame)
    result = ingest({"t": {"format": "delta", "path": "d", "primary_key": "id"}})
    assert result.data["id"].tolist() == ["a", "c"]
    assert "column 'amount': 'inf' is not a valid double (not a finite number)" in reasons(result)["b"]
    balanced(result)


def test_non_finite_text_in_double_columns(tmp_path, ingest):
    values = {"a": "NaN", "b": "nan", "c": "inf", "d": "-inf", "e": "Infinity", "f": "1e309", "g": "-1e309"}
    good = {"h": ("1e308", 1e308), "i": ("-2.5", -2.5), "j": ("", None)}
    rows = [f"{k},{v},{v}" for k, v in values.items()] + [f"{k},{v},{v}" for k, (v, _) in good.items()]
    (tmp_path / "t.csv").write_text("id,x,y\n" + "\n".join(rows) + "\n")
    result = ingest(csv_table(columns={"x": "double", "y": "decimal"}))
    assert result.data["id"].tolist() == ["h", "i", "j"]
    assert result.data["x"].tolist()[:2] == [1e308, -2.5] and pd.isna(result.data["x"].iloc[2])
    why = reasons(result)
    assert set(why) == set(values)
    for key, value in values.items():
        assert f"column 'x': '{value}' is not a valid double" in why[key]
        assert f"column 'y': '{value}' is not a valid decimal" in why[key]
    assert "set allow_nan: true" in why["a"]
    assert "not a finite number" in why["c"] and "not a finite number" in why["f"]
    balanced(result)

    allowed = ingest(csv_table(columns={"x": {"type": "double", "allow_nan": True}}))
    assert set(reasons(allowed)) == {"c", "d", "e", "f", "g"}
    assert allowed.data.set_index("id").loc[["a", "b"], "x"].isna().all()
    balanced(allowed)


def test_a_number_written_with_a_decimal_comma_is_told_the_setting_that_reads_it(tmp_path, ingest):
    (tmp_path / "t.csv").write_text('id,amount\na,"12,50"\nb,"1.234,5"\nc,7.25\nd,"1,2,3"\n')
    result = ingest(csv_table(columns={"amount": "double"}))
    why = reasons(result)
    hint = " (written with a decimal comma? for a CSV file set csv.decimal: ',' on the table)"
    assert why["a"] == "malformed value in column 'amount': '12,50' is not a valid double" + hint
    assert why["b"].endswith("'1.234,5' is not a valid double" + hint)
    assert why["d"] == "malformed value in column 'amount': '1,2,3' is not a valid double"
    balanced(result)
    # With the setting, they are numbers.
    read = ingest(csv_table(columns={"amount": "double"}, csv={"decimal": ","}))
    assert read.data.set_index("id").loc[["a", "b"], "amount"].tolist() == [12.5, 1234.5]


def test_an_amount_written_with_a_currency_symbol_is_told_to_lose_the_symbol(tmp_path, ingest):
    (tmp_path / "t.csv").write_text('id,amount\na,€ 19.99\nb,$12.50\nc,"12,50 €"\nd,£3\ne,7.25\n', encoding="utf-8")
    why = reasons(ingest(csv_table(columns={"amount": "double"})))
    fix = (
        "no setting reads it; remove it from the column at the source, or declare the column as text (string) and "
        "keep the currency in a column of its own"
    )
    assert why["a"] == (
        f"malformed value in column 'amount': '€ 19.99' is not a valid double (written with the currency symbol "
        f"'€': {fix})"
    )
    assert why["b"].endswith(f"(written with the currency symbol '$': {fix})")
    # Without the symbol the number still has a mark the table does not read: that is told too.
    assert why["c"].endswith(
        f"(written with the currency symbol '€': {fix}; the number itself: written with a decimal comma? for a CSV "
        "file set csv.decimal: ',' on the table)"
    )
    assert "'£'" in why["d"] and "e" not in why


def test_numbers_with_thousands_commas_are_told_csv_thousands_which_reads_them(tmp_path, ingest):
    """'1,234.56' and '1,234' in an int64 column are US thousands, not decimal commas; '1,234' in a double column
    may be either, and the hint says both. A table already reading decimal commas is not told to set them again."""
    (tmp_path / "t.csv").write_text('id,qty,price\na,"1,234","1,234.56"\nb,"2,000","1,234"\nc,"1,23",7\nd,5,12.5\n')
    why = reasons(ingest(csv_table(columns={"qty": "int64", "price": "double"})))
    thousands = "(written with commas between thousands? for a CSV file set csv.thousands: ',' on the table)"
    assert why["a"] == (
        f"malformed value in column 'qty': '1,234' is not a valid int64 {thousands}; "
        f"malformed value in column 'price': '1,234.56' is not a valid double {thousands}"
    )
    assert (
        "'1,234' is not a valid double (written with commas between thousands, or with a decimal comma? for a "
        "CSV file set csv.thousands: ',' or csv.decimal: ','" in why["b"]
    )
    assert why["c"] == "malformed value in column 'qty': '1,23' is not a valid int64"
    european = reasons(ingest(csv_table(columns={"qty": "int64", "price": "double"}, csv={"decimal": ","})))
    assert "csv.decimal: ','" not in "".join(european.values())
    assert "set csv.thousands: ',' and csv.decimal: '.' on the table" in european["a"]
    read = ingest(csv_table(columns={"qty": "int64", "price": "double"}, csv={"thousands": ","}))
    assert read.data.set_index("id").loc[["a", "b"]].to_dict("list") == {"qty": [1234, 2000], "price": [1234.56, 1234]}
    assert reasons(read) == {"c": "malformed value in column 'qty': '1,23' is not a valid int64"}
    with pytest.raises(ConfigError, match="thousands and decimal are both ','"):
        ingest(csv_table(csv={"thousands": ",", "decimal": ","}))


def test_dates_outside_the_accepted_range_are_malformed(tmp_path, ingest):
    (tmp_path / "t.csv").write_text(
        "id,born,seen\n"
        "a,12/31/9999,2020-01-01T00:00:00\n"
        "b,01/01/0001,2020-01-01T00:00:00\n"
        "c,49950209,2020-01-01T00:00:00\n"
        "d,12/07/7015,2020-01-01T00:00:00\n"
        "e,01/02/1850,2020-01-01T00:00:00\n"
        "f,01/02/2000,9999-12-31T23:59:59\n"
        "g,01/02/2000,2199-12-31T23:59:59\n"
        "h,01/01/1900,1900-01-01T00:00:00\n"
        "i,13/45/2000,2020-01-01T00:00:00\n"
    )
    columns = {"born": {"type": "date", "format": "%m/%d/%Y"}, "seen": "datetime"}
    result = ingest(csv_table(columns=columns, date_formats=["%Y%m%d", "%Y-%m-%dT%H:%M:%S"]))
    assert result.data["id"].tolist() == ["g", "h"]
    assert result.data["seen"].iloc[0] == pd.Timestamp("2199-12-31T23:59:59", tz="UTC")
    why = reasons(result)
    assert set(why) == {"a", "b", "c", "d", "e", "f", "i"}
    assert why["a"] == (
        "malformed value in column 'born': '12/31/9999' is not a valid date (outside the accepted dates "
        "1900-01-01..2199-12-31; see date_range)"
    )
    for key in "bcde":
        assert "outside the accepted dates" in why[key] and "column 'born'" in why[key]
    assert "column 'seen': '9999-12-31T23:59:59' is not a valid datetime (outside" in why["f"]
    assert why["i"] == "malformed value in column 'born': '13/45/2000' is not a valid date"
    balanced(result)

    # A column may widen (within what the platform holds) or narrow the range.
    columns["born"]["date_range"] = {"min": "1800-01-01", "max": "2100-12-31"}
    wider = ingest(csv_table(columns=columns, date_formats=["%Y%m%d", "%Y-%m-%dT%H:%M:%S"]))
    assert wider.data["id"].tolist() == ["e", "g", "h"]
    assert wider.data.set_index("id").loc["e", "born"] == pd.Timestamp("1850-01-02")
    balanced(wider)


def test_iso_timestamps_with_a_zone_or_fractions_are_read_by_default_and_a_date_keeps_its_day(tmp_path, ingest):
    (tmp_path / "t.csv").write_text(
        "id,at,on\n"
        "a,2026-06-01T10:00:00+02:00,2026-06-01T00:30:00+02:00\n"
        "b,2026-01-10T12:00:00Z,2026-01-10\n"
        "c,2025-12-01 08:00:00 -0500,2025-12-01 23:30:00 -0500\n"
        "d,2026-05-15 09:30:00,2026-05-15T09:30:00.250Z\n"
        "e,2026-06-01T10:00:00.125Z,2026-06-01T10:00\n"
        "f,2026-06-01 tea time,2026-06-01\n"
    )
    result = ingest(csv_table(columns={"at": "datetime", "on": "date"}))
    got = result.data.set_index("id")
    assert got["at"].tolist() == [
        pd.Timestamp(t, tz="UTC")
        for t in (
            "2026-06-01 08:00",
            "2026-01-10 12:00",
            "2025-12-01 13:00",
            "2026-05-15 09:30",
            "2026-06-01 10:00:00.125",
        )
    ]
    # The day as written, not the day in UTC (00:30 at +02:00 is the evening before in UTC).
    assert got["on"].dt.strftime("%Y-%m-%d").tolist() == [
        "2026-06-01",
        "2026-01-10",
        "2025-12-01",
        "2026-05-15",
        "2026-06-01",
    ]
    assert reasons(result) == {"f": "malformed value in column 'at': '2026-06-01 tea time' is not a valid datetime"}
    balanced(result)


def test_typed_parquet_timestamps_outside_the_range(tmp_path, ingest):
    from datetime import datetime

    stamps = [datetime(2020, 5, 1), datetime(9999, 12, 31), datetime(1, 1, 1), None]
    table = pa.table({"id": ["a", "b", "c", "d"], "at": pa.array(stamps, type=pa.timestamp("us"))})
    pq.write_table(table, tmp_path / "t.parquet")
    for columns in ({}, {"at": "date"}):
        result = ingest({"t": {"format": "parquet", "path": "t.parquet", "primary_key": "id", "columns": columns}})
        assert result.data["id"].tolist() == ["a", "d"]
        assert set(reasons(result)) == {"b", "c"}
        assert "column 'at': '9999-12-31 00:00:00' is not a valid" in reasons(result)["b"]
        assert "outside the accepted dates" in reasons(result)["c"]
        balanced(result)


def test_date_range_and_allow_nan_are_checked_at_load(tmp_path):
    with pytest.raises(ConfigError, match="outside what the platform can hold"):
        write_config(tmp_path, csv_table(date_range={"min": "0001-01-01", "max": "2000-01-01"}))
    with pytest.raises(ConfigError, match="min 2000-01-01 is after max"):
        write_config(tmp_path, csv_table(date_range={"min": "2000-01-01", "max": "1999-01-01"}))
    with pytest.raises(ConfigError, match="allow_nan applies to double and decimal columns"):
        write_config(tmp_path, csv_table(columns={"n": {"type": "int64", "allow_nan": True}}))
    with pytest.raises(ConfigError, match="date_range applies to date and datetime"):
        write_config(tmp_path, csv_table(columns={"n": {"type": "string", "date_range": {}}}))


def test_keys_are_trimmed_and_null_markers_are_missing(tmp_path, ingest):
    (tmp_path / "t.csv").write_text(
        "id,name,city\n"
        " 42,Ann,NULL\n"  # line 2: key 42
        "42 ,Ann again,Paris\n"  # line 3: duplicate of 42 after trimming
        "NULL,Bob,Rome\n"  # line 4: missing key
        "null,Cy,Rome\n"
        " N/A ,Dee,Rome\n"
        "   ,Eve,Rome\n"
        "7,NA,n/a\n"  # null markers in other columns are missing values
        "8,Nullabor,None\n"
    )
    result = ingest(csv_table())
    assert result.data["id"].tolist() == ["42", "7", "8"]
    assert result.data["name"].tolist()[1] is pd.NA and result.data["city"].isna().tolist() == [True, True, True]
    assert result.data["name"].tolist()[2] == "Nullabor"
    q = result.quarantine.set_index("line")
    assert q.loc[3, "kind"] == "duplicate_key" and "= '42' (first seen in" in q.loc[3, "reason"]
    assert q.loc[[4, 5, 6, 7], "kind"].tolist() == ["missing_key"] * 4
    assert q.loc[4, "reason"] == (
        "missing primary key 'id': 'NULL' is one of the table's null_values (sources.src.tables.t.null_values)"
    )
    assert "'N/A' is one of the table's null_values" in q.loc[6, "reason"]
    assert q.loc[7, "reason"] == "missing primary key 'id'"
    assert q.loc[4, "raw"] == "NULL,Bob,Rome"
    balanced(result)

    kept = ingest(csv_table(null_values=[]))
    assert kept.data["id"].tolist() == ["42", "7", "8", "N/A", "NULL", "null"]
    assert kept.data["city"].tolist()[0] == "NULL"
    balanced(kept)


def test_bare_cr_line_endings_are_read_like_the_csv_module(tmp_path, ingest):
    (tmp_path / "t.csv").write_bytes(b'id,name,n\r1,Ann,5\r2,"Bob, Jr",6\r3,Cy\r\r4,Dee,8\r')
    result = ingest(csv_table(columns={"n": "int64"}))
    assert result.data["id"].tolist() == ["1", "2", "4"]
    assert result.data["name"].tolist() == ["Ann", "Bob, Jr", "Dee"]
    assert result.quarantine["line"].tolist() == [4]
    assert result.quarantine["reason"].tolist() == ["expected 3 columns, found 2"]
    balanced(result)


def test_bare_cr_inside_a_multiline_quoted_value_stays(tmp_path, ingest):
    (tmp_path / "t.csv").write_bytes(b'id,t\n1,"a\rb"\n2,x\ry\n')
    result = ingest(csv_table(csv={"multiline": True}))
    assert result.data["t"].tolist() == ["a\rb", "x"]
    # a row of too few fields still shows its first field as the key, the key being the first column
    assert result.quarantine["raw"].tolist() == ["y"] and result.quarantine["key"].tolist() == ["y"]
    assert result.rows_read == 3
    balanced(result)


def test_header_names_of_a_cr_file_and_unreadable_headers():
    assert header_names("id,name\r1,Ann\r", CsvOptions(), "t.csv") == ["id", "name"]
    with pytest.raises(UserError, match=r"t\.csv: line 1: the header cannot be read as CSV .* csv\.quotechar"):
        header_names("id," + "x" * 200_000, CsvOptions(), "t.csv")


def test_parquet_integers_with_nulls_stay_exact(tmp_path, ingest):
    big = 9007199254740993  # 2**53 + 1: float64 would make it ...992
    table = pa.table({"id": ["a", "b", "c"], "n": pa.array([big, None, -big]), "m": pa.array([big, None, 1])})
    pq.write_table(table, tmp_path / "t.parquet")
    result = ingest({"t": {"format": "parquet", "path": "t.parquet", "primary_key": "id", "columns": {"n": "int64"}}})
    assert result.data["n"].tolist() == [big, pd.NA, -big]
    assert result.data["m"].dtype == "Int64" and result.data["m"].tolist() == [big, pd.NA, 1]
    balanced(result)


def test_undecodable_byte_in_a_bare_cr_file_names_its_line(tmp_path, ingest):
    (tmp_path / "t.csv").write_bytes(b"id,name\r1,Ann\r2,Z\xe9\r")
    with pytest.raises(UserError, match=r"t\.csv: line 3: byte 0xe9 is not valid utf-8"):
        ingest(csv_table())


def test_bad_values_cost_rows_not_the_asset(tmp_path):
    from ci_pipeline_tests.ingest.conftest import checks, materialize, metadata

    (tmp_path / "t.csv").write_bytes(
        b"id,n,born,x\r1,5,2000-01-02,1.5\r2,1e19,2000-01-02,1\r3,6,9999-12-31,1\r"
        b"4,7,2000-01-02,inf\rNULL,8,,\r 5 ,9,,\r"
    )
    table = {"format": "csv", "path": "t.csv", "primary_key": "id"}
    config = write_config(tmp_path, {"t": {**table, "columns": {"n": "int64", "born": "date", "x": "double"}}})
    result = materialize(config)
    assert result.success
    data = pd.read_parquet(tmp_path / "lake" / "ci_pipeline" / "src" / "t.parquet")
    assert data["id"].tolist() == ["1", "5"] and data["n"].tolist() == [5, 9]
    corrupt = pd.read_parquet(tmp_path / "lake" / "ci_pipeline" / "src" / "t_corrupt.parquet")
    assert corrupt["kind"].tolist() == ["malformed_value"] * 3 + ["missing_key"]
    assert corrupt["line"].tolist() == [3, 4, 5, 6]
    meta = metadata(result, ["src", "t"])
    assert (meta["rows_read"], meta["rows_accepted"], meta["rows_quarantined"]) == (6, 2, 4)
    assert checks(result)["rows_balance"].passed


def test_a_decimal_comma_file_reads_its_amounts_and_quarantines_what_is_no_number(tmp_path, ingest):
    (tmp_path / "t.csv").write_text('id;amount\na;1.262,15\nb;-3,5\nc;"1 262,15"\nd;262.15\ne;zwölf\n')
    result = ingest(csv_table(csv={"delimiter": ";", "decimal": ","}, columns={"amount": "double"}))
    # A point that groups no thousands stays a decimal point: 262.15, never 26215.
    assert dict(zip(result.data["id"], result.data["amount"], strict=True)) == {
        "a": 1262.15,
        "b": -3.5,
        "c": 1262.15,
        "d": 262.15,
    }
    assert reasons(result)["e"] == "malformed value in column 'amount': 'zwölf' is not a valid double"
    balanced(result)


def test_a_null_word_written_as_the_column_s_values_are_read_as_missing_with_a_warning(tmp_path, ingest):
    """`NA` among country codes is Namibia and `Null` among surnames a family, more likely than a gap: the cells
    stay missing (the table's null_values say so) but the run says how to keep them."""
    rows = [
        ("1", "US", "Smith"), ("2", "DE", "Null"), ("3", "FR", "NULL"), ("4", "NA", "Brown"), ("5", "GB", "Lee"),
        ("6", "IT", "Taylor"), ("7", "NA", "Jones"), ("8", "ES", "N/A"), ("9", "PT", "O'Brien"),
    ]  # fmt: skip
    (tmp_path / "t.csv").write_text("id,country,surname\n" + "".join(",".join(r) + "\n" for r in rows))
    result = ingest(csv_table())
    assert result.data["country"].isna().sum() == 2 and result.data["surname"].isna().sum() == 3
    assert len(result.warnings) == 2, result.warnings
    country, surname = result.warnings
    assert country.startswith("sources.src.tables.t: column 'country': 2 cell(s) 'NA' read as missing")
    assert "set sources.src.tables.t.null_values to the words that mean missing in this table" in country
    # 'NULL' among Title-case names and 'N/A' anywhere are gaps: no word of them.
    assert surname.startswith("sources.src.tables.t: column 'surname': 1 cell(s) 'Null' read as missing")
    balanced(result)

    kept = ingest(csv_table(null_values=["NULL", "N/A"]))  # the user's own list is their decision
    assert kept.data["country"].tolist().count("NA") == 2 and kept.warnings == []


def test_null_words_among_numbers_or_free_text_are_gaps():
    from ci_pipeline.ingest.quality import null_words_like_values

    def said(values):
        cells = pd.Series(values, dtype="string")
        return null_words_like_values(cells, cells.isin(["NA", "None", "NULL"]), "here", "t")

    assert said(["12", "13", "NA", "14", "15", "16"]) == []
    assert said(["a long note, with commas", "another one.", "NA", "x y z", "fine", "ok then"]) == []
    assert said(["Ann", "Bob", "Cy", "Dee", "None"]) == []  # too few known values to judge by
    assert len(said(["Ann", "Bobby", "Cyd", "Deena", "Eve", "None"])) == 1


def test_parquet_nested_binary_and_index_columns_are_kept_whole_as_text(tmp_path, ingest):
    """Structs, lists and maps as JSON (pandas would write Python's repr, a long list cut to '...'); bytes as their
    text, or hex when they are no UTF-8 (pandas failed on them); a named pandas index is a column of the file."""
    long_list = [str(i) for i in range(2000)]
    table = pa.table(
        {
            "customer_no": ["c1", "c2"],
            "address": [{"street": "Main", "zip": None}, {"street": "Elm", "zip": "02134"}],
            "tags": [["a", "b"], long_list],
            "scores": pa.array([[("k", 1)], []], type=pa.map_(pa.string(), pa.int64())),
            "raw": pa.array([b"\xff\x00", b"ok"], type=pa.binary()),
        }
    )
    pq.write_table(table, tmp_path / "t.parquet")
    result = ingest({"t": {"format": "parquet", "path": "t.parquet", "primary_key": "customer_no"}})
    row = result.data.set_index("customer_no").loc["c1"]
    assert row["address"] == '{"street":"Main","zip":null}' and row["tags"] == '["a","b"]'
    assert row["scores"] == '{"k":1}' and row["raw"] == "FF00"
    assert result.data.set_index("customer_no").loc["c2", "tags"].count(",") == 1999
    balanced(result)

    pd.DataFrame({"customer_no": ["c1"], "name": ["Ann"]}).set_index("customer_no").to_parquet(tmp_path / "t.parquet")
    indexed = ingest({"t": {"format": "parquet", "path": "t.parquet", "primary_key": "customer_no"}})
    assert indexed.data.to_dict("records") == [{"customer_no": "c1", "name": "Ann"}]


def test_a_partitioned_parquet_folder_keeps_its_partition_columns(tmp_path, ingest):
    """Spark and pyarrow write a partition column's values into the folder names only (year=2023/country=NL)."""
    table = pa.table({"id": ["1", "2", "3"], "name": ["Ann", "Bob", "Cy"], "year": [2023, 2023, 2024]})
    table = table.append_column("country", pa.array(["NL", "DE", "NL"]))
    pq.write_to_dataset(table, tmp_path / "orders", partition_cols=["year", "country"])
    tables = {"t": {"format": "parquet", "path": "orders", "primary_key": "id", "columns": {"year": "int64"}}}
    # validate knows them too: a declared partition column is no unknown column.
    assert source_problems(write_config(tmp_path, tables), Lake.local(tmp_path / "lake")) == []
    result = ingest({"t": {"format": "parquet", "path": "orders", "primary_key": "id"}})
    rows = result.data.set_index("id")[["name", "year", "country"]].sort_index()
    assert rows.to_dict("index") == {
        "1": {"name": "Ann", "year": "2023", "country": "NL"},
        "2": {"name": "Bob", "year": "2023", "country": "DE"},
        "3": {"name": "Cy", "year": "2024", "country": "NL"},
    }
    balanced(result)


def test_an_empty_part_file_in_a_folder_export_is_skipped_with_a_note(tmp_path, ingest):
    """Spark writes a part per task, some of 0 bytes: no header, no rows; the others are the table."""
    (tmp_path / "export").mkdir()
    (tmp_path / "export" / "part-0000.csv").write_bytes(b"")
    (tmp_path / "export" / "part-0001.csv").write_text("id,name\n1,Ann\n2,Bob\n")
    assert source_problems(write_config(tmp_path, csv_table(path="export")), Lake.local(tmp_path / "lake")) == []
    result = ingest(csv_table(path="export"))
    assert result.data["id"].tolist() == ["1", "2"] and result.rows_read == 2
    assert "1 empty file(s) of 0 bytes skipped (no header, no rows): part-0000.csv" in result.notes
    balanced(result)


def test_parquet_dates_are_dates_checked_against_the_date_range(tmp_path, ingest):
    """A date32 column was read as text: a year-1600 typo passed, and a date compared with text downstream."""
    born = pa.array([date(1980, 1, 2), date(1600, 1, 1), None], type=pa.date32())
    pq.write_table(pa.table({"id": ["1", "2", "3"], "born": born}), tmp_path / "t.parquet")
    result = ingest({"t": {"format": "parquet", "path": "t.parquet", "primary_key": "id"}})
    assert str(result.data["born"].dtype) == "datetime64[ns]"
    assert result.data["born"].tolist()[0] == pd.Timestamp("1980-01-02") and pd.isna(result.data["born"].tolist()[1])
    (reason,) = result.quarantine["reason"]
    assert "'1600-01-01 00:00:00' is not a valid date (outside the accepted dates" in reason
    balanced(result)


def test_parquet_decimals_are_numbers_as_a_declared_decimal_column_holds_them():
    from decimal import Decimal

    from ci_pipeline.ingest.read import arrow_frame

    prices = pa.array([Decimal("19.9900000000"), Decimal("-1.0000000000"), None], type=pa.decimal128(20, 10))
    frame = arrow_frame(pa.table({"price": prices}))
    assert str(frame["price"].dtype) == "float64" and frame["price"].tolist()[:2] == [19.99, -1.0]


def test_excel_serial_dates_a_ctrl_z_at_the_end_and_parquet_files_of_other_types_are_told(tmp_path, ingest):
    """A date column exported as Excel's day numbers is told so; DOS's end-of-file byte is no row; a folder whose
    Parquet files store a column with types that have no common one is read as text with a warning naming both."""
    (tmp_path / "t.csv").write_bytes(b"id,born\na,45000\nb,2020-01-02\n\x1a")
    result = ingest(csv_table(columns={"born": "date"}))
    assert reasons(result)["a"].endswith(
        "'45000' is not a valid date (an Excel serial date number, days since "
        "1899-12-30: 45000 is 2023-03-15; export the column as dates, for example "
        "yyyy-mm-dd, not as numbers)"
    )
    assert result.rows_read == 2 and result.data["id"].tolist() == ["b"]
    (tmp_path / "p").mkdir()
    pd.DataFrame({"id": ["1"], "n": [1], "m": pd.array([1], dtype="int32")}).to_parquet(tmp_path / "p" / "a.parquet")
    pd.DataFrame({"id": ["2"], "n": ["x"], "m": [2]}).to_parquet(tmp_path / "p" / "b.parquet")
    mixed = ingest({"t": {"format": "parquet", "path": "p", "primary_key": "id"}})
    assert mixed.data["n"].tolist() == ["1", "x"] and mixed.data["m"].tolist() == [1, 2]
    (warning,) = mixed.warnings
    assert warning.startswith(f"{tmp_path / 'p' / 'b.parquet'}: column 'n' is stored as string, but as Int64 in ")
