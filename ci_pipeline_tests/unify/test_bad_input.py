"""Unify on awkward input: dates it cannot hold, guard splits and tables no rule can compare are counted and
reported, never a crash and never silent."""

from __future__ import annotations

import re
from collections import Counter

import dagster as dg
import pandas as pd
import pytest

from ci_pipeline.defs import unify as unify_defs
from ci_pipeline.defs.resources import shared_resources
from ci_pipeline.errors import UserError
from ci_pipeline.unify import unify
from ci_pipeline.unify.dates import parse_times
from ci_pipeline.unify.engine import prepare
from ci_pipeline.unify.normalize import Normalizer
from ci_pipeline.unify.probabilistic_method import model_records
from ci_pipeline.unify.records import PARTICLES, SUFFIX, TITLE, build_records, given_name_first, join_birth_date
from ci_pipeline_tests.unify.helpers import KEYS, config, frames
from ci_pipeline_tests.unify.test_assets import project

OUT_OF_RANGE = ["12/31/9999", "01/01/0001", "49950209", "12/07/7015"]


@pytest.mark.parametrize("dtype", ["string", "object"])
def test_dates_outside_the_range_are_missing_among_mixed_formats(dtype):
    values = pd.Series([*OUT_OF_RANGE, "2026-01-02", "03/04/2025", "31.12.2024", "1 Jan 2021", "no date", None])
    parsed = parse_times(values.astype(dtype))
    assert str(parsed.dtype) == "datetime64[ns, UTC]"
    assert parsed.isna().tolist() == [True] * 4 + [False] * 4 + [True] * 2
    assert parsed[4:8].dt.strftime("%Y-%m-%d").tolist() == ["2026-01-02", "2025-03-04", "2024-12-31", "2021-01-01"]


def test_typed_dates_outside_the_range_are_missing():
    # Parquet holds microseconds: a lake table may carry year 9999 as a real timestamp.
    typed = pd.Series(pd.to_datetime(["9999-12-31", "2026-01-02", None]).as_unit("us"))
    parsed = parse_times(typed)
    assert parsed.isna().tolist() == [True, False, True]
    assert parsed[1] == pd.Timestamp("2026-01-02", tz="UTC")


def test_a_birth_date_outside_the_range_normalizes_to_missing():
    out = Normalizer().apply(pd.Series(["12/31/9999", "1980-05-06", "0001-01-01"], dtype="string"), ("date",))
    assert out.isna().tolist() == [True, False, True] and out[1] == "1980-05-06"


def test_unify_counts_unreadable_birth_dates_and_matches_without_them():
    f = frames()
    f[("crm", "contacts")] = f[("crm", "contacts")].assign(dob=["12/31/9999", "1980-05-06", "1980-05-06", "no date"])
    raw = config().model_dump()
    raw["tables"][0]["columns"]["dob"] = "birth_date"
    r = unify(type(config()).model_validate(raw), f, KEYS)
    assert len(r.alternate_key) == 9
    # 12/31/9999 has a year, month and day (beyond what unify holds), "no date" none.
    assert r.stats["unreadable_dates"]["crm.contacts.dob"] == {"values": 2, "example": "12/31/9999", "components": 1}


def test_a_birth_date_in_three_columns_is_joined_and_its_unreadable_parts_counted():
    assert join_birth_date(
        pd.Series(["1967", "1980", None, "2001.0", "abc", "1990"], dtype="string"),
        pd.Series(["9", "12", "1", "2", "3", "13"]),
        pd.Series([27, 1, 5, 30, 4, 1]),
    ).tolist() == ["1967-09-27", "1980-12-01", pd.NA, "2001-02-30", pd.NA, pd.NA]
    f = frames()
    f[("crm", "contacts")] = f[("crm", "contacts")].assign(
        by=["1980", "1980", "1980", "1975"], bm=["5", "05", "2", None], bd=["6", "6.0", "30", "3"]
    )
    raw = config().model_dump()
    raw["tables"][0]["columns"].update(by="birth_year", bm="birth_month", bd="birth_day")
    unreadable: dict[str, dict] = {}
    records = build_records(type(config()).model_validate(raw), f, KEYS, unreadable=unreadable)
    dates = records.loc[(records["source"] == "crm") & (records["table"] == "contacts"), "birth_date"]
    assert dates.tolist() == ["1980-05-06", "1980-05-06", "1980-02-30", pd.NA]
    assert not {"by", "bm", "bd", "birth_year"} & set(records.columns)
    # February 30 is no day of the calendar (rules cannot read it); the missing month leaves the last one empty.
    assert unreadable == {"crm.contacts.by/bm/bd": {"values": 2, "example": "1980/2/30"}}
    # A part missing is shown empty in the example.
    f[("crm", "contacts")]["bm"] = [None, "5", "5", "5"]
    unreadable = {}
    build_records(type(config()).model_validate(raw), f, KEYS, unreadable=unreadable)
    assert unreadable["crm.contacts.by/bm/bd"] == {"values": 1, "example": "1980//6"}


def test_a_birth_date_in_parts_whose_year_has_two_digits_is_told_to_write_the_year_in_full():
    f = frames()
    f[("crm", "contacts")] = f[("crm", "contacts")].assign(
        by=["80", "1980", "72", "1975"], bm=["5", "05", "2", "4"], bd=["6", "6", "3", "31"]
    )
    raw = config().model_dump()
    raw["tables"][0]["columns"].update(by="birth_year", bm="birth_month", bd="birth_day")
    (warning,) = [w for w in prepare(type(config()).model_validate(raw), f, KEYS, None).warnings if "by/bm/bd" in w]
    assert warning.startswith("unify: crm.contacts.by/bm/bd: 3 value(s) are not dates unify can read (e.g. '80/5/6'")
    # The 31st of April is named as what it is, beside the range of years read.
    assert "not a day its month lacks such as 31 April" in warning
    assert warning.endswith(
        "; 2 of them have a year of one or two digits: write the year in full (1972, not 72), since unify does not "
        "guess the century of a birth"
    )


def test_a_year_of_birth_alone_is_written_as_four_digits_and_a_value_that_is_no_year_counted():
    f = frames()
    f[("crm", "contacts")] = f[("crm", "contacts")].assign(yob=["1980", "1980.0", "80", None])
    raw = config().model_dump()
    raw["tables"][0]["columns"]["yob"] = "birth_year"
    unreadable: dict[str, dict] = {}
    records = build_records(type(config()).model_validate(raw), f, KEYS, unreadable=unreadable)
    years = records.loc[(records["source"] == "crm") & (records["table"] == "contacts"), "birth_year"]
    assert years.tolist() == ["1980", "1980", pd.NA, pd.NA] and "birth_date" not in records.columns
    assert unreadable == {"crm.contacts.yob": {"values": 1, "example": "80"}}


def _dob_configs():
    """The test configuration with the contacts' ``dob`` mapped as the birth date: matched by rules, and by the
    probabilistic model."""
    raw = config().model_dump()
    raw["tables"][0]["columns"]["dob"] = "birth_date"
    rules_config = type(config()).model_validate(raw)
    raw["match"]["method"] = "probabilistic"
    return rules_config, type(config()).model_validate(raw)


def test_birth_dates_known_only_in_part_are_said_to_be_so_with_what_each_method_does():
    f = frames()
    f[("crm", "contacts")] = f[("crm", "contacts")].assign(dob=["1843----", "1843-05", "1980-05-06", None])
    rules_config, model_config = _dob_configs()
    (rules_warning,) = [w for w in prepare(rules_config, f, KEYS, None).warnings if "crm.contacts.dob" in w]
    assert "2 birth date(s) are known only in part, a year or a year and month (e.g. '1843----')" in rules_warning
    assert rules_warning.endswith("rules, the guard and merge read them as missing")
    prepared = prepare(model_config, f, KEYS, None)
    (model_warning,) = [w for w in prepared.warnings if "crm.contacts.dob" in w]
    assert model_warning.endswith("read them as missing; the probabilistic model compares the parts known")
    compared = model_records(model_config, prepared.records, prepared.prep.normalizer)["birth_date"]
    assert compared.head(4).tolist() == ["1843-00-00", "1843-05-00", "1980-05-06", pd.NA]
    # Beside values that are no date at all, the general warning counts them.
    f[("crm", "contacts")] = f[("crm", "contacts")].assign(dob=["1843----", "1845-01-81", "1980-05-06", None])
    (model_warning,) = [w for w in prepare(model_config, f, KEYS, None).warnings if "crm.contacts.dob" in w]
    assert "2 value(s) are not dates" in model_warning
    assert model_warning.endswith("(1 of them known only in part, a year or a year and month)")


def test_birth_dates_unify_cannot_hold_are_still_compared_by_the_probabilistic_model():
    # Historical records: a date before 1677 is beyond a nanosecond timestamp, a typo'd day beyond any calendar.
    f = frames()
    f[("crm", "contacts")] = f[("crm", "contacts")].assign(dob=["1634-08-01", "1845-01-81", "1980-05-06", None])
    rules_config, model_config = _dob_configs()
    (rules_warning,) = [w for w in prepare(rules_config, f, KEYS, None).warnings if "crm.contacts.dob" in w]
    assert rules_warning.endswith("they count as missing")
    prepared = prepare(model_config, f, KEYS, None)
    (model_warning,) = [w for w in prepared.warnings if "crm.contacts.dob" in w]
    assert "2 value(s) are not dates" in model_warning
    assert model_warning.endswith("the probabilistic model still compares the year, month and day of 2 of them")
    compared = model_records(model_config, prepared.records, prepared.prep.normalizer)["birth_date"]
    assert compared.head(4).tolist() == ["1634-08-01", "1845-01-81", "1980-05-06", pd.NA]
    # Text with no year, month and day in it is not said to be compared.
    f[("crm", "contacts")] = f[("crm", "contacts")].assign(dob=["unknown", "1845-01-81", "1980-05-06", None])
    (model_warning,) = [w for w in prepare(model_config, f, KEYS, None).warnings if "crm.contacts.dob" in w]
    assert "2 value(s) are not dates" in model_warning and model_warning.endswith("day of 1 of them")


@pytest.mark.parametrize(
    "modified_at",
    [
        pd.Series(["12/31/9999", "2026-03-01", "01/01/0001", "49950209"], dtype="string"),
        pd.Series(["12/07/7015", "2026-03-01", "not a date", "01/01/0001"], dtype=object),
        pd.Series(pd.to_datetime(["9999-12-31", "2026-03-01", "0001-01-01", "4995-02-09"]).as_unit("us")),
    ],
    ids=["string", "object", "typed"],
)
def test_unify_counts_unreadable_recency_dates_and_still_runs(modified_at):
    f = frames()
    f[("crm", "contacts")] = f[("crm", "contacts")].assign(modified_at=modified_at)
    raw = config().model_dump()
    raw["tables"][0]["dedup"]["winner"] = {"policy": "most_recent", "column": "modified_at"}
    raw["merge"] = {"fields": {"Phone": {"policy": "most_recent"}}}
    r = unify(type(config()).model_validate(raw), f, KEYS)
    assert len(r.alternate_key) == 9
    # c2 and c3 share an e-mail: c2's date is the only one read, so it is the most recent
    assert r.dedup[("crm", "contacts")].set_index("Key").loc["c3", "WinnerKey"] == "c2"
    unreadable = r.stats["unreadable_dates"]["crm.contacts.modified_at"]
    assert unreadable["values"] == 3
    warning = [w for w in r.warnings if "crm.contacts.modified_at" in w]
    assert len(warning) == 1 and "3 value(s) are not dates" in warning[0] and "count as missing" in warning[0]
    assert repr(unreadable["example"]) in warning[0]


def test_readable_zoned_dates_are_not_written_as_text_to_be_counted(monkeypatch):
    # Formatting zoned timestamps costs more than the rest of the record frame: only unparsed values are counted.
    from pandas.core.arrays import DatetimeArray

    f = frames()
    f[("crm", "contacts")] = f[("crm", "contacts")].assign(
        changed_at=pd.to_datetime(["2026-03-01 10:00", "2026-03-02 11:00", None, "2026-03-04 12:00"], utc=True)
    )
    raw = config().model_dump()
    raw["tables"][0]["dedup"]["winner"] = {"policy": "most_recent", "column": "changed_at"}
    cfg = type(config()).model_validate(raw)
    unreadable: dict = {}

    def refuse(*args, **kwargs):
        raise AssertionError("a parsed timestamp was formatted as text")

    monkeypatch.setattr(DatetimeArray, "_format_native_types", refuse)
    records = build_records(cfg, f, KEYS, unreadable=unreadable)
    assert unreadable == {} and records["winner_time"].notna().sum() == 3


def test_readable_dates_give_no_warning():
    r = unify(config(), frames(), KEYS)
    assert r.stats["unreadable_dates"] == {} and r.warnings == []
    assert r.stats["guard_splits"]["groups"] == 0


def identical_people(n: int) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "contact_id": [f"c{i:03d}" for i in range(n)],
            "first_name": ["Pat"] * n,
            "last_name": ["Doe"] * n,
            "email": [None] * n,
            "phone": [None] * n,
            "street": ["1 Main Street"] * n,
            "city": ["Springfield"] * n,
            "modified_at": ["2026-01-01"] * n,
        }
    ).astype("string")


def test_an_empty_primary_key_names_the_setting_to_check():
    f = frames()
    f[("loyalty", "members")].loc[1, "member_id"] = " "
    with pytest.raises(UserError) as caught:
        build_records(config(), f, KEYS)
    assert "check sources.loyalty.tables.members.primary_key" in str(caught.value)


def test_a_group_cut_at_the_size_cap_is_warned_with_counts():
    f = frames()
    f[("crm", "contacts")] = identical_people(300)
    raw = config().model_dump()
    raw["tables"][0]["dedup"]["rules"] = [
        {"name": "name_street", "conditions": [{"field": "first_name"}, {"field": "last_name"}, {"field": "street"}]}
    ]
    raw["guard"] = {"max_cluster_size": 20}
    r = unify(type(config()).model_validate(raw), f, KEYS)
    crm = r.alternate_key[r.alternate_key.DataSourceName == "crm"]
    assert crm.CustomerId.nunique() == 15 and crm.groupby("CustomerId").size().eq(20).all()
    splits = r.stats["guard_splits"]
    assert (splits["size_cap_groups"], splits["size_cap_records"], splits["size_cap_customers"]) == (1, 300, 15)
    warning = [w for w in r.warnings if "over-merge guard" in w]
    assert len(warning) == 1
    assert "1 group(s) of linked records (300 records, the largest 300) into 15 customers of at most 20" in warning[0]
    # Where one customer truly holds that many records (a company's), the fix is the cap, not blanking the value.
    assert warning[0].endswith("raise unify.guard.max_cluster_size above the largest group")


def test_a_conflict_split_alone_is_counted_but_not_warned():
    f = frames()
    crm = identical_people(2).assign(birth=["1980-01-01", "1990-01-01"])
    f[("crm", "contacts")] = crm
    raw = config().model_dump()
    raw["tables"][0]["columns"]["birth"] = "birth_date"
    raw["tables"][0]["dedup"]["rules"] = [{"name": "name", "conditions": [{"field": "first_name"}]}]
    raw["guard"] = {"conflict_fields": ["birth_date"]}
    r = unify(type(config()).model_validate(raw), f, KEYS)
    assert r.stats["guard_splits"]["groups"] == 1 and r.stats["guard_splits"]["size_cap_groups"] == 0
    assert not [w for w in r.warnings if "over-merge guard" in w]


def test_a_table_no_rule_can_compare_is_warned_with_counts():
    f = frames()
    # loyalty maps first and last name, phone and tier; the only rule its records could meet needs a phone
    f[("loyalty", "members")] = f[("loyalty", "members")].assign(phone=pd.Series([None, "N/A"], dtype="string"))
    r = unify(config(), f, KEYS)
    assert r.stats["uncomparable_records"]["loyalty.members"] == 2
    warning = [w for w in r.warnings if "loyalty.members" in w]
    assert len(warning) == 1 and "any of its 2 records" in warning[0] and "a customer of its own" in warning[0]
    # crm has records some rule compares (and one it does not): counted, not warned
    assert r.stats["uncomparable_records"].get("crm.contacts", 0) < 4
    assert not [w for w in r.warnings if "table crm.contacts" in w]


def test_an_unmapped_rule_field_makes_the_table_uncomparable():
    raw = config().model_dump()
    raw["tables"][2]["columns"] = {"tier": "custom"}
    f = frames()
    f[("loyalty", "members")] = f[("loyalty", "members")][["member_id", "tier"]]
    r = unify(type(config()).model_validate(raw), f, KEYS)
    assert r.stats["uncomparable_records"]["loyalty.members"] == 2
    assert any("table loyalty.members" in w and "it maps tier" in w for w in r.warnings)


def test_a_table_of_one_customer_per_record_is_counted_but_not_warned():
    # Declared so (the quick start's table of distinct customer references): no rule is expected to compare it.
    raw = config().model_dump()
    raw["tables"][2] |= {"columns": {"tier": "custom"}, "one_customer_per_record": True}
    f = frames()
    f[("loyalty", "members")] = f[("loyalty", "members")][["member_id", "tier"]]
    r = unify(type(config()).model_validate(raw), f, KEYS)
    assert r.stats["uncomparable_records"]["loyalty.members"] == 2
    assert not any("table loyalty.members" in w for w in r.warnings)


def test_unify_asset_logs_the_warnings_and_records_the_counts(tmp_path):
    cfg, lake = project(tmp_path)
    crm = frames()[("crm", "contacts")].assign(modified_at=["12/31/9999", "2026-03-01", "01/01/0001", None])
    lake.write_parquet("ci_pipeline/crm/contacts.parquet", crm)
    loyalty = frames()[("loyalty", "members")].assign(phone=pd.Series([None, None], dtype="string"))
    lake.write_parquet("ci_pipeline/loyalty/members.parquet", loyalty)
    defs_assets = [*unify_defs.build(cfg).assets, *(dg.SourceAsset(dg.AssetKey(list(k))) for k in KEYS)]
    instance = dg.DagsterInstance.ephemeral()
    result = dg.materialize(defs_assets, resources=shared_resources(cfg), instance=instance)
    assert result.success
    logged = [e.user_message for e in instance.all_logs(result.run_id) if e.level == 30]  # logging.WARNING
    assert any("crm.contacts.modified_at: 2 value(s) are not dates" in m for m in logged)
    assert any("table loyalty.members" in m and "any of its 2 records" in m for m in logged)
    stats = [e for e in result.get_asset_materialization_events() if e.asset_key == unify_defs.key("unify_stats")]
    metadata = stats[0].materialization.metadata
    unreadable = {row.data["column"]: row.data for row in metadata["unreadable_dates"].records}
    assert unreadable["crm.contacts.modified_at"]["values"] == 2
    uncomparable = {row.data["table"]: row.data["records"] for row in metadata["uncomparable_records"].records}
    assert uncomparable["loyalty.members"] == 2
    assert metadata["guard_split groups"].value == 0


def test_a_source_column_named_like_the_unified_id_is_published_as_source_customer_id():
    # Public customer tables often carry their own customer_id; mapped as custom it must not clash with CustomerId.
    f = frames()
    f[("crm", "contacts")] = f[("crm", "contacts")].assign(customer_id=["A1", "A2", "A3", "A4"])
    raw = config().model_dump()
    raw["tables"][0]["columns"]["customer_id"] = "custom"
    r = unify(type(config()).model_validate(raw), f, KEYS)
    profile = r.customer_profile
    assert sorted(profile["SourceCustomerId"].dropna()) == ["A1", "A2", "A4"]  # A2 and A3 share an e-mail
    assert profile["CustomerId"].notna().all() and profile["CustomerId"].is_unique


def test_names_split_from_a_full_name_are_the_first_and_last_words_python_finds():
    names = [
        "  Ann  Marie   Lee ",
        "Solo",
        "",
        None,
        "ab\tcd",
        "xy\x1czw",
        "Zoë\u00a0Brontë",
        "jo\u2003ka lu",
        "Smith, John",
        "Smith Jr.",
        "Lee, Ann B.",
        "one\ntwo",
        " ",
        "\u00a0lead",
        "Mr. John Smith",
        "Smith, Dr Jane",
        "Sir Walter Scott",
        "Mrs",
        "Misty Day",
        "thomas clifford, 1st baron clifford of chudleigh",
        "James Van Wijk",
        "Maria de la Cruz",
        "Van Wijk",
        "Jenson, Bishop",
    ]
    f = frames()
    shop = pd.DataFrame({"customer_id": [f"s{i}" for i in range(len(names))], "full_name": names}).astype("string")
    f[("shop", "customers")] = shop.assign(email=None, phone=None, address=None, town=None).astype("string")
    records = build_records(config(), f, KEYS)
    got = records[records["table"] == "customers"].set_index("key").loc[shop["customer_id"]]
    # As Python would: trailing initials and suffixes dropped, "Last, First" turned round, titles before the name
    # dropped, then str.split(), the last name with the particles before it.
    full = got["full_name"].fillna("").map(lambda v: re.sub(SUFFIX, "", v.strip(), flags=re.IGNORECASE))
    full = given_name_first(full.astype("string")).fillna("")
    words = [re.sub(TITLE, "", v.strip(), flags=re.IGNORECASE).split() for v in full]

    def last(w: list[str]) -> str:
        start = len(w) - 1
        while start > 1 and w[start - 1].lower() in PARTICLES:
            start -= 1
        return " ".join(w[start:]) if len(w) > 1 else "-"

    # A lone word is the name the other names hold it as more often (a tie: the first name, as most of these names
    # are written given name first): "Smith" of "Smith Jr." is a last name, as in "Mr. John Smith".
    held = [w for w in words if len(w) > 1]
    as_first = Counter(w[0].casefold() for w in held)
    as_last = Counter(last(w).casefold() for w in held)
    lone_last = [len(w) == 1 and as_last[w[0].casefold()] > as_first[w[0].casefold()] for w in words]
    expected = [
        ("-", w[0]) if moved else (w[0] if w else "-", last(w)) for w, moved in zip(words, lone_last, strict=True)
    ]
    assert got["first_name"].fillna("-").tolist() == [first for first, _ in expected]
    assert got["last_name"].fillna("-").tolist() == [last_name for _, last_name in expected]
    assert got["last_name"].tolist()[:2] == ["Lee", pd.NA] and got["first_name"].tolist()[8] == "John"
    assert got["first_name"].tolist()[-10:-1] == [
        "John",
        "Jane",
        "Walter",
        pd.NA,
        "Misty",
        "thomas",
        "James",
        "Maria",
        "Van",
    ]
    assert got["last_name"].tolist()[-10:-1] == [
        "Smith",
        "Smith",
        "Scott",
        pd.NA,
        "Day",
        "clifford",
        "Van Wijk",
        "de la Cruz",
        "Wijk",
    ]
    # One word before a comma is a last name, even when the given name after it reads like a title.
    assert (got["first_name"].iloc[-1], got["last_name"].iloc[-1]) == ("Bishop", "Jenson")


def test_a_lone_word_in_a_column_written_last_name_first_is_the_last_name():
    f = frames()
    names = {"Smith, Robert": "s1", "Davies": "s2", "Garcia, Jose": "s3"}
    shop = pd.DataFrame({"customer_id": list(names.values()), "full_name": list(names)}).astype("string")
    f[("shop", "customers")] = shop.assign(email=None, phone=None, address=None, town=None).astype("string")
    got = build_records(config(), f, KEYS).set_index("key").loc[["s1", "s2", "s3"], ["first_name", "last_name"]]
    assert got.fillna("-").to_numpy().tolist() == [["Robert", "Smith"], ["-", "Davies"], ["Jose", "Garcia"]]
    # Where names are written given name first, a lone word stays the first name.
    f[("shop", "customers")] = f[("shop", "customers")].assign(full_name=["Robert Smith", "Davies", "Jose Garcia"])
    got = build_records(config(), f, KEYS).set_index("key").loc["s2", ["first_name", "last_name"]]
    assert got.fillna("-").tolist() == ["Davies", "-"]


@pytest.mark.parametrize(
    "names",
    [
        ["Smith, Robert", "Davies, Anna", "Smith, Jose", "Garcia, Jose", "DAVIES", "Anna", "Quinn"],
        ["Robert Smith", "Anna Davies", "Jose Smith", "Jose Garcia", "DAVIES", "Anna", "Quinn"],
    ],
)
def test_a_lone_word_is_the_name_the_columns_other_names_hold_it_as(names):
    f = frames()
    keys = [f"s{i}" for i in range(len(names))]
    shop = pd.DataFrame({"customer_id": keys, "full_name": names}).astype("string")
    f[("shop", "customers")] = shop.assign(email=None, phone=None, address=None, town=None).astype("string")
    got = build_records(config(), f, KEYS).set_index("key").loc[keys[4:], ["first_name", "last_name"]]
    # Davies is a last name there, Anna a given name; Quinn, held as neither, follows the column's order.
    quinn = ["-", "Quinn"] if "," in names[0] else ["Quinn", "-"]
    assert got.fillna("-").to_numpy().tolist() == [["-", "DAVIES"], ["Anna", "-"], quinn]


def test_a_table_mapping_a_whole_name_and_its_parts_fills_each_record_from_what_it_holds():
    # One table fed by two systems: one writes the whole name, the other first and last name apart.
    raw = config().model_dump()
    raw["tables"][0]["columns"]["name"] = "full_name"
    f = frames()
    crm = f[("crm", "contacts")].assign(name=None)
    crm.loc[crm.index[0], ["first_name", "last_name", "name"]] = [None, None, "Smith, Dr Jane"]
    crm.loc[crm.index[1], "name"] = "Other Name"
    f[("crm", "contacts")] = crm
    records = build_records(type(config()).model_validate(raw), f, KEYS)
    rows = records[records["table"] == "contacts"].set_index("key")
    whole_only, both = rows.loc[crm.iloc[0]["contact_id"]], rows.loc[crm.iloc[1]["contact_id"]]
    assert (whole_only["first_name"], whole_only["last_name"]) == ("Jane", "Smith")
    # A record holding both keeps both as written; one holding only the parts gets a whole name from them.
    assert both["full_name"] == "Other Name" and both["first_name"] == crm.iloc[1]["first_name"]
    parts_only = rows.loc[crm.iloc[2]["contact_id"]]
    assert parts_only["full_name"] == f"{crm.iloc[2]['first_name']} {crm.iloc[2]['last_name']}"
