"""Birth dates written differently by each table are read, per column, into one form that rules, the model and the
profile share."""

from __future__ import annotations

import pandas as pd
import pytest

from ci_pipeline.config.unify import UnifyConfig
from ci_pipeline.unify import unify
from ci_pipeline.unify.dates import DateOrder, read_birth_dates
from ci_pipeline.unify.engine import date_order_note, prepare
from ci_pipeline.unify.probabilistic_method import model_records
from ci_pipeline.unify.records import typed_dates

KEYS = {("crm", "contacts"): "id", ("shop", "customers"): "id"}


def read(values: list) -> tuple[list, DateOrder | None]:
    dates, order = read_birth_dates(pd.Series(values, dtype="string"))
    return dates.tolist(), order


def test_a_birth_date_known_only_in_part_is_written_with_00_for_the_parts_not_known():
    # Not the 1st of January: two people born in 1843 would agree on every part of one date.
    written = ["1843", "1843----", "1843-05", "1843-5", "184305--", "1843-05-??", "1843xxxx", "00/00/1975"]
    dates, _ = read(written)
    assert dates == [
        "1843-00-00",
        "1843-00-00",
        "1843-05-00",
        "1843-05-00",
        "1843-05-00",
        "1843-05-00",
        "1843-00-00",
        "1975-00-00",
    ]
    assert read(["1843-05-02", "18430502"])[0] == ["1843-05-02", "1843-05-02"]


def test_a_column_whose_days_show_above_12_in_first_place_is_read_day_first():
    dates, order = read(["01/04/1990", "22/03/1997", "01/81/1835", "12/03/1997 00:00:00", None, " "])
    # 01/04/1990 is 1 April: the column's 22/03/1997 shows the order. A keyed month 81 keeps its components.
    assert dates == ["1990-04-01", "1997-03-22", "1835-81-01", "1997-03-12", pd.NA, pd.NA]
    assert (order.day_first, order.written, order.day_first_only, order.month_first_only) == (True, 4, 1, 0)
    assert order.pattern == "dd/mm/yyyy"


def test_a_column_whose_days_show_above_12_in_second_place_is_read_month_first():
    dates, order = read(["04/01/1990", "03/22/1997"])
    assert dates == ["1990-04-01", "1997-03-22"] and order.pattern == "mm/dd/yyyy"


@pytest.mark.parametrize(("value", "expected"), [("01.02.1990", "1990-02-01"), ("01/02/1990", "1990-01-02")])
def test_without_evidence_dots_read_day_first_and_slashes_month_first(value, expected):
    dates, order = read([value])
    assert dates == [expected] and order.evidence == 0 and order.against == 0


def test_in_a_column_of_both_orders_a_date_only_the_other_order_reads_is_read_that_way():
    # Read month first (as many values of each kind, slashes): 25/10/2005 can only be the 25th of October.
    dates, order = read_birth_dates(pd.Series(["31/01/1980", "01/31/1980", "25/10/2005", "10/25/2005", "1950-19-05"]))
    assert not order.day_first
    # Year first, a month over 12 is a typing error (of 1950-09-05), kept as written.
    assert dates.tolist() == ["1980-01-31", "1980-01-31", "2005-10-25", "2005-10-25", "1950-19-05"]
    # Neither order reads it: kept as written, for the warning on unreadable dates.
    assert read_birth_dates(pd.Series(["40/40/1990"]))[0].tolist() == ["1990-40-40"]
    # As rare as keying errors (1 against 12): a month keyed 17 for 07, compared as written.
    typo, order = read_birth_dates(pd.Series([f"{d}/07/1980" for d in range(13, 25)] + ["05/17/1850"]))
    assert not order.mixed and typo.iloc[-1] == "1850-17-05"


def test_a_date_of_year_0_is_what_systems_write_for_an_unknown_one_and_is_missing():
    dates, _ = read(["00/00/0000", "0000-00-00", "01/02/0000", "1990-00-00"])
    # A real year with an unknown month and day keeps what it says.
    assert dates == [pd.NA, pd.NA, pd.NA, "1990-00-00"]


def test_year_first_compact_typed_and_spelled_out_dates_are_written_alike():
    dates, order = read(["1857-1-2", "1956/04/09", "19560409", "3 April 1990", "unknown", "01041990"])
    # Text that is no date is kept as written (counted as unreadable, never silently a date).
    assert dates == ["1857-01-02", "1956-04-09", "1956-04-09", "1990-04-03", "unknown", "01041990"]
    assert order is None
    typed, order = read_birth_dates(pd.Series(pd.to_datetime(["1990-04-03", None])))
    assert typed.tolist() == ["1990-04-03", pd.NA] and order is None


def test_the_order_is_noted_only_when_the_values_do_not_show_it_plainly():
    plain = DateOrder(True, 10, 6, 0, "/")
    assert date_order_note("shop.customers.dob", plain) is None
    # A few the other way round are keying errors (4,884 against 122 in a public data set), not two formats.
    assert date_order_note("shop.customers.dob", DateOrder(True, 15614, 4884, 122, "/")) is None
    unknown = date_order_note("shop.customers.dob", DateOrder(False, 3, 0, 0, "/"))
    assert "3 birth date(s)" in unknown and "mm/dd/yyyy" in unknown and '"%d/%m/%Y"' in unknown
    mixed = date_order_note("shop.customers.dob", DateOrder(True, 10, 6, 2, "/"))
    assert "dd/mm/yyyy (6 can only be read so), but 2" in mixed


def tables() -> dict[tuple[str, str], pd.DataFrame]:
    crm = pd.DataFrame(
        {"id": ["c1", "c2"], "last_name": ["Nicholls", "Berg"], "dob": ["1857-04-01", "1990-05-06"]}
    ).astype("string")
    shop = pd.DataFrame(
        {
            "id": ["s1", "s2", "s3"],
            "last_name": ["Nicholls", "Nicholls", "Berg"],
            "dob": ["01/04/1857", "04/01/1857", "23/07/1990"],
        }
    ).astype("string")
    return {("crm", "contacts"): crm, ("shop", "customers"): shop}


def config(method: str = "rules") -> UnifyConfig:
    columns = {"last_name": "last_name", "dob": "birth_date"}
    rule = {"name": "name_and_birth_date", "conditions": [{"field": "last_name"}, {"field": "birth_date"}]}
    return UnifyConfig.model_validate(
        {
            "tables": [
                {"source": "crm", "table": "contacts", "columns": columns},
                {"source": "shop", "table": "customers", "columns": columns},
            ],
            "match": {"method": method, "rules": [rule] if method == "rules" else []},
        }
    )


def test_one_birth_date_written_iso_in_one_table_and_day_first_in_another_matches():
    r = unify(config(), tables(), KEYS)
    by_key = r.alternate_key.set_index("AlternateValue")["CustomerId"]
    # s1's 01/04/1857 is 1 April (its table writes 23/07/1990): c1's 1857-04-01. s2's 04/01/1857 is 4 January.
    assert by_key["s1"] == by_key["c1"]
    assert by_key["s2"] != by_key["c1"]
    dates = r.customer_profile["BirthDate"].dropna().astype("string")
    assert sorted(dates) == ["1857-01-04", "1857-04-01", "1990-05-06", "1990-07-23"]


def test_the_model_blocks_and_compares_the_dates_as_one_form():
    prepared = prepare(config("probabilistic"), tables(), KEYS, None)
    compared = model_records(config("probabilistic"), prepared.records, prepared.prep.normalizer)
    assert compared["birth_date"].tolist() == ["1857-04-01", "1990-05-06", "1857-04-01", "1857-01-04", "1990-07-23"]
    assert not [w for w in prepared.warnings if "birth date(s) written with the year last" in w]


def test_the_profile_types_birth_dates_and_keeps_what_is_no_whole_date_beside_them():
    written = ["1980-01-02", "1643-05-06", "1843-00-00", "1843-05-00", "1980-02-30", "unknown", None]
    profiles = pd.DataFrame({"CustomerId": list("abcdefg"), "BirthDate": written, "City": "Oslo"}).astype("string")
    typed = typed_dates(profiles)
    assert list(typed.columns) == ["CustomerId", "BirthDate", "BirthDateText", "City"]
    assert str(typed["BirthDate"].dtype) == "date32[day][pyarrow]"
    assert typed["BirthDate"].astype("string").tolist() == ["1980-01-02", "1643-05-06", *[pd.NA] * 5]
    # A date known in part as ISO 8601 writes it; a day the month does not have and other text as written.
    assert typed["BirthDateText"].tolist() == [pd.NA, pd.NA, "1843", "1843-05", "1980-02-30", "unknown", pd.NA]
