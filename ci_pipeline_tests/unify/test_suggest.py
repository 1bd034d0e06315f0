"""`suggest-mapping` on tables with the column names of public schemas: record linkage, census, e-commerce."""

from __future__ import annotations

import pandas as pd
import pytest

from ci_pipeline.cli import main
from ci_pipeline.config.unify import UnifyTable
from ci_pipeline.lake import Lake
from ci_pipeline.unify.suggest import customer_table_verdict, mapping_yaml, suggest_mapping

#: The FEBRL record-linkage data sets' columns (dates of birth written yyyymmdd).
FEBRL = {
    "rec_id": ["rec-1-org", "rec-1-dup-0", "rec-2-org"],
    "given_name": ["michaela", "michaela", "courtney"],
    "surname": ["neumann", "neuman", "painter"],
    "street_number": ["8", "8", "12"],
    "address_1": ["stanley street", "stanley st", "pinkerton circuit"],
    "address_2": ["miami", "miami", "bega flats"],
    "suburb": ["winston hills", "winston hills", "richlands"],
    "postcode": ["4223", "4223", "4560"],
    "state": ["nsw", "nsw", "vic"],
    "date_of_birth": ["19151111", "19151111", "19160426"],
    "soc_sec_id": ["5304218", "5304218", "4066625"],
}

#: A census-style person table.
CENSUS = {
    "household_id": ["H1", "H1", "H2"],
    "person_number": ["1", "2", "1"],
    "first_name": ["Ann", "Bo", "Cy"],
    "middle_initial": ["J", "K", None],
    "last_name": ["Lee", "Lee", "Ng"],
    "sex": ["F", "M", "F"],
    "age": ["34", "36", "71"],
    "race_ethnicity": ["White", "Asian", "Black"],
    "county": ["King", "King", "Pierce"],
    "state": ["WA", "WA", "WA"],
    "zip": ["98101", "98101", "98402"],
    "birth_year": ["1990", "1988", "1953"],
    "ssn": ["123-45-6789", "987-65-4321", "111-22-3333"],
}

#: An e-commerce platform's customers export: billing and shipping addresses, opt-in flags, money and timestamps.
SHOP = {
    "customer_id": ["1", "2", "3"],
    "email": ["a@x.com", "b@y.com", "c@z.com"],
    "email_opt_in": ["true", "false", "true"],
    "first_name": ["A", "B", "C"],
    "last_name": ["X", "Y", "Z"],
    "phone_number": ["+1 206 555 0101", "(206) 555-0102", "206.555.0103"],
    "billing_address_line1": ["1 Main St", "2 Oak Ave", "3 Elm Rd"],
    "billing_address_line2": ["Apt 1", None, "Suite 5"],
    "billing_city": ["Seattle", "Tacoma", "Olympia"],
    "billing_postcode": ["98101", "98402", "98501"],
    "shipping_city": ["Seattle", "Tacoma", "Olympia"],
    "shipping_postcode": ["98101", "98402", "98501"],
    "created_at": ["2024-01-02T03:04:05Z", "2024-02-02T03:04:05Z", "2024-03-02T03:04:05Z"],
    "total_spent": ["12345.67", "1234567.89", "9876543.21"],
    "DOB": ["1980-01-02", "1990-02-03", "2000-03-04"],
}

#: Point-of-sale transactions: keys, a yyyymmdd event date, amounts, epoch seconds.
TRANSACTIONS = {
    "transaction_id": ["t1", "t2", "t3"],
    "customer_id": ["1", "2", "3"],
    "event_date": ["20230115", "20230216", "20230317"],
    "amount": ["12.50", "3.99", "100.00"],
    "product_sku": ["SKU-1", "SKU-2", "SKU-3"],
    "card_last4": ["1234", "5678", "9012"],
    "created_ts": ["1672531200", "1672617600", "1672704000"],
}


def suggested(columns: dict) -> dict[str, str]:
    return suggest_mapping(pd.DataFrame(columns)).set_index("column")["suggested"].to_dict()


def test_febrl_columns():
    assert suggested(FEBRL) == {
        "rec_id": "",
        "given_name": "first_name",
        "surname": "last_name",
        "street_number": "",
        "address_1": "street",
        "address_2": "",
        "suburb": "city",
        "postcode": "postal_code",
        "state": "state",
        "date_of_birth": "birth_date",
        "soc_sec_id": "custom",
    }


def test_census_columns_words_not_substrings():
    got = suggested(CENSUS)
    # "race_ethnicity" holds the letters of "city", and an SSN the digits of a phone number.
    assert got["race_ethnicity"] == "" and got["ssn"] == "custom" and got["middle_initial"] == "middle_name"
    assert got["sex"] == "gender" and got["zip"] == "postal_code" and got["birth_year"] == "birth_year"
    assert got["household_id"] == got["person_number"] == got["county"] == ""


def test_identifiers_are_custom_and_usable_in_rules():
    rows = suggest_mapping(pd.DataFrame(CENSUS)).set_index("column")
    assert "usable in match rules ({field: ssn})" in rows.loc["ssn", "reason"]
    # Without a telling name, values shaped like social security numbers are not taken for phones either.
    got = suggested({"c": ["123-45-6789", "987-65-4321", "111-22-3333"]})
    assert got == {"c": "custom"}


def test_one_column_per_type_and_the_mapping_validates():
    suggestions = suggest_mapping(pd.DataFrame(SHOP))
    got = suggestions.set_index("column")
    assert got.loc["billing_city", "suggested"] == "city" and got.loc["shipping_city", "suggested"] == "custom"
    assert "which billing_city takes" in got.loc["shipping_city", "reason"]
    # email_opt_in holds yes and no, not addresses: no e-mail, and no attribute to match on.
    assert got.loc["email", "suggested"] == "email" and got.loc["email_opt_in", "suggested"] == ""
    assert got.loc["created_at", "suggested"] == got.loc["total_spent", "suggested"] == ""
    assert got.loc["DOB", "suggested"] == "birth_date" and got.loc["phone_number", "suggested"] == "phone"
    typed = suggestions[~suggestions["suggested"].isin(["", "custom"])]
    assert typed["suggested"].is_unique
    for columns in (SHOP, FEBRL, CENSUS):
        frame = suggest_mapping(pd.DataFrame(columns))
        mapping = dict(zip(frame["column"], frame["suggested"], strict=True))
        UnifyTable.model_validate({"source": "s", "table": "t", "columns": {c: k for c, k in mapping.items() if k}})


#: People with name variants: a whole name, a first and last name joined, the parts, and a place of birth.
PERSONS = {
    "full_name": ["thomas clifford, baron of chudleigh", "tom chudleigh", "mary anne smith"],
    "first_and_surname": ["thomas chudleigh", "tom chudleigh", "mary smith"],
    "first_name": ["thomas", "tom", "mary"],
    "surname": ["chudleigh", "chudleigh", "smith"],
    "dob": ["1630-08-01", "1630-08-01", "1801-02-03"],
    "birth_place": ["devon", "west devon", "london"],
}


def test_a_joined_first_and_last_name_is_a_whole_name_and_surname_is_the_last_name():
    got = suggest_mapping(pd.DataFrame(PERSONS)).set_index("column")
    assert got["suggested"].to_dict() == {
        "full_name": "full_name",
        "first_and_surname": "",
        "first_name": "first_name",
        "surname": "last_name",
        "dob": "birth_date",
        "birth_place": "city",
    }
    # The second whole-name column is left unmapped, saying why: compared too, it would count the name twice.
    assert "which full_name takes" in got.loc["first_and_surname", "reason"]
    assert "count the name twice" in got.loc["first_and_surname", "reason"]
    # Of two columns a name pattern takes, the one the type names as a whole wins.
    ties = suggested({"maiden_surname": ["x", "y", "z"], "surname": ["a", "b", "c"]})
    assert ties == {"maiden_surname": "", "surname": "last_name"}


def test_a_column_named_for_birth_whose_values_are_not_dates_is_not_a_birth_date():
    rows = suggest_mapping(pd.DataFrame({"birth_info": ["born abroad", "unknown", "at home"]})).set_index("column")
    assert rows.loc["birth_info", "suggested"] == ""
    assert "the name says birth date but 0% of values look like dates" in rows.loc["birth_info", "reason"]


def test_a_birth_date_in_three_columns_is_mapped_as_its_parts_and_a_year_alone_as_a_year():
    parts = {"YearOfBirth": [1967, 1980, 2001], "birth_month": ["9", "12", "2"], "dob_day": ["27", "1", "30"]}
    rows = suggest_mapping(pd.DataFrame({"surname": ["a", "b", "c"], **parts})).set_index("column")
    assert rows["suggested"].tolist() == ["last_name", "birth_year", "birth_month", "birth_day"]
    assert "the birth date in parts (joined into one date)" in rows.loc["dob_day", "reason"]
    UnifyTable(source="s", table="t", columns=dict(rows["suggested"].items()))  # validates
    # A year alone is a year of birth (a two-digit one stays custom); parts beside a whole date are no parts.
    year = suggest_mapping(pd.DataFrame({"surname": ["a"], "YearOfBirth": [1967], "yob": ["67"]})).set_index("column")
    assert year.loc["YearOfBirth", "suggested"] == "birth_year" and year.loc["yob", "suggested"] == "custom"
    UnifyTable(source="s", table="t", columns={"YearOfBirth": "birth_year"})  # validates
    beside = suggest_mapping(pd.DataFrame({**parts, "birthday": ["1967-09-27", "1980-12-01", "2001-02-03"]}))
    assert dict(zip(beside["column"], beside["suggested"], strict=True))["birthday"] == "birth_date"
    assert not {"birth_year", "birth_month", "birth_day"} & set(beside["suggested"])
    # Named so but not months: the year alone.
    months = suggest_mapping(pd.DataFrame({**parts, "birth_month": ["Sep", "Dec", "Feb"]}))
    assert dict(zip(months["column"], months["suggested"], strict=True)) == {
        "YearOfBirth": "birth_year",
        "birth_month": "",
        "dob_day": "",
    }


def test_a_transactions_table_is_not_a_customer_table():
    suggestions = suggest_mapping(pd.DataFrame(TRANSACTIONS))
    assert set(suggestions["suggested"]) == {""}
    reasons = suggestions.set_index("column")["reason"]
    assert reasons["event_date"].startswith("100% of values look like dates")
    assert reasons["created_ts"].startswith("the name says it is a date or time")
    assert "does not look like a customer table" in customer_table_verdict(suggestions)
    assert customer_table_verdict(suggest_mapping(pd.DataFrame(SHOP))) is None
    with pytest.raises(ValueError, match="no column has a suggested semantic type"):
        mapping_yaml(suggestions, "pos", "transactions")


CONFIG = """
lake: {url: lake}
sources:
  pos:
    owner: me
    tables:
      transactions: {format: csv, path: t.csv, primary_key: transaction_id}
      people: {format: csv, path: p.csv, primary_key: rec_id}
"""


def test_command_says_when_a_table_is_not_a_customer_table(tmp_path, capsys):
    (tmp_path / "ci_pipeline.yaml").write_text(CONFIG)
    lake = Lake.local(tmp_path / "lake")
    lake.write_parquet("ci_pipeline/pos/transactions.parquet", pd.DataFrame(TRANSACTIONS))
    lake.write_parquet("ci_pipeline/pos/people.parquet", pd.DataFrame(FEBRL))
    config = str(tmp_path / "ci_pipeline.yaml")
    assert main(["suggest-mapping", "pos", "transactions", "--config", config]) == 0
    out = capsys.readouterr().out
    assert "pos.transactions: this does not look like a customer table" in out and "columns:" not in out
    assert main(["suggest-mapping", "pos", "people", "--config", config]) == 0
    out = capsys.readouterr().out
    assert "        suburb: city  # medium: column name" in out and "        soc_sec_id: custom  # high:" in out


def test_a_key_named_ref_is_left_unmapped_and_said_to_be_on_the_profile_already():
    rows = suggest_mapping(pd.DataFrame({"Ref": ["rec-1-org", "rec-1-dup-0", "rec-2-org"], "name": ["a b"] * 3}))
    ref = rows.set_index("column").loc["Ref"]
    assert ref["suggested"] == "" and "leave it unmapped" in ref["reason"] and "'custom'" not in ref["reason"]


def test_dates_written_with_the_month_name_and_given_family_names_are_recognised():
    rows = suggest_mapping(
        pd.DataFrame(
            {
                "born": ["3 April 1990", "12 Dec 1985", "April 3, 1990", "3-Apr-1990"],
                "given": ["Ann", "Bo", "Cy", "Di"],
                "family": ["Lee", "Moe", "Ng", "Oz"],
            }
        )
    ).set_index("column")
    assert rows["suggested"].to_dict() == {"born": "birth_date", "given": "first_name", "family": "last_name"}
    assert rows.loc["born", "reason"] == "name and 100% of values look like dates"
    # Only as whole names: a family's size is no last name.
    assert suggested({"family_size": ["2", "3", "4"], "given_at": ["x", "y", "z"]}) == {
        "family_size": "",
        "given_at": "",
    }


def test_a_table_holding_only_a_city_is_told_so():
    verdict = customer_table_verdict(suggest_mapping(pd.DataFrame({"town": ["Leeds", "York"], "n": ["1", "2"]})))
    assert "its only customer attribute is city" in verdict


def test_a_column_named_for_a_phone_or_email_whose_values_are_something_else_is_not_proposed_as_one():
    frame = pd.DataFrame(
        {
            "phone_or_town": ["Leeds", "York", "Bath", "Hull"],
            "contact_email": ["n/a", "ask at desk", "none", "-"],
            "phone": ["+44 113 496 0000", "0113 496 0001", None, "n/a"],
        }
    )
    rows = suggest_mapping(frame).set_index("column")
    assert rows.loc["phone_or_town", "suggested"] == ""
    assert "the name says phone but 0% of values look like phone" in rows.loc["phone_or_town", "reason"]
    assert rows.loc["contact_email", "suggested"] == ""
    # Half the values or more look like the type: the name decides, as before.
    assert rows.loc["phone", "suggested"] == "phone"


def test_names_grouped_under_one_prefix_and_the_details_of_identity_documents():
    # A schema that groups a name's and an address's parts under one prefix, and writes beside each identity
    # document's number its country, state or type.
    got = suggested(
        {
            "PRIMARY_NAME_FIRST": ["Anna", "Bo", "Cy"],
            "PRIMARY_NAME_LAST": ["Lee", "Ng", "Ox"],
            "PRIMARY_NAME_FULL": ["Anna Lee", "Bo Ng", "Cy Ox"],
            "PRIMARY_NAME_ORG": ["Acme", "Initech", "Globex"],
            "ADDR_LINE1": ["1 Main St", "2 Oak Rd", "3 Elm Ave"],
            "ADDR_COUNTRY": ["US", "US", "CA"],
            "PASSPORT_NUMBER": ["X123", "Y456", "Z789"],
            "PASSPORT_COUNTRY": ["US", "US", "CA"],
            "DRIVERS_LICENSE_STATE": ["NV", "CA", "TX"],
            "TAX_ID_TYPE": ["SSN", "SSN", "EIN"],
        }
    )
    assert got["PRIMARY_NAME_FIRST"] == "first_name" and got["PRIMARY_NAME_LAST"] == "last_name"
    assert got["PRIMARY_NAME_FULL"] == "full_name" and got["PRIMARY_NAME_ORG"] == "company"
    assert got["ADDR_LINE1"] == "street" and got["ADDR_COUNTRY"] == "country"
    assert got["PASSPORT_NUMBER"] == "custom"
    assert got["PASSPORT_COUNTRY"] == got["DRIVERS_LICENSE_STATE"] == got["TAX_ID_TYPE"] == ""
    reason = suggest_mapping(pd.DataFrame({"PASSPORT_COUNTRY": ["US"]})).set_index("column").loc["PASSPORT_COUNTRY"]
    assert "the country of an identity document" in reason["reason"]


def test_the_columns_of_common_crm_exports():
    # Dynamics 365 prefixes every part of an address alike and writes ids as one word; HubSpot writes the country
    # and the state as "Country/Region" and "State/Region"; a Salesforce export carries an unused phone field.
    got = suggested(
        {
            "contactid": ["0f1e", "a2b3", "c4d5"],
            "parentcustomerid": ["9a", "9b", "9c"],
            "address1_line1": ["1 Main St", "2 Oak Rd", "3 Elm Ave"],
            "address1_city": ["London", "Glasgow", "Leeds"],
            "address1_stateorprovince": ["Kent", "Lanark", "Yorks"],
            "address1_postalcode": ["SW1A 1AA", "G1 1AA", "LS1 1AA"],
            "address1_country": ["UK", "UK", "UK"],
            "Country/Region": ["UK", "US", "UK"],
            "State/Region": ["Kent", "NY", "Yorks"],
            "Account Name": ["Acme", "Initech", "Globex"],
            "MobilePhone": [None, None, None],
        }
    )
    assert got["contactid"] == got["parentcustomerid"] == "" and got["MobilePhone"] == ""
    assert got["address1_line1"] == "street" and got["address1_city"] == "city"
    assert got["address1_postalcode"] == "postal_code" and got["Account Name"] == "company"
    # One column per type: the address's state and country keep theirs, the region columns are kept as custom.
    assert {got["address1_stateorprovince"], got["State/Region"]} == {"state", "custom"}
    assert {got["address1_country"], got["Country/Region"]} == {"country", "custom"}
    reason = suggest_mapping(pd.DataFrame({"MobilePhone": [None, ""]})).set_index("column").loc["MobilePhone"]
    assert reason["reason"].startswith("empty in every row")


def test_an_employers_address_and_identifier_are_not_the_persons_and_a_slashed_phone_is_a_phone():
    # A payroll form holds the employer's address beside the person's mailing address: compared as the person's,
    # the employer's would join colleagues (and split one person's two forms from two employers).
    got = suggested(
        {
            "employer_id": ["95", "12", "95"],
            "employer_name": ["Dairy Queen", "Baymont Inn", "Dairy Queen"],
            "employer_street_number": ["264", "9217", "264"],
            "employer_street_name": ["hallmont dr", "drakewood rd", "hallmont dr"],
            "employer_city": ["Anytown", "Anytown", "Anytown"],
            "employer_zipcode": ["00000", "00000", "00000"],
            "mailing_address_street_name": ["interlake ave n", "w elverta rd", "oak st"],
            "mailing_address_zipcode": ["00000", "00001", "00002"],
            "phone": ["310/246-1501", "818/762-1221", "212/555-0100"],
        }
    )
    assert got["employer_name"] == "company"
    assert got["employer_id"] == got["employer_street_number"] == got["employer_street_name"] == ""
    assert got["employer_city"] == got["employer_zipcode"] == ""
    assert got["mailing_address_street_name"] == "street" and got["mailing_address_zipcode"] == "postal_code"
    assert got["phone"] == "phone"
    assert suggested({"addr": ["435 S. La Cienega Blvd.", "12224 Ventura Blvd."]})["addr"] == "street"
    reason = suggest_mapping(pd.DataFrame({"employer_city": ["Anytown"]})).set_index("column").loc["employer_city"]
    assert "the organisation's city, not the person's" in reason["reason"]


#: A birth date in three columns of whole numbers, years spread over decades as customers' birth years are.
DAYS, MONTHS, YEARS = ["3", "17", "28", "9"], ["1", "12", "5", "7"], ["1950", "1987", "1962", "2001"]


@pytest.mark.parametrize(
    "names",
    [
        ("dob_day", "dob_mon", "dob_year"),
        ("bd_dd", "bd_mm", "bd_yyyy"),
        ("birth_day", "birth_mth", "birth_yr"),
        ("DayOfBirth", "MonthOfBirth", "YearOfBirth"),
        ("day", "month", "year"),
        ("dd", "mo", "yyyy"),
    ],
)
def test_a_birth_date_in_three_columns_sharing_a_prefix_or_plain_day_month_year_is_mapped_as_its_parts(names):
    day, month, year = names
    frame = pd.DataFrame({"surname": ["a", "b", "c", "d"], day: DAYS, month: MONTHS, year: YEARS})
    rows = suggest_mapping(frame).set_index("column")
    assert rows["suggested"].to_dict() == {
        "surname": "last_name",
        day: "birth_day",
        month: "birth_month",
        year: "birth_year",
    }
    assert f"with {year}, {month}, {day}, the birth date in parts" in rows.loc[day, "reason"]
    UnifyTable(source="s", table="t", columns=dict(rows["suggested"].items()))  # validates


def test_plain_day_month_year_are_a_birth_date_only_in_a_customer_table_and_with_years_of_birth():
    # The day, month and year of an order, in a table of orders: no customer's birth date.
    orders = suggested({"order_no": ["1", "2", "3", "4"], "day": DAYS, "month": MONTHS, "year": YEARS})
    assert set(orders.values()) == {""}
    # In a customer table, years within a few years of each other are the date of something else (a sign-up).
    recent = ["2021", "2022", "2023", "2024"]
    signup = suggested({"surname": ["a", "b", "c", "d"], "day": DAYS, "month": MONTHS, "year": recent})
    assert signup == {"surname": "last_name", "day": "", "month": "", "year": ""}
    # A prefix that does not say birth names another date, whatever its years.
    other = suggested({"surname": ["a", "b", "c", "d"], "wed_day": DAYS, "wed_month": MONTHS, "wed_year": YEARS})
    assert other == {"surname": "last_name", "wed_day": "", "wed_month": "", "wed_year": ""}
    # RecordLinkage's two-letter by, bm, bd are not guessed.
    terse = suggested({"surname": ["a", "b", "c", "d"], "bd": DAYS, "bm": MONTHS, "by": YEARS})
    assert terse == {"surname": "last_name", "bd": "", "bm": "", "by": ""}


@pytest.mark.parametrize("name", ["street_number", "house_number", "house_no", "HouseNr", "hnum", "building_no"])
def test_a_house_number_written_apart_from_the_street_is_left_out_of_matching(name):
    # Mapped as custom it was compared on its own, as an identifier of the person: a differing number cost a pair far
    # more than a differing street (reported on ePBRN's patient records: customers' F1 0.9956 mapped, 0.9992 not).
    rows = suggest_mapping(pd.DataFrame({name: ["8", "12", "8"], "street": ["stanley st", "oak rd", "stanley st"]}))
    row = rows.set_index("column").loc[name]
    assert row["suggested"] == "" and row["reason"].startswith("a house number: part of the address, not an identifier")
    assert "left out of matching" in row["reason"] and "write it into the street column" in row["reason"]


@pytest.mark.parametrize(
    "name", ["label_true", "label", "truth", "true_id", "cluster", "match_id", "ent_id", "entity_id", "group_id"]
)
def test_a_label_of_who_is_who_in_a_labelled_file_is_never_compared(name):
    # Splink's fake_1000 names its truth `cluster`, ePBRN `match_id`; a labelled file's 9-10 digit labels had been
    # proposed as phone numbers by their values.
    labels = ["123456789", "2345678901", "123456789", "987654321"]
    rows = suggest_mapping(pd.DataFrame({name: labels, "surname": ["a", "b", "a", "c"]})).set_index("column")
    assert rows.loc[name, "suggested"] == ""
    assert rows.loc[name, "reason"].startswith("a label of who is who (a truth or cluster label): never compared")


def test_unformatted_digits_are_a_phone_only_when_the_name_says_so():
    digits = ["4155550101", "2125550199", "3105550142", "7185550123"]
    got = suggest_mapping(pd.DataFrame({"code": digits, "mobile": digits, "tel": ["+14155550101"] * 4}))
    rows = got.set_index("column")
    assert rows.loc["code", "suggested"] == "" and rows.loc["mobile", "suggested"] == "phone"
    assert rows.loc["mobile", "confidence"] == "high"
    # Written as phones are (a country code, spaces, brackets, dashes), the values alone still say phone.
    written = suggested({"c": ["+44 113 496 0000", "(206) 555-0102", "206.555.0103", "0113 496 0001"]})
    assert written == {"c": "phone"}
    # A nine-digit ZIP code written without its dash is no phone either.
    assert suggested({"zip": ["981011234", "984021111", "985010001"]}) == {"zip": "postal_code"}


def test_names_in_two_numbered_columns_and_an_address_line_are_recognised_by_their_values():
    # The ONS census's columns: forename and surname as pername1 and pername2, the address line as enumcap.
    got = suggest_mapping(
        pd.DataFrame(
            {
                "pername1": ["JOHN", "MARY", "PETER", "SUSAN", "ANNE-MARIE"],
                "pername2": ["SMITH", "O'NEIL", "TAYLOR", "BROWN", "JONES"],
                "enumcap": ["64 HIGHFIELD ROAD", "1 Church St", "7A MILL LANE", "22 park avenue", "FLAT 2"],
            }
        )
    ).set_index("column")
    assert got["suggested"].to_dict() == {"pername1": "first_name", "pername2": "last_name", "enumcap": "street"}
    assert "a forename then a surname" in got.loc["pername1", "reason"]
    assert got.loc["enumcap", "reason"] == "80% of values look like street"
    # Numbered names holding more than one word each (an organisation's name over two lines) are no person's name,
    # and a column of numbered names beside a first and a last name is left as it is.
    lines = suggested({"name1": ["ACME TRADING LTD", "GLOBEX CORP"], "name2": ["SALES DEPT", "C/O J SMITH"]})
    assert lines == {"name1": "", "name2": ""}
    named = suggested({"first_name": ["a", "b"], "last_name": ["c", "d"], "name1": ["x", "y"], "name2": ["z", "w"]})
    assert named["name1"] == named["name2"] == ""
    # A number and words without a street's word are no street.
    assert suggested({"c": ["12 apples", "3 pears", "7 plums"]}) == {"c": ""}


def test_a_year_and_month_of_birth_are_mapped_as_a_birth_date_known_in_part():
    rows = suggest_mapping(pd.DataFrame({"name": ["a b"] * 4, "birth_year": YEARS, "birth_month": MONTHS}))
    got = rows.set_index("column")
    assert got["suggested"].to_dict() == {"name": "full_name", "birth_year": "birth_year", "birth_month": "birth_month"}
    assert "a year and month of birth (joined into a birth date known in part)" in got.loc["birth_month", "reason"]


def test_a_birth_date_column_holding_dates_known_in_part_is_still_the_birth_date():
    # Service records: whole dates beside years with the month and day dashed out.
    written = ["18440602", "1843----", "1838----", "18470207", "1827----"]
    rows = suggest_mapping(pd.DataFrame({"name": ["a b"] * 5, "birth_date": written})).set_index("column")
    assert rows.loc["birth_date", "suggested"] == "birth_date"
    # Two systems in one sheet, one writing the date, the other (more rows) the year: a table maps one of the two.
    sheet = pd.DataFrame(
        {
            "name": ["a b"] * 8,
            "birth_date": written[:2] + [None] * 6,
            "birth_year": [None] * 2 + YEARS + ["1940", "1933"],
        }
    )
    rows = suggest_mapping(sheet).set_index("column")
    assert rows["suggested"].to_dict() == {"name": "full_name", "birth_date": "", "birth_year": "birth_year"}
    assert "fewer records hold it than 'birth_year' (2 against 6)" in rows.loc["birth_date", "reason"]


def test_a_birth_date_in_parts_counts_as_a_birth_date_for_a_customer_table():
    parts = {"dob_day": DAYS, "dob_mon": MONTHS, "dob_year": YEARS}
    assert customer_table_verdict(suggest_mapping(pd.DataFrame({**parts, "postcode": ["98101"] * 4}))) is None
    verdict = customer_table_verdict(suggest_mapping(pd.DataFrame(parts)))
    assert "its only customer attributes are birth_day, birth_month, birth_year" in verdict


def test_dates_spread_as_birth_dates_in_a_column_named_only_date_beside_names_are_the_birth_date():
    dates = ["1950/01/03", "1987/12/17", "1962/05/28", "2001/07/09"]
    rows = suggest_mapping(pd.DataFrame({"name": ["a b"] * 4, "date": dates})).set_index("column")
    assert rows.loc["date", ["suggested", "confidence"]].tolist() == ["birth_date", "medium"]
    assert "unmap it if it is not the person's birth date" in rows.loc["date", "reason"]
    # Named for another date, or without a person's name beside it, it is only said to look like one.
    for frame in ({"name": ["a b"] * 4, "issue_date": dates}, {"code": ["x1", "x2", "x3", "x4"], "date": dates}):
        rows = suggest_mapping(pd.DataFrame(frame)).set_index("column")
        column = next(c for c in frame if "date" in c)
        assert rows.loc[column, "suggested"] == ""
        assert (
            "spread over decades as birth dates are: if it is the person's birth date, map it as birth_date"
            in rows.loc[column, "reason"]
        )
    # Dates of a few recent years (sign-ups, orders), or with times, are not said to be birth dates.
    recent = suggest_mapping(pd.DataFrame({"name": ["a b"] * 4, "date": ["2023/01/03", "2024/12/17"] * 2}))
    assert "birth" not in recent.set_index("column").loc["date", "reason"]
    stamps = suggest_mapping(pd.DataFrame({"name": ["a b"] * 4, "date": [d + " 10:00:00" for d in dates]}))
    assert "birth" not in stamps.set_index("column").loc["date", "reason"]


#: A voter register's columns (North Carolina's layout): the middle name and the name suffix apart, the town of
#: residence beside the place of birth.
VOTERS = {
    "ncid": ["AA1", "AA2", "AA3"],
    "last_name": ["SMITH", "SMITH", "JONES"],
    "first_name": ["JOHN", "JOHN", "MARY"],
    "midl_name": ["LEE", "LEE", "ANN"],
    "name_sufx_cd": ["JR", "SR", ""],
    "res_street_address": ["12 MAIN ST", "12 MAIN ST", "4 OAK AVE"],
    "res_city_desc": ["RALEIGH", "RALEIGH", "CARY"],
    "state_cd": ["NC", "NC", "NC"],
    "zip_code": ["27601", "27601", "27511"],
    "birth_state": ["NC", "VA", "NY"],
    "birth_place": ["DURHAM", "RICHMOND", "ALBANY"],
}


def test_a_voter_registers_middle_name_suffix_and_town_of_residence_beside_the_place_of_birth():
    rows = suggest_mapping(pd.DataFrame(VOTERS)).set_index("column")
    got = rows["suggested"].to_dict()
    assert got["midl_name"] == "middle_name" and got["name_sufx_cd"] == "custom"
    assert "tells a father from his son" in rows.loc["name_sufx_cd", "reason"]
    # Where the person lives is their town and state; the places of birth are kept as custom.
    assert got["res_city_desc"] == "city" and got["birth_place"] == "custom"
    assert got["state_cd"] == "state" and got["birth_state"] == "custom"
    assert "which res_city_desc takes" in rows.loc["birth_place", "reason"]
    # Alone, a place of birth is still the town compared.
    alone = suggested({"first_name": ["a", "b", "c"], "birth_place": ["devon", "london", "leeds"]})
    assert alone["birth_place"] == "city"


#: Synthea's synthetic patients (patients.csv): names in FIRST and LAST (with digits Synthea appends), the birth
#: place beside the town of residence, a marital status coded in letters like the gender.
SYNTHEA = {
    "Id": ["1d604da9-9a81-4ba9-80c2-de3375d59b40", "034e9e3b-2def-4559-bb2a-7850888ae060", "10339b10-3cd1-4ac3"],
    "BIRTHDATE": ["1989-05-25", "1983-11-14", "1992-06-02"],
    "SSN": ["999-76-6866", "999-73-5361", "999-27-3385"],
    "FIRST": ["José Eduardo181", "Milo271", "Mariana775"],
    "LAST": ["Gómez206", "Feil794", "Rutherford999"],
    "MARITAL": ["M", "S", "M"],
    "GENDER": ["M", "M", "F"],
    "BIRTHPLACE": ["Marigot  Saint Andrew Parish  DM", "Danvers  Massachusetts  US", "Yarmouth  Massachusetts  US"],
    "ADDRESS": ["427 Balistreri Way Unit 19", "422 Farrell Path Unit 69", "999 Kuhn Forge"],
    "CITY": ["Chicopee", "Somerville", "Lowell"],
    "ZIP": ["01013", "02143", "01851"],
}


def test_synthea_patients_first_and_last_birthplace_and_a_second_letter_code():
    rows = suggest_mapping(pd.DataFrame(SYNTHEA)).set_index("column")
    got = rows["suggested"].to_dict()
    assert got["FIRST"] == "first_name" and got["LAST"] == "last_name" and got["BIRTHDATE"] == "birth_date"
    assert got["CITY"] == "city" and got["BIRTHPLACE"] == "custom" and got["ADDRESS"] == "street"
    assert got["GENDER"] == "gender" and got["MARITAL"] == ""
    # A marital status of married people alone (M) looks like a gender: beside the gender it is left unmapped, not
    # compared as custom.
    married = suggest_mapping(pd.DataFrame({**SYNTHEA, "MARITAL": ["M", "M", "M"]})).set_index("column")
    assert married.loc["MARITAL", "suggested"] == "" and married.loc["GENDER", "suggested"] == "gender"
    assert "a code shared by many people" in married.loc["MARITAL", "reason"]
    # Only as the whole name: a first or last date is no name.
    assert suggested({"first_seen": ["2024-01-02"] * 3, "last_login": ["2024-01-02"] * 3}) == {
        "first_seen": "",
        "last_login": "",
    }


def test_fname_beside_a_given_name_is_the_family_name_and_alone_the_first_name():
    beside = suggest_mapping(pd.DataFrame({"gname": ["jarod", "blake"], "fname": ["huggins", "waller"]}))
    assert dict(zip(beside["column"], beside["suggested"], strict=True)) == {
        "gname": "first_name",
        "fname": "last_name",
    }
    assert "beside the given name in gname" in beside.set_index("column").loc["fname", "reason"]
    alone = suggest_mapping(pd.DataFrame({"fname": ["jarod", "blake"], "lname": ["huggins", "waller"]}))
    assert dict(zip(alone["column"], alone["suggested"], strict=True)) == {"fname": "first_name", "lname": "last_name"}


def test_a_table_not_recognised_as_customers_names_the_columns_to_map_by_hand():
    suggestions = suggest_mapping(pd.DataFrame({"gender": ["m", "f"], "yb": ["1965", "1952"], "mb": ["7", "8"]}))
    verdict = customer_table_verdict(suggestions)
    assert "its only customer attribute is gender" in verdict
    assert "names say nothing known: yb, mb" in verdict and "under unify.tables.<table>.columns" in verdict


@pytest.mark.parametrize(
    "columns",
    [
        ["Kundennummer", "Vorname", "Nachname", "Geburtsdatum", "Straße", "PLZ", "Ort", "Telefon", "Geschlecht"],
        ["identifiant", "prénom", "nom", "date de naissance", "adresse", "code postal", "ville", "téléphone", "sexe"],
        [
            "numero",
            "nombre de pila",
            "apellidos",
            "fecha de nacimiento",
            "dirección",
            "código postal",
            "ciudad",
            "teléfono",
            "sexo",
        ],
    ],
)
def test_the_common_german_french_and_spanish_column_names_are_recognised(columns):
    values = [
        ["100044", "Jörg", "Müller", "1976-02-16", "Hauptstr. 5", "01067", "Dresden", "0351 4711", "m"],
        ["100045", "Anna", "Weiß", "1980-11-03", "Ringweg 2", "01069", "Dresden", "0351 4712", "f"],
    ]
    suggested = suggest_mapping(pd.DataFrame(values, columns=columns)).set_index("column")["suggested"]
    assert suggested.tolist() == [
        "",
        "first_name",
        "last_name",
        "birth_date",
        "street",
        "postal_code",
        "city",
        "phone",
        "gender",
    ]
