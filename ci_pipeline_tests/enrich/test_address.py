"""The address provider: standard US addresses, status counts, nothing dropped, the fast path equal to the parser."""

from __future__ import annotations

import json
import random

import pandas as pd
import pytest
from faker import Faker

from ci_pipeline.enrich import address
from ci_pipeline.enrich.address import AddressProvider, build, fast_street_lines
from ci_pipeline.enrich.provider import EnrichmentFailed, EnrichmentInputs
from ci_pipeline.lake import Lake

COLUMNS = ["CustomerId", "Address1", "City", "State", "PostalCode", "Country"]


def _run(rows: list[tuple], **kwargs):
    profiles = pd.DataFrame(rows, columns=COLUMNS).astype("string")
    return AddressProvider(**kwargs).enrich(EnrichmentInputs(profiles=profiles))


def _values(result) -> dict[str, dict]:
    values = [json.loads(v) for v in result.values["Values"]]
    return dict(zip(result.values["CustomerId"], values, strict=True))


def test_each_status_is_counted_and_no_address_is_dropped():
    result = _run(
        [
            ("c1", "12 oak street, apt 4", "n johnathan", "new york", "1234", "USA"),
            ("c2", "12 OAK ST APT 4", "NORTH JOHNATHAN", "NY", "01234", "US"),
            ("c3", "hello world", "Springfield", "IL", "62701", "US"),
            ("c4", None, "Springfield", "IL", "62701", None),
            ("c5", "Rua Augusta 12", " Lisboa ", None, "1100-148", "Portugal"),
            ("c6", None, None, None, None, None),
            ("c7", "   ", "", None, None, None),
        ]
    )
    assert result.counts == {
        "profiles": 7,
        "processed_changed": 1,
        "processed_unchanged": 1,
        "not_processed": 5,
        "not_processed_empty": 2,
        "not_processed_no_street": 1,
        "not_processed_unparseable": 1,
        "not_processed_not_us": 1,
    }
    values = _values(result)
    # Blank text is no address: c6 and c7 are counted as empty and have no row; every other profile has one.
    assert sorted(values) == ["c1", "c2", "c3", "c4", "c5"]
    assert values["c1"] == {
        "Street1": "12 OAK ST APT 4",
        "City": "NORTH JOHNATHAN",
        "StateOrProvince": "NY",
        "ZipOrPostalCode": "01234",
        "CountryOrRegion": "US",
        "Address": "12 OAK ST APT 4, NORTH JOHNATHAN, NY 01234, US",
        "Status": "Changed",
        "Reason": None,
    }
    assert values["c2"]["Status"] == "Unchanged"
    assert {k: values["c3"][k] for k in ("Street1", "Status", "Reason")} == {
        "Street1": "HELLO WORLD",
        "Status": "NotProcessed",
        "Reason": address.REASON_UNPARSEABLE,
    }
    assert (values["c4"]["Street1"], values["c4"]["Reason"]) == (None, address.REASON_NO_STREET)
    assert values["c4"]["Address"] == "SPRINGFIELD, IL 62701, US"
    assert values["c5"]["Street1"] == "RUA AUGUSTA 12"
    assert values["c5"]["City"] == "LISBOA"
    assert values["c5"]["CountryOrRegion"] == "PORTUGAL"
    assert values["c5"]["Reason"] == address.REASON_NOT_US


def test_post_office_and_rural_route_boxes_take_their_usps_form():
    lines = ["P.O. Box 77", "post office box #9", "Rural Route 2 Box 5", "HC 68 Box 23a", "PO Box 12 Apt 3", "PO Box"]
    result = _run([(f"c{i}", line, "Salem", "OR", "97301", "US") for i, line in enumerate(lines)])
    streets = [(v["Street1"], v["Status"]) for v in _values(result).values()]
    assert streets == [
        ("PO BOX 77", "Changed"),
        ("PO BOX 9", "Changed"),
        ("RR 2 BOX 5", "Changed"),
        ("HC 68 BOX 23A", "Changed"),
        ("PO BOX 12 APT 3", "NotProcessed"),  # a box with a unit is not a form Publication 28 knows
        ("PO BOX", "NotProcessed"),
    ]
    again = _run([("x", "PO BOX 77", "SALEM", "OR", "97301", "US")])
    assert _values(again)["x"]["Status"] == "Unchanged"


def test_zip_codes_get_their_lost_zeros_back_and_one_form():
    result = _run(
        [
            ("a", "1 Main St", "Boston", "MA", "2108", "US"),
            ("b", "1 Main St", "Boston", "MA", "021081234", "US"),
            ("c", "1 Main St", "Boston", "MA", "2108-1234", "US"),
            ("d", "1 Main St", "Boston", "MA", "02108 - 1234", "US"),
            ("e", "1 Main St", "Boston", "MA", "ABC", "US"),
        ]
    )
    zips = {k: v["ZipOrPostalCode"] for k, v in _values(result).items()}
    assert zips == {"a": "02108", "b": "02108-1234", "c": "02108-1234", "d": "02108-1234", "e": "ABC"}


def test_country_names_default_country_and_columns_are_configurable():
    rows = [
        ("a", "1 Main St", "Boston", "Massachusetts", "02108", None),
        ("b", "1 Main St", "Boston", "ma", None, "u.s.a."),
    ]
    values = _values(_run(rows))
    assert [values[k]["CountryOrRegion"] for k in "ab"] == ["US", "US"]
    assert [values[k]["StateOrProvince"] for k in "ab"] == ["MA", "MA"]
    # A Canadian customer base: an empty country is Canada, which is not parsed as a US address.
    canada = _values(_run(rows, default_country="CA"))
    assert canada["a"]["Reason"] == address.REASON_NOT_US
    assert canada["b"]["Status"] == "Changed"
    renamed = pd.DataFrame({"CustomerId": ["x"], "street_line": ["5 Elm Avenue"], "town": ["Salem"]}).astype("string")
    provider = build({"columns": {"street": "street_line", "city": "town"}})
    got = _values(provider.enrich(EnrichmentInputs(profiles=renamed)))
    assert got["x"]["Address"] == "5 ELM AVE, SALEM, US"


def test_each_distinct_street_line_is_parsed_once_and_output_is_sorted_and_repeatable():
    rows = [(f"c{i:03d}", "12 oak street" if i % 2 else "7 N Maple Rd", "X", "CT", "06001", "US") for i in range(200)]
    rows.reverse()
    first = _run(rows)
    assert first.report == {
        "distinct_street_lines": 2,
        "street_lines_fast_path": 1,
        "street_lines_cached": 0,
        "street_lines_parser": 1,
    }
    assert first.values["CustomerId"].tolist() == sorted(r[0] for r in rows)
    again = _run(rows)
    pd.testing.assert_frame_equal(first.values, again.values)


def test_the_fast_path_gives_exactly_what_the_parser_gives():
    fake = Faker("en_US")
    fake.seed_instance(11)
    rng = random.Random(11)
    names = [fake.last_name() for _ in range(150)] + [fake.first_name() for _ in range(50)]
    names += ["1st", "22nd", "3rd", "104th", "Oak", "Hill", "Center", "Grove", "Market", "Spring", "Ridge"]
    types = sorted(address.COMMON_STREET_TYPES) + ["Hill", "Grove", "Village", "Loop", "Highway"]
    units = ["", " Apt 4", " #15", " # 2", ", Unit 3", " Suite 100", " Apartment 7B", " Ste 5", " apt a"]
    lines = pd.Series(
        [
            f"{rng.randint(1, 99999)} {rng.choice(names)} {rng.choice(types).title()}{rng.choice(['', '.'])}"
            f"{rng.choice(units)}"
            for _ in range(3000)
        ],
        dtype="string",
    )
    fast = fast_street_lines(lines)
    hits = fast.notna()
    assert hits.mean() > 0.5  # the common shape does take the fast path
    parser = pd.Series([address._parse_one(s) for s in lines[hits]], index=lines[hits].index, dtype="string")
    mismatch = fast[hits] != parser
    assert not mismatch.any(), pd.DataFrame({"line": lines[hits], "fast": fast[hits], "parser": parser})[mismatch]


def test_a_profile_without_address_columns_and_bad_params_are_clear_errors():
    profiles = pd.DataFrame({"CustomerId": ["a"], "Email": ["a@b.com"]})
    with pytest.raises(EnrichmentFailed, match="none of the address columns Address1, City"):
        AddressProvider().enrich(EnrichmentInputs(profiles=profiles))
    with pytest.raises(
        EnrichmentFailed, match=r"params\.colums: not a parameter .* takes columns, default_country, type"
    ):
        build({"colums": {}})
    with pytest.raises(EnrichmentFailed, match=r"params\.columns\.zip: not an address part"):
        build({"columns": {"zip": "Zip"}})
    with pytest.raises(EnrichmentFailed, match=r"params\.columns: give a mapping"):
        build({"columns": ["Address1"]})
    with pytest.raises(EnrichmentFailed, match=r"params\.default_country"):
        build({"default_country": " "})


def test_a_column_named_in_params_that_the_profile_lacks_fails_instead_of_publishing_everyone_not_processed():
    profiles = pd.DataFrame([("a", "1 Main St", "Boston", "MA", "02108", "US")], columns=COLUMNS).astype("string")
    with pytest.raises(
        EnrichmentFailed,
        match=r"address\.params\.columns\.street: the customer profile has no column 'Adress1' \(did you mean "
        r"'Address1'\?\); name one of its columns \(Address1, City",
    ):
        build({"columns": {"street": "Adress1"}}).enrich(EnrichmentInputs(profiles=profiles))
    # A default column the profile lacks is no mistake: that part is empty.
    assert _values(_run([("a", "1 Main St", "Boston", "MA", "02108", None)]))["a"]["Status"] == "Changed"


def test_the_provider_name_comes_from_the_project():
    class Context:
        enrichment = "addresses"
        project = "contoso"

    assert build({}, Context()).name == "contoso"
    assert build({}).name == "ci_pipeline"
    profiles = pd.DataFrame({"CustomerId": ["a"], "Address1": ["1 Main St"]}).astype("string")
    typed = build({"type": "EnhancedAddress"}).enrich(EnrichmentInputs(profiles=profiles))
    assert typed.values["EnrichmentType"].tolist() == ["EnhancedAddress"]
    assert _run([("a", "1 Main St", None, None, None, None)]).values["EnrichmentType"].tolist() == ["Address"]
    with pytest.raises(EnrichmentFailed, match=r"params\.type: give the EnrichmentType"):
        build({"type": ""})
    with pytest.raises(EnrichmentFailed, match=r"enrich\.enrichments\.addresses\.params\.x"):
        build({"x": 1}, Context())


def test_standardizing_a_standard_address_again_changes_nothing():
    fake = Faker("en_US")
    fake.seed_instance(5)
    rng = random.Random(5)
    rows = [
        (
            f"c{i:04d}",
            fake.street_address(),
            fake.city(),
            fake.state() if i % 2 else fake.state_abbr(),
            fake.zipcode_plus4() if i % 3 == 0 else fake.zipcode(),
            rng.choice(["US", "USA", "United States", None]),
        )
        for i in range(400)
    ]
    first = _run(rows)
    assert first.counts["processed_changed"] == 400
    again = [
        (c, v["Street1"], v["City"], v["StateOrProvince"], v["ZipOrPostalCode"], v["CountryOrRegion"])
        for c, v in _values(first).items()
    ]
    second = _run(again)
    assert second.counts["processed_unchanged"] == 400
    assert [v["Address"] for v in _values(second).values()] == [v["Address"] for v in _values(first).values()]


def test_a_refresh_parses_only_street_lines_it_has_not_seen(tmp_path):
    lake = Lake.local(tmp_path)

    class Context:
        enrichment = "addresses"
        project = "ci_pipeline"
        cache_dir = lake.path("ci_pipeline/enrich/cache")

    Context.lake = lake
    rows = [
        ("a", "7 N Maple Rd", "X", "CT", "06001", "US"),
        ("b", "Apt 3 hello", "X", "CT", "06001", "US"),
        ("c", "12 oak street", "X", "CT", "06001", "US"),
    ]
    profiles = pd.DataFrame(rows, columns=COLUMNS).astype("string")
    first = build({}, Context()).enrich(EnrichmentInputs(profiles=profiles))
    assert (first.report["street_lines_parser"], first.report["street_lines_cached"]) == (2, 0)
    cache = "ci_pipeline/enrich/cache/addresses.street_lines.parquet"
    assert lake.exists(cache)
    more = pd.concat([profiles, pd.DataFrame([("d", "9 S Elm Rd", "X", "CT", "06001", "US")], columns=COLUMNS)])
    second = build({}, Context()).enrich(EnrichmentInputs(profiles=more.astype("string")))
    assert (second.report["street_lines_parser"], second.report["street_lines_cached"]) == (1, 2)
    pd.testing.assert_frame_equal(second.values.iloc[:3], first.values)
    assert _values(second)["b"]["Reason"] == address.REASON_UNPARSEABLE  # an unparseable line is cached as such

    # Results of another parser version are not used; a broken cache is parsed around, with a warning.
    stale = lake.read_parquet(cache).assign(parser="usaddress 0.0")
    lake.write_parquet(cache, stale)
    assert build({}, Context()).enrich(EnrichmentInputs(profiles=profiles)).report["street_lines_parser"] == 2
    lake.write_bytes(cache, b"not parquet")
    broken = build({}, Context()).enrich(EnrichmentInputs(profiles=profiles))
    assert broken.report["street_lines_parser"] == 2 and "not read" in broken.warnings[0]
    pd.testing.assert_frame_equal(broken.values, first.values)


def test_a_street_named_after_a_direction_keeps_its_name():
    lines = {
        "a": ("70 West Terrace", "70 WEST TER"),
        "b": ("12 North Road", "12 NORTH RD"),
        "c": ("5 South Street, Apt 4", "5 SOUTH ST APT 4"),
        "d": ("9 East Avenue #2", "9 EAST AVE # 2"),
        "e": ("3 Northwest Court Unit 7", "3 NORTHWEST CT UNIT 7"),
        "f": ("8 North Street North", "8 NORTH ST N"),
        "g": ("70 West Main Street", "70 W MAIN ST"),  # a direction before a name stays a pre-directional
        "h": ("4 East West Highway", "4 E WEST HWY"),
        "i": ("70 W Terrace", "70 W TER"),  # abbreviated, the name stays as written
        "j": ("15 West Park Avenue", "15 W PARK AVE"),
    }
    result = _run([(k, line, "Salem", "OR", "97301", "US") for k, (line, _) in lines.items()])
    assert {k: v["Street1"] for k, v in _values(result).items()} == {k: want for k, (_, want) in lines.items()}
    again = _run([(k, want, "SALEM", "OR", "97301", "US") for k, (_, want) in lines.items()])
    assert again.counts["processed_unchanged"] == len(lines)


@pytest.mark.parametrize(
    "line",
    ["74 Kingston Street, Sec 478 Hd Paringa, Mosman QLD 2067", "123 Main St, Springfield IL 62701"],
    ids=["outside the US", "a US one"],
)
def test_a_whole_address_in_the_street_column_is_kept_whole(line):
    # The street alone would drop its city, state and postal code (and read an Australian suburb as a US city).
    values = _values(_run([("c1", line, None, None, None, None)]))["c1"]
    assert (values["Street1"], values["Status"]) == (line.upper(), "NotProcessed")
    assert values["Reason"] == address.REASON_UNPARSEABLE
