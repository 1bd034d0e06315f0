"""`ci-pipeline quickstart` on CSV files with broken lines: every row of the file is accepted or quarantined.

An unclosed quote must not be read as a value over several lines (it would swallow the records after it), and a
line with another number of fields than the header must not stop the quick start: the run quarantines both.
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pytest
import yaml

from ci_pipeline.cli import main
from ci_pipeline.errors import UserError
from ci_pipeline.quickstart import plan_quickstart, read_table

HEADER = "unique_id,first_name,surname,dob,city,email"
ROWS = 90  # under MODEL_ROWS: simple rules, so no model is trained and the test stays fast


def customer_lines(count: int = ROWS) -> list[str]:
    """Distinct customers, one CSV line each, without a quote character."""
    names = ["Ann", "Bob", "Carla", "Dev", "Elif", "Farid", "Grace", "Hugo", "Ines"]
    return [
        f"c{i},{names[i % 9]},Lee{i},{1950 + i % 40}-0{1 + i % 9}-1{i % 10},Oslo,{names[i % 9].lower()}{i}@x.example"
        for i in range(count)
    ]


def quickstart(source: Path, tmp_path: Path, *options: str) -> tuple[dict, pd.DataFrame, pd.DataFrame]:
    """Run the quick start on ``source``; return the table's configuration, its accepted rows and its quarantine."""
    out = tmp_path / "out"
    assert main(["quickstart", str(source), "--out", str(out), *options]) == 0
    table = source.stem
    config = yaml.safe_load((out / "ci_pipeline.yaml").read_text())["sources"]["quickstart"]["tables"][table]
    lake = out / "lake" / "ci_pipeline" / "quickstart"
    return config, pd.read_parquet(lake / f"{table}.parquet"), pd.read_parquet(lake / f"{table}_corrupt.parquet")


def test_unclosed_quotes_are_quarantined_not_read_as_values_that_swallow_the_records_after_them(tmp_path):
    lines = customer_lines()
    unclosed = [10, 11, 40, 75]  # each opens a value that, read over lines, would end at the next one
    for i in unclosed:
        lines[i] = lines[i].replace(",", ',"', 1)  # c10,"Bob,Lee10,... : first_name never closed
    source = tmp_path / "customers.csv"
    source.write_text("\n".join([HEADER, *lines]) + "\n", encoding="utf-8")

    config, accepted, quarantine = quickstart(source, tmp_path)
    assert "multiline" not in config.get("csv", {})
    assert len(accepted) + len(quarantine) == ROWS and len(quarantine) == len(unclosed)
    assert quarantine["line"].tolist() == [i + 2 for i in unclosed]  # the header is line 1
    assert quarantine["reason"].str.contains("broken quoting: a quoted value is not closed").all()
    assert quarantine["reason"].str.contains("csv.multiline").all()
    written = (tmp_path / "out" / "ci_pipeline.yaml").read_text()
    assert "# csv: 4 line(s) hold an unclosed quote (lines 12, 13, 42, 77); quickstart planned without them" in written


def test_quoted_values_over_two_lines_are_still_read_as_values(tmp_path):
    rows = [f'a{i},Ann{i % 9},Lee{i},"{i} Main St\nApt {i}",a{i}@x.example' for i in range(0, ROWS, 3)]
    rows += [f"b{i},Bob{i % 9},Stone{i},{i} Elm Rd,b{i}@x.example" for i in range(ROWS - len(rows))]
    source = tmp_path / "addresses.csv"
    source.write_text("\n".join(["customer_id,first_name,surname,address,email", *rows]) + "\n", encoding="utf-8")

    config, accepted, quarantine = quickstart(source, tmp_path)
    assert config["csv"] == {"multiline": True}
    assert len(accepted) == ROWS and quarantine.empty
    assert accepted["address"].str.contains("\n").sum() == ROWS // 3


@pytest.mark.parametrize("row_key", [False, True], ids=["key", "row-key"])
def test_a_line_with_another_number_of_fields_is_left_to_the_quarantine(tmp_path, row_key):
    lines = customer_lines()
    lines[30] += ",extra"
    if row_key:
        # No column identifies a row: the numbered copy must still hold the broken line for ingestion to quarantine.
        lines = [line.split(",", 1)[1] for line in lines]
        lines[60] = lines[0]
    source = tmp_path / "messy.csv"
    header = HEADER.split(",", 1)[1] if row_key else HEADER
    source.write_text("\n".join([header, *lines]) + "\n", encoding="utf-8")

    config, accepted, quarantine = quickstart(source, tmp_path, *(["--row-key"] if row_key else []))
    assert config["primary_key"] == ("row_number" if row_key else "unique_id")
    assert len(accepted) + len(quarantine) == ROWS and len(quarantine) == 1
    fields = len(header.split(","))
    assert quarantine["reason"].tolist() == [f"expected {fields + row_key} columns, found {fields + row_key + 1}"]
    assert quarantine["raw"].str.endswith(lines[30]).all()
    written = (tmp_path / "out" / "ci_pipeline.yaml").read_text()
    assert f"# csv: 1 line(s) have another number of fields than the header's {fields} (line 32)" in written


@pytest.mark.parametrize(
    ("text", "multiline"),
    [
        ('id,name,address\n1,Ann,"1 Main St\nApt 2"\n2,Bob,"3 Elm Rd, Oslo"\n', True),
        # Two unclosed quotes in one column: read over lines, the value holds a whole record and the record
        # around it has the header's five fields, so only the delimiters in the value tell.
        ('id,first,last,city,email\n1,"Ann,Lee,Oslo,a@x\n2,"Bob,Stone,Oslo,b@x\n3,Cy,Berg,Oslo,c@x\n', False),
        # One column, so no delimiter: a value of eight lines is an unclosed quote, not an address.
        ('name\n"Ann\nBob\nCy\nDee\nEve\nFay\nGus\n"Hal\nIda\n', False),
        # An odd number of quotes: the last one is never closed.
        ('id,name,address\n1,Ann,"1 Main St\nApt 2"\n2,"Bob,3 Elm Rd\n', False),
    ],
    ids=["address", "swallowed-record", "many-lines", "odd-quotes"],
)
def test_values_are_read_over_lines_only_when_that_reading_is_consistent(tmp_path, text, multiline):
    source = tmp_path / "file.csv"
    source.write_text(text, encoding="utf-8")
    frame = read_table(source)
    assert frame.attrs["csv"].get("multiline", False) is multiline
    if not multiline:
        assert {u.kind for u in frame.attrs["unread"]} == {"broken_quoting"}


def test_a_file_written_with_a_blank_after_each_comma_is_read_without_the_blanks(tmp_path):
    lines = [line.replace(",", ", ") for line in [HEADER, *customer_lines()]]
    source = tmp_path / "spaced.csv"
    source.write_text("\n".join(lines) + "\n", encoding="utf-8")
    config, accepted, quarantine = quickstart(source, tmp_path)
    assert config["csv"] == {"skip_initial_space": True}
    assert len(accepted) == ROWS and quarantine.empty
    assert not accepted["first_name"].str.startswith(" ").any() and accepted["first_name"].iloc[1] == "Bob"
    profile = pd.read_parquet(tmp_path / "out" / "lake" / "ci_pipeline" / "unify" / "customer_profile.parquet")
    assert not profile["FirstName"].dropna().str.startswith(" ").any()


def accented_lines(count: int = ROWS) -> list[str]:
    """Customers whose first names carry an accent (UTF-8 beyond ASCII on every line)."""
    return [line.replace(",", "é,", 2).replace("é,", ",", 1) for line in customer_lines(count)]


@pytest.mark.parametrize("row_key", [False, True], ids=["key", "row-key"])
def test_a_utf8_file_with_one_line_in_another_encoding_stays_utf8_and_that_line_is_quarantined(tmp_path, row_key):
    lines = accented_lines()
    if row_key:
        lines = [line.split(",", 1)[1] for line in lines]
        lines[60] = lines[0]
    header = HEADER.split(",", 1)[1] if row_key else HEADER
    appended = ("" if row_key else "c999,") + "Jörg,Müller,1970-01-01,Köln,jm@x.example"
    source = tmp_path / "mixed.csv"
    source.write_bytes(("\n".join([header, *lines]) + "\n").encode("utf-8") + (appended + "\n").encode("cp1252"))

    config, accepted, quarantine = quickstart(source, tmp_path, *(["--row-key"] if row_key else []))
    assert "encoding" not in config.get("csv", {})
    assert len(accepted) + len(quarantine) == ROWS + 1 and len(quarantine) == 1
    assert accepted["first_name"].str.endswith("é").all()  # not Ã©
    assert quarantine["kind"].tolist() == ["encoding"]
    assert quarantine["reason"].str.startswith("byte 0xf6 is not valid utf-8, though the rest of the file is").all()
    assert quarantine["raw"].str.contains("J\\xf6rg", regex=False).all()
    written = (tmp_path / "out" / "ci_pipeline.yaml").read_text()
    assert f"# csv: 1 line(s) are not UTF-8 as the rest of the file is (line {ROWS + 2})" in written


def test_a_file_half_utf8_half_windows_1252_is_refused_naming_both(tmp_path):
    lines = accented_lines(10)
    source = tmp_path / "mixed.csv"
    utf8, cp1252 = "\n".join([HEADER, *lines[:5]]) + "\n", "\n".join(lines[5:]) + "\n"
    source.write_bytes(utf8.encode("utf-8") + cp1252.encode("cp1252"))
    with pytest.raises(
        UserError, match=r"mixes two encodings: 5 line\(s\) are UTF-8 .* and 5 are not \(line 7: byte 0xe9\)"
    ):
        read_table(source)


@pytest.mark.parametrize(
    ("header", "suffix", "said"),
    [
        (
            f"Customer export 2024-05-01\n{HEADER}",
            "",
            "every one of the 91 lines has 6 fields where the header (line 1) has 1: a title above the header?",
        ),
        (
            # Blanks in the extra fields (empty ones are read as trailing delimiters of an export).
            HEADER,
            ", , ",
            "every one of the 90 lines has 8 fields where the header (line 1) has 6, the last 2 empty in every "
            "line: delete the trailing delimiters (',,'",
        ),
        (
            HEADER.replace("dob", '"date of\nbirth"'),
            "",
            "every one of the 90 lines has 6 fields where the header (line 1) has 4 (names: unique_id, first_name, "
            "surname, date of): fix the header line (a line break inside a quoted name",
        ),
    ],
    ids=["title-line", "trailing-commas", "header-line-break"],
)
def test_a_file_whose_every_line_is_left_out_says_why_not_that_it_has_no_rows(tmp_path, header, suffix, said):
    source = tmp_path / "file.csv"
    source.write_text("\n".join([header, *(line + suffix for line in customer_lines())]) + "\n", encoding="utf-8")
    with pytest.raises(UserError, match="^" + re.escape(f"{source}: {said}")):
        plan_quickstart(source, read_table(source))


def test_a_file_without_a_header_line_is_refused_as_such(tmp_path):
    source = tmp_path / "export.csv"
    source.write_text("1,Ann,Lee,ann@x.example,1980-01-31\n2,Bob,,bob@x.example,1975-03-02\n", encoding="utf-8")
    with pytest.raises(UserError, match=r"line 1 looks like a row of data, not a header \(1, ann@x.example, 1980"):
        read_table(source)
    # Years heading the columns of a pivoted export are names.
    source.write_text("customer_id,2023,2024\nC1,10,12\n", encoding="utf-8")
    assert read_table(source).columns.tolist() == ["customer_id", "2023", "2024"]
