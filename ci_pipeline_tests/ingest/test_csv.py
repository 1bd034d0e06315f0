"""CSV tables: layouts, quoting, encodings, dates, and every kind of bad row going to quarantine."""

from __future__ import annotations

import re

import pandas as pd
import pytest

from ci_pipeline.config.model import ConfigError
from ci_pipeline.errors import UserError


def csv_table(path="t.csv", **extra):
    return {"t": {"format": "csv", "path": path, "primary_key": "id", **extra}}


def test_header_delimiter_quoting_crlf_bom_and_blank_lines(tmp_path, ingest):
    (tmp_path / "t.csv").write_bytes('\ufeffid;name;note\r\n2;"Smith; Bob";"said ""hi"""\r\n\r\n1;Ann;\r\n'.encode())
    result = ingest(csv_table(csv={"delimiter": ";"}))
    assert result.data["id"].tolist() == ["1", "2"]  # sorted by key
    assert result.data["name"].tolist() == ["Ann", "Smith; Bob"]
    assert result.data["note"].tolist()[1] == 'said "hi"'
    assert pd.isna(result.data["note"].iloc[0])
    assert all(isinstance(t, pd.StringDtype) for t in result.data.dtypes)
    assert (result.rows_read, result.rows_quarantined) == (2, 0)


def test_headerless_file_takes_the_declared_columns(tmp_path, ingest):
    (tmp_path / "t.csv").write_text("b,2\na,1\n")
    result = ingest(csv_table(csv={"header": False}, columns={"id": "string", "n": "int64"}))
    assert list(result.data.columns) == ["id", "n"]
    assert result.data["n"].dtype == "Int64"
    assert result.data["n"].tolist() == [1, 2]


def test_bad_rows_are_quarantined_with_file_line_raw_text_and_reason(tmp_path, ingest):
    (tmp_path / "t.csv").write_text(
        "id,n,born\n"
        "1,10,01/02/2000\n"  # line 2: good
        "2,x,01/02/2000\n"  # line 3: malformed int
        "3,30\n"  # line 4: wrong column count
        '4,"40,01/02/2000\n'  # line 5: broken quoting
        ",50,01/02/2000\n"  # line 6: missing key
        "1,60,01/02/2000\n"  # line 7: duplicate of line 2
        "7,70,2000-13-45\n"  # line 8: malformed date
        "8,80,\n"  # line 9: good, date missing
    )
    result = ingest(csv_table(columns={"n": "int64", "born": {"type": "date", "format": "%m/%d/%Y"}}, date_formats=[]))
    assert result.data["id"].tolist() == ["1", "8"]
    assert result.data["born"].dtype == "datetime64[ns]"
    assert result.data["born"].iloc[0] == pd.Timestamp("2000-01-02")
    q = result.quarantine.set_index("line")
    assert q.index.tolist() == [3, 4, 5, 6, 7, 8]
    assert q.loc[3, "kind"] == "malformed_value" and "column 'n': 'x' is not a valid int64" in q.loc[3, "reason"]
    assert q.loc[4, "kind"] == "column_count" and q.loc[4, "reason"] == "expected 3 columns, found 2"
    assert q.loc[5, "kind"] == "broken_quoting" and q.loc[5, "raw"] == '4,"40,01/02/2000'
    assert q.loc[6, "kind"] == "missing_key"
    assert q.loc[7, "kind"] == "duplicate_key" and "line 2" in q.loc[7, "reason"]
    assert q.loc[7, "raw"] == "1,60,01/02/2000"
    assert q.loc[8, "kind"] == "malformed_value" and "born" in q.loc[8, "reason"]
    assert set(q["severity"]) == {"warning"}
    assert q["file"].str.endswith("t.csv").all()
    assert result.rows_read == 8 == result.rows_accepted + result.rows_quarantined
    assert result.balanced


def test_severity_per_reason(tmp_path, ingest):
    (tmp_path / "t.csv").write_text("id,n\n1,a\n1,2\n2,3\n")
    result = ingest(csv_table(columns={"n": "int64"}, bad_rows_by_reason={"malformed_value": "error"}))
    assert result.quarantine["severity"].tolist() == ["error"]
    assert result.worst_severity == "error"
    # the malformed first row does not make the second one a duplicate
    assert result.data["id"].tolist() == ["1", "2"]


def test_quoted_values_may_span_lines_when_multiline(tmp_path, ingest):
    (tmp_path / "t.csv").write_text('id,text\n1,"two\nlines"\n2,one\n')
    result = ingest(csv_table(csv={"multiline": True}))
    assert result.data["text"].tolist() == ["two\nlines", "one"]
    single = ingest(csv_table())
    assert single.quarantine["kind"].tolist() == ["broken_quoting", "broken_quoting"]
    assert single.rows_read == 3 and single.balanced
    # The reason names the setting that reads such a file.
    assert (
        single.quarantine["reason"]
        .str.endswith("(if quoted values of this file hold line breaks, set csv.multiline: true for its table)")
        .all()
    )


def test_blanks_after_delimiters_are_not_part_of_values_when_skip_initial_space(tmp_path, ingest):
    """A file written ``a, b, c`` (as febrl's are): its values lose the blank after each delimiter, and a value of
    blanks only is missing; inner and trailing blanks stay, and without the option the blanks stay too."""
    (tmp_path / "t.csv").write_text("id, name, city, n\n1, ann lee, oslo ,  2\n2,bob,   , 3\n")
    result = ingest(csv_table(columns={"n": "int64"}, csv={"skip_initial_space": True}))
    assert result.data["name"].tolist() == ["ann lee", "bob"]
    assert result.data["city"].iloc[0] == "oslo " and result.data["city"].isna().iloc[1]
    assert result.data["n"].tolist() == [2, 3] and result.balanced
    kept = ingest(csv_table())
    assert kept.data["name"].tolist() == [" ann lee", "bob"]


def test_typed_columns_get_pandas_dtypes(tmp_path, ingest):
    (tmp_path / "t.csv").write_text(
        "id,amount,flag,at,g,doc,clock\n"
        "1,1.5,yes,2024-03-04T10:00:00,6F9619FF-8B86-D011-B42D-00C04FC964FF,{},10:30\n"
        "2,,no,2024-03-04 12:00:00+02:00,,,\n"
    )
    result = ingest(
        csv_table(
            columns={
                "amount": "double",
                "flag": "boolean",
                "at": "datetime",
                "g": "guid",
                "doc": "json",
                "clock": "time",
            },
            date_formats=["%Y-%m-%dT%H:%M:%S", "ISO8601"],
        )
    )
    data = result.data
    assert data["amount"].dtype == "float64"
    assert data["flag"].dtype == "boolean" and data["flag"].tolist() == [True, False]
    assert str(data["at"].dtype) == "datetime64[ns, UTC]"
    assert data["at"].tolist() == [
        pd.Timestamp("2024-03-04 10:00", tz="UTC"),
        pd.Timestamp("2024-03-04 10:00", tz="UTC"),
    ]
    assert data["g"].iloc[0] == "6f9619ff-8b86-d011-b42d-00c04fc964ff"
    assert data["clock"].iloc[0] == "10:30:00"
    assert result.rows_quarantined == 0


def test_configured_encoding_and_non_utf8_file(tmp_path, ingest):
    (tmp_path / "t.csv").write_bytes("id,name\n1,José\n2,Zoë\n".encode("cp1252"))
    with pytest.raises(UserError, match=r"t\.csv: line 2: .*not valid utf-8.*csv\.encoding"):
        ingest(csv_table())
    result = ingest(csv_table(csv={"encoding": "cp1252"}))
    assert result.data["name"].tolist() == ["José", "Zoë"]


def test_a_line_in_another_encoding_in_a_utf8_file_is_quarantined_and_validate_agrees(tmp_path, ingest):
    from ci_pipeline.ingest.preflight import source_problems
    from ci_pipeline_tests.ingest.conftest import write_config

    data = "id,name\n1,José\n2,Zoë\n".encode() + "3,Jörg\n".encode("cp1252") + "4,Renée\n".encode()
    (tmp_path / "t.csv").write_bytes(data)
    result = ingest(csv_table())
    assert result.data["name"].tolist() == ["José", "Zoë", "Renée"]
    (row,) = result.quarantine.to_dict("records")
    assert (row["line"], row["kind"], row["raw"]) == (4, "encoding", "3,J\\xf6rg")
    assert row["reason"].startswith("byte 0xf6 is not valid utf-8, though the rest of the file is")
    assert (result.rows_read, result.rows_quarantined) == (4, 1)
    assert source_problems(write_config(tmp_path, csv_table())) == []


def test_folder_of_csv_files(tmp_path, ingest):
    (tmp_path / "parts").mkdir()
    (tmp_path / "parts" / "a.csv").write_text("id,v\n1,a\n")
    (tmp_path / "parts" / "b.csv").write_text("id,v\n2,b\n1,dup\n")
    (tmp_path / "parts" / "_SUCCESS").write_text("")
    result = ingest(csv_table(path="parts"))
    assert result.data["id"].tolist() == ["1", "2"]
    assert result.quarantine["file"].iloc[0].endswith("parts/b.csv")
    assert result.quarantine["line"].iloc[0] == 3
    assert len(result.files) == 2


def test_missing_file(tmp_path, ingest):
    with pytest.raises(UserError, match=r"nothing\.csv: file or folder not found \(path\)"):
        ingest(csv_table(path="nothing.csv"))


def test_primary_key_column_that_does_not_exist(tmp_path, ingest):
    (tmp_path / "t.csv").write_text("ident,v\n1,a\n")
    with pytest.raises(UserError, match=r"primary key column 'id' \(sources\.src\.tables\.t\.primary_key\).*ident, v"):
        ingest(csv_table())


def test_declared_column_that_does_not_exist(tmp_path, ingest):
    (tmp_path / "t.csv").write_text("id,v\n1,a\n")
    with pytest.raises(UserError, match=r"declared column\(s\) amount"):
        ingest(csv_table(columns={"amount": "double"}))


def test_empty_table_is_an_error_unless_allowed(tmp_path, ingest):
    (tmp_path / "t.csv").write_text("id,v\n")
    with pytest.raises(UserError, match=r"the table has no rows.*allow_empty: true"):
        ingest(csv_table())
    result = ingest(csv_table(allow_empty=True))
    assert result.rows_read == 0 and list(result.data.columns) == ["id", "v"]
    with pytest.raises(UserError, match="the file is empty, without even the header row.*allow_empty: true"):
        (tmp_path / "t.csv").write_text("")
        ingest(csv_table())


def test_unknown_format_is_a_configuration_error(tmp_path):
    from ci_pipeline_tests.ingest.conftest import write_config

    with pytest.raises(ConfigError, match=r"sources\.src\.tables\.t\.format: .*'csv', 'parquet', 'cdm' or 'delta'"):
        write_config(tmp_path, {"t": {"format": "xlsx", "path": "t.xlsx", "primary_key": "id"}})


def test_preflight_names_missing_paths_and_primary_keys(tmp_path):
    from ci_pipeline.ingest.preflight import source_problems
    from ci_pipeline_tests.ingest.conftest import write_config

    (tmp_path / "a.csv").write_text("ident,v\n1,x\n")
    (tmp_path / "b.csv").write_text("id,v\n1,x\n")
    config = write_config(
        tmp_path,
        {
            "a": {"format": "csv", "path": "a.csv", "primary_key": "id"},
            "b": {"format": "csv", "path": "b.csv", "primary_key": "id"},
            "c": {"format": "parquet", "path": "gone", "primary_key": "id"},
        },
    )
    problems = source_problems(config)
    assert len(problems) == 2
    assert problems[0].startswith("sources.src.tables.a.primary_key: column 'id' is not in a.csv (columns: ident, v)")
    assert problems[1].startswith("sources.src.tables.c.path: ") and "gone: file or folder not found" in problems[1]


def test_escapechar_and_utf16(tmp_path, ingest):
    (tmp_path / "t.csv").write_text('id|text\n1|a \\| b\n2|say \\"x\\"\n')
    result = ingest(csv_table(csv={"delimiter": "|", "escapechar": "\\"}))
    assert result.data["text"].tolist() == ["a | b", 'say "x"']
    (tmp_path / "u.csv").write_bytes("id,name\n1,Zoë\n".encode("utf-16"))
    result = ingest(csv_table(path="u.csv", csv={"encoding": "utf-16"}))
    assert result.data["name"].tolist() == ["Zoë"]


def test_a_utf16_file_read_as_utf8_names_its_byte_order_mark_and_the_fix_in_ingest_and_validate(tmp_path, ingest):
    from ci_pipeline.ingest.preflight import source_problems
    from ci_pipeline_tests.ingest.conftest import write_config

    (tmp_path / "t.csv").write_bytes("id,name\n1,Zoë\n".encode("utf-16"))
    fix = r"t\.csv: the file begins with a UTF-16 byte-order mark .* csv\.encoding: utf-16"
    with pytest.raises(UserError, match=fix):
        ingest(csv_table())
    (problem,) = source_problems(write_config(tmp_path, csv_table()))  # not "the first line is empty"
    assert re.search(fix, problem)


@pytest.mark.parametrize("seed", range(5))
def test_round_trip_of_awkward_values_written_by_pandas(tmp_path, ingest, seed):
    import numpy as np

    rng = np.random.default_rng(seed)
    alphabet = np.array(list('ab ,"\n;é'))
    values = ["".join(rng.choice(alphabet, rng.integers(1, 8))) for _ in range(200)]
    frame = pd.DataFrame({"id": [f"k{i:03d}" for i in range(200)], "text": values, "other": values[::-1]})
    frame.to_csv(tmp_path / "t.csv", index=False)
    result = ingest(csv_table(csv={"multiline": True}))
    assert result.rows_quarantined == 0
    expected = frame.replace({"": None})
    assert result.data["text"].tolist() == expected["text"].tolist()
    assert result.data["other"].tolist() == expected["other"].tolist()


def test_large_integers_are_exact(tmp_path, ingest):
    (tmp_path / "t.csv").write_text("id,n\n1,12345678901234567\n2,oops\n")
    result = ingest(csv_table(columns={"n": "int64"}))
    assert result.data["n"].tolist() == [12345678901234567]
    assert result.quarantine["reason"].tolist() == ["malformed value in column 'n': 'oops' is not a valid int64"]


def test_a_table_whose_every_row_is_quarantined_fails_unless_allowed(tmp_path, ingest):
    """An export of which no row is accepted is a failed one or a changed layout: loading it would empty every
    table built on it (unification removing every customer), so the table fails, naming the commonest reasons."""
    (tmp_path / "t.csv").write_text("id,name,city\n1,ann,oslo,x\n2,bob,rome,y\n3,cy\n,dan,nice\n")
    with pytest.raises(UserError) as failed:
        ingest(csv_table())
    message = str(failed.value)
    assert "t.csv: all 4 rows read were quarantined and none accepted (sources.src.tables.t)" in message
    assert "'expected 3 columns, found 4' (2 rows, e.g. line 2)" in message
    assert "'expected 3 columns, found 2' (1 row, e.g. line 4)" in message
    assert "failed one or one whose layout changed" in message
    assert "set sources.src.tables.t.allow_empty: true" in message
    allowed = ingest(csv_table(allow_empty=True))
    assert (allowed.rows_accepted, allowed.rows_quarantined) == (0, 4) and allowed.balanced


def test_empty_fields_past_the_header_are_an_export_quirk_not_a_wrong_column_count(tmp_path, ingest):
    """Lines ending in delimiters (a spreadsheet's empty columns on the right) are rows of the header's columns;
    extra fields that hold a value are still quarantined, and show their key when it is the first field."""
    (tmp_path / "t.csv").write_text(
        'id,name,city\n1,ann,oslo,,\n2,bob,"rome, it",\r\n3,cy,nice,,x\n"4",dan\n5,eve,\n NULL ,fay,bergen,z\n'
    )
    result = ingest(csv_table())
    assert result.data["id"].tolist() == ["1", "2", "5"]
    assert result.data["city"].tolist()[:2] == ["oslo", "rome, it"] and pd.isna(result.data["city"].iloc[2])
    q = result.quarantine.set_index("line")
    assert q.index.tolist() == [4, 5, 7]
    assert q.loc[4, "reason"] == "expected 3 columns, found 5" and q.loc[4, "raw"] == "3,cy,nice,,x"
    assert q.loc[4, "key"] == "3"
    assert pd.isna(q.loc[5, "key"])  # a quoted first field is not read without parsing
    assert pd.isna(q.loc[7, "key"])  # one of the table's null_values
    assert result.rows_read == 6 and result.balanced


@pytest.mark.parametrize(
    "url",
    [
        "abfss://crm@contosolake.dfs.core.windows.net/exports/customers.csv?sv=2022&sig=s3cr3tSignature",
        "abfs://crm/exports/customers.csv",
    ],
)
def test_an_azure_source_with_a_local_lake_is_a_clear_error(tmp_path, ingest, url):
    """Azure sources are read with the lake's credentials; a local lake has none, so the table names the fix."""
    from ci_pipeline.ingest.preflight import source_problems
    from ci_pipeline_tests.ingest.conftest import write_config

    fix = r"an Azure location, but the lake is a local folder.*set lake\.url to abfss://"
    with pytest.raises(UserError, match=fix) as failed:
        ingest(csv_table(path=url))
    assert "s3cr3tSignature" not in str(failed.value)
    problems = source_problems(write_config(tmp_path, csv_table(path=url)))
    assert len(problems) == 1 and problems[0].startswith("sources.src.tables.t.path: "), problems
    assert "lake is a local folder" in problems[0] and "s3cr3tSignature" not in problems[0]


def test_a_line_of_only_spaces_and_tabs_is_blank(tmp_path, ingest):
    """Blank lines are skipped, and so are lines holding only spaces or tabs (an export's padding), not rows of
    one field; a tab-delimited file's line of tabs is a row of empty fields, as before."""
    (tmp_path / "t.csv").write_text("id,name\n  \n1,ann\n \t \r\n2,bob\n3\n   ")
    result = ingest(csv_table())
    assert result.data["id"].tolist() == ["1", "2"] and result.rows_read == 3
    assert result.quarantine["line"].tolist() == [6] and result.quarantine["raw"].tolist() == ["3"]
    (tmp_path / "t.csv").write_text("id\tname\n1\tann\n\t\n")
    tabbed = ingest(csv_table(csv={"delimiter": "\t"}))
    assert tabbed.quarantine["kind"].tolist() == ["missing_key"] and tabbed.quarantine["line"].tolist() == [3]


def test_excels_separator_line_and_a_sheets_empty_columns_on_the_right_are_read_past(tmp_path, ingest):
    (tmp_path / "t.csv").write_text("sep=;\nid;name;;\n1;Ann;;\n2;Bob;;\n")
    result = ingest(csv_table(csv={"delimiter": ";"}))
    assert list(result.data.columns)[:2] == ["id", "name"] and result.data["name"].tolist() == ["Ann", "Bob"]
    assert result.quarantine.empty


def test_a_separator_line_naming_another_delimiter_and_a_nameless_column_say_the_fix(tmp_path, ingest):
    (tmp_path / "t.csv").write_text("sep=,\nid;name\n1;Ann\n")
    with pytest.raises(UserError, match=r"says the values are separated by ',', read with ';': set csv.delimiter: ','"):
        ingest(csv_table(csv={"delimiter": ";"}))
    (tmp_path / "t.csv").write_text("id,,name\n1,x,Ann\n")
    with pytest.raises(UserError, match=r"line 1: column 2 of the header after 'id' has no name; name every column"):
        ingest(csv_table())


def test_a_row_whose_quotes_the_parser_reads_as_text_is_quarantined_and_the_others_loaded(tmp_path, ingest):
    """A blank before a quote, or quotes escaped with a backslash, make the parser read the quote as text: such a
    row is quarantined with its line and the fix, instead of failing the whole table."""
    (tmp_path / "t.csv").write_text('id,name\n1, "Smith, John"\n2,Bob\n3,Cy\n')
    result = ingest(csv_table())
    assert result.data["id"].tolist() == ["2", "3"] and result.balanced
    (row,) = result.quarantine.to_dict("records")
    assert (row["line"], row["kind"], row["key"], row["raw"]) == (2, "column_count", "1", '1, "Smith, John"')
    assert row["reason"].startswith("expected 2 columns, found 3: a quote after a blank")
    assert row["reason"].endswith(
        "set csv.skip_initial_space: true for this table (or write the file without blanks after delimiters)"
    )
    fixed = ingest(csv_table(csv={"skip_initial_space": True}))
    assert fixed.data["name"].tolist() == ["Smith, John", "Bob", "Cy"] and fixed.rows_quarantined == 0

    (tmp_path / "t.csv").write_text('id,name,note\n1,Ann,"say \\"hi\\", ok"\n2,Bob,plain\n')
    result = ingest(csv_table())
    assert result.data["id"].tolist() == ["2"] and result.balanced
    (row,) = result.quarantine.to_dict("records")
    assert (row["line"], row["kind"]) == (2, "broken_quoting")
    assert 'escaped with a backslash (\\")' in row["reason"] and 'set csv.escapechar: "\\\\"' in row["reason"]
    fixed = ingest(csv_table(csv={"escapechar": "\\"}))
    assert fixed.data["note"].tolist() == ['say "hi", ok', "plain"]


def test_quotes_inside_values_are_text_read_as_the_parser_reads_them():
    """Records holding a quote that is text (inside a value, or after a closing one) are read one by one, in file
    order among the others; a value's own quote after blanks opens it with skip_initial_space."""
    from ci_pipeline.config.sources import CsvOptions
    from ci_pipeline.ingest.csvfile import LINE, parse_csv

    data = b'id,name,note\n1,Ann,ab"c"d\n2,Bob,"x""y",,\n3,"a"b,\n4,   "q, r" ,z\n5,Eve,\n'
    parsed = parse_csv(data, CsvOptions(skip_initial_space=True), "t.csv")
    assert parsed.frame["note"].tolist() == ['ab"c"d', 'x"y', pd.NA, "z", pd.NA]
    assert parsed.frame["name"].tolist() == ["Ann", "Bob", "ab", "q, r ", "Eve"]
    assert parsed.frame[LINE].tolist() == [2, 3, 4, 5, 6] and parsed.broken.empty


def test_an_unclosed_quote_with_multiline_quarantines_its_line_and_reads_the_lines_after_it(tmp_path, ingest):
    """With csv.multiline, a quote never closed would make one value of the rest of the file: only its line is
    quarantined, saying so, and every later line is read as a record."""
    records = "".join(f"{i},P{i},{i}\n" for i in range(4, 11))
    (tmp_path / "t.csv").write_text(f'id,name,amt\n1,Ann,1\n2,"Bob\nB",2\n3,"Cy,3\n{records}')
    result = ingest(csv_table(csv={"multiline": True}))
    assert (result.rows_read, result.rows_accepted, result.rows_quarantined) == (10, 9, 1)
    assert result.data.set_index("id").loc[["1", "2", "10"], "name"].tolist() == ["Ann", "Bob\nB", "P10"]
    (row,) = result.quarantine.to_dict("records")
    assert (row["line"], row["kind"], row["raw"]) == (5, "broken_quoting", '3,"Cy,3')
    assert "not closed before the end of the file (line 12), so it would take in the 7 lines after it" in row["reason"]


def test_a_folder_file_with_its_header_in_another_case_or_delimiter(tmp_path, ingest):
    """A later file whose header names the columns in another case is read with the first file's names; one
    written with another delimiter is refused, naming it, instead of adding a column 'id;name'."""
    (tmp_path / "f").mkdir()
    (tmp_path / "f" / "a.csv").write_text("id,name\n1,Ann\n")
    (tmp_path / "f" / "b.csv").write_text("ID,Name\n3,Cy\n")
    result = ingest(csv_table(path="f"))
    assert list(result.data.columns) == ["id", "name"] and result.data["id"].tolist() == ["1", "3"]
    assert any("b.csv: header names in another case" in note and "ID as id" in note for note in result.notes)
    (tmp_path / "f" / "b.csv").write_text("id;name\n3;Cy\n")
    fix = r"b\.csv: its header reads as one column \('id;name'\) .* it looks ';'-separated"
    with pytest.raises(UserError, match=fix):
        ingest(csv_table(path="f"))


def test_a_folder_reads_its_gzipped_csv_parts_and_names_a_broken_one(tmp_path, ingest):
    import gzip

    from ci_pipeline.ingest.preflight import source_problems
    from ci_pipeline_tests.ingest.conftest import write_config

    (tmp_path / "f").mkdir()
    (tmp_path / "f" / "part-0.csv").write_text("id,name\n1,Ann\n")
    (tmp_path / "f" / "part-1.csv.gz").write_bytes(gzip.compress(b"id,name\n2,Bob\n"))
    result = ingest(csv_table(path="f"))
    assert result.data["name"].tolist() == ["Ann", "Bob"] and len(result.files) == 2
    assert source_problems(write_config(tmp_path, csv_table(path="f"))) == []
    (tmp_path / "f" / "part-1.csv.gz").write_bytes(b"id,name\n2,Bob\n")
    with pytest.raises(UserError, match=r"part-1\.csv\.gz: not a readable gzip file"):
        ingest(csv_table(path="f"))
