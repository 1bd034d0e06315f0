"""A declared date format that most of a column's values are not written in is reported before a run, with the
format that reads them; a sound column, or one with a few bad values, is not."""

from __future__ import annotations

import pytest

from ci_pipeline.config import load_config
from ci_pipeline.validation import project_problems

CONFIG = """
sources:
  crm:
    owner: sales-ops
    tables:
      contacts:
        format: csv
        path: contacts.csv
        primary_key: id
        columns:
          dob: {type: date, format: "%(format)s"}
"""


def problems(tmp_path, dobs: list[str], fmt: str) -> list[str]:
    (tmp_path / "contacts.csv").write_text("id,dob\n" + "".join(f"r{i},{d}\n" for i, d in enumerate(dobs)))
    (tmp_path / "ci_pipeline.yaml").write_text(CONFIG % {"format": fmt})
    return project_problems(load_config(tmp_path / "ci_pipeline.yaml"))


# Days 1-28 of a month, written day first: most days are above 12.
DAY_FIRST = [f"{d:02d}/{m:02d}/19{50 + d}" for d in range(1, 29) for m in (3, 11)]


def test_day_first_dates_declared_month_first_are_reported_with_the_format_that_reads_them(tmp_path):
    (problem,) = problems(tmp_path, DAY_FIRST, "%m/%d/%Y")
    assert problem.startswith("sources.crm.tables.contacts.columns.dob: 32 of the first 56 values in ")
    assert "contacts.csv are not valid dates (format %m/%d/%Y" in problem and "e.g. '13/03/1963'" in problem
    assert problem.endswith('56 of them read as %d/%m/%Y: set format: "%d/%m/%Y"')


def test_timestamps_no_common_format_reads_are_given_the_format_their_values_show_never_told_to_stay_text(tmp_path):
    # Left text, they would be read one order per column, month first where no day is above 12: not the fix.
    stamps = [f"{d:02d}/02/2025 17:{d:02d}" for d in range(1, 29)]
    (problem,) = problems(tmp_path, stamps, "%Y-%m-%d %H:%M:%S")
    assert problem.endswith('their values are written dd/mm/yyyy: set format: "%d/%m/%Y %H:%M"')
    (problem,) = problems(tmp_path, [f"02/{d:02d}/2025 17:00" for d in range(1, 12)] * 2, "%Y-%m-%d %H:%M:%S")
    assert 'set format: "%m/%d/%Y %H:%M" (mm/dd/yyyy) or "%d/%m/%Y %H:%M" (dd/mm/yyyy)' in problem
    assert "string" not in problem


def test_dates_outside_the_accepted_range_are_told_to_widen_it(tmp_path):
    old = [f"18{d:02d}-01-02" for d in range(10, 40)]
    (problem,) = problems(tmp_path, old, "%Y-%m-%d")
    assert "30 of the first 30 values" in problem and problem.endswith("1900-01-01..2199-12-31: widen date_range")


@pytest.mark.parametrize(
    "dobs",
    [DAY_FIRST, DAY_FIRST[:24] + ["not a date"] * 20, ["31/12/1999"] * 19],
    ids=["sound", "a minority bad", "too few to tell"],
)
def test_a_sound_column_or_too_few_values_are_not_reported(tmp_path, dobs):
    fmt = "%m/%d/%Y" if dobs[0] == "31/12/1999" else "%d/%m/%Y"
    assert problems(tmp_path, dobs, fmt) == []


def test_a_short_declared_column_one_letter_off_gets_a_did_you_mean(tmp_path):
    (tmp_path / "contacts.csv").write_text("id,DOB\nr1,1990-01-02\n")
    (tmp_path / "ci_pipeline.yaml").write_text((CONFIG % {"format": "%Y-%m-%d"}).replace("dob:", "D0B:"))
    (problem,) = project_problems(load_config(tmp_path / "ci_pipeline.yaml"))
    assert "columns.D0B: declared, but" in problem and "(did you mean 'DOB'?)" in problem


@pytest.mark.parametrize(("delimiter", "shown"), [(";", ";"), ("\t", "\\t")])
def test_a_header_that_reads_as_one_column_names_the_delimiter_it_looks_separated_by(tmp_path, delimiter, shown):
    (tmp_path / "contacts.csv").write_text(f"id{delimiter}dob\nr1{delimiter}1990-01-02\n")
    (tmp_path / "ci_pipeline.yaml").write_text(CONFIG % {"format": "%Y-%m-%d"})
    found = project_problems(load_config(tmp_path / "ci_pipeline.yaml"))
    assert f"it looks '{shown}'-separated: set csv.delimiter: \"{shown}\" for this table" in found[0]
    assert found[0].startswith("sources.crm.tables.contacts.csv.delimiter: the header of ")
