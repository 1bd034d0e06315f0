"""`ci-pipeline quickstart`: key inference, the table-kind decision, the written configuration and a full run."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from ci_pipeline.cli import main
from ci_pipeline.config import load_config
from ci_pipeline.errors import UserError
from ci_pipeline.ingest.table import ingest_table
from ci_pipeline.lake import Lake
from ci_pipeline.quickstart import (
    MODEL_ROWS,
    ROW_KEY,
    detect_transactions,
    infer_primary_key,
    plan_quickstart,
    read_table,
    write_files,
)

FIRST = ["Ann", "Bob", "Carla", "Dev", "Elif", "Farid", "Grace", "Hugo", "Ines", "Jonas", "Kemal", "Lena"]
LAST = ["Lee", "Stone", "Novak", "Patel", "Yilmaz", "Haddad", "Okafor", "Berg", "Costa", "Weber", "Demir", "Kaur"]


def people(count: int) -> pd.DataFrame:
    """Distinct people with realistic CRM column names (every value derived from the row number)."""
    n = pd.RangeIndex(count)
    first = [FIRST[i % len(FIRST)] for i in n]
    last = [LAST[(i // len(FIRST)) % len(LAST)] + ("" if i < 144 else f"-{i}") for i in n]
    return pd.DataFrame(
        {
            "CustomerID": [f"CRM-{1000 + i}" for i in n],
            "FirstName": first,
            "LastName": last,
            "EmailAddress": [
                f"{f.lower()}.{la.lower()}@mail{i % 7}.example" for i, f, la in zip(n, first, last, strict=True)
            ],
            "Phone": [f"+1 206 555 {i:04d}" for i in n],
            "DOB": [f"{1950 + i % 50}-{1 + i % 12:02d}-{1 + i % 28:02d}" for i in n],
            "ZipCode": [f"{98000 + i % 90:05d}" for i in n],
            "City": ["Seattle" if i % 2 else "Tacoma" for i in n],
        }
    )


def test_the_key_is_a_unique_complete_column_with_a_key_like_name():
    frame = pd.DataFrame(
        {"email": ["a@x.example", "b@x.example", "c@x.example"], "contact_id": ["c1", "c2", "c3"], "n": ["1", "1", "2"]}
    )
    choice = infer_primary_key(frame)
    # email is unique and comes first, but the name of contact_id says it is the key.
    assert choice.column == "contact_id" and "name says it is a key" in choice.reason


def test_a_key_like_column_with_duplicates_or_gaps_is_refused_with_the_reason():
    frame = pd.DataFrame(
        {
            "customer_id": ["c1", "c1", None, "c4"],
            "amount": ["1.50", "2.25", "3.00", "4.75"],
            "day": ["2024-01-01", "2024-01-02", "2024-01-03", "2024-01-04"],
        }
    )
    choice = infer_primary_key(frame)
    # A unique amount or date identifies rows only by accident, so neither is taken.
    assert choice.column is None
    assert choice.reason == "no column identifies a row: customer_id has 1 duplicate value(s) and 1 empty"


def test_a_unique_text_column_is_the_key_when_no_column_is_named_like_one():
    frame = pd.DataFrame({"city": ["Oslo", "Oslo"], "handle": ["@ann", "@bob"]})
    assert infer_primary_key(frame).column == "handle"


def test_a_file_with_customer_id_date_and_amount_holds_transactions():
    frame = pd.DataFrame(
        {
            "TransactionID": ["t1", "t2", "t3"],
            "CustomerNo": ["c1", "c1", "c2"],
            "TransactionDate": ["03/15/2024", "04/01/2024", "12/31/2023"],
            "Sales Amount": ["19.99", "5", "120.00"],
            "StoreCity": ["Oslo", "Bergen", "Oslo"],
        }
    )
    found, missing = detect_transactions(frame)
    assert (found.customer, found.timestamp, found.amount) == ("CustomerNo", "TransactionDate", "Sales Amount")
    plan = plan_quickstart(Path("sales.csv"), frame)
    assert plan.kind == "transactions" and plan.key.column == "TransactionID"
    assert plan.formats["TransactionDate"] == {"type": "datetime", "format": "%m/%d/%Y"}
    assert plan.as_of == "2024-04-01"
    assert plan.customer_ids["customer_key"].tolist() == ["c1", "c2"]


def test_a_customer_table_is_not_taken_for_transactions():
    plan = plan_quickstart(Path("crm_export.csv"), people(20))
    assert plan.kind == "customers" and plan.table == "crm_export" and plan.key.column == "CustomerID"
    mapping = dict(zip(plan.mapping["column"], plan.mapping["suggested"], strict=True))
    assert mapping["EmailAddress"] == "email" and mapping["DOB"] == "birth_date" and "CustomerID" not in mapping
    # The birth date is left text, read by unification: no declared type to quarantine a record over one date.
    assert plan.formats == {}


def test_a_customer_table_with_a_date_and_an_amount_stays_a_customer_table():
    frame = people(20).assign(
        SignupDate=[f"2023-01-{1 + i:02d}" for i in range(20)], LifetimeValue=[f"{i * 10}.50" for i in range(20)]
    )
    frame = frame.rename(columns={"CustomerID": "customer_id"})
    assert detect_transactions(frame)[0] is not None  # it has a customer id, a date and an amount ...
    plan = plan_quickstart(Path("crm.csv"), frame)
    assert plan.kind == "customers" and plan.key.column == "customer_id"  # ... but one row per customer id


def test_a_table_that_is_neither_says_what_it_lacks():
    frame = pd.DataFrame({"sku": ["a1", "a2"], "product_name": ["Mug", "Cap"], "price": ["3.5", "9"]})
    with pytest.raises(UserError) as raised:
        plan_quickstart(Path("products.csv"), frame)
    message = str(raised.value)
    assert "products.csv: neither a customer table nor transactions" in message
    assert "no customer id column" in message and "no date column" in message


def test_transactions_with_a_decimal_comma_are_read_with_it(tmp_path):
    source = tmp_path / "orders.csv"
    source.write_text(
        "order_id;customer_id;order_date;amount\nB1;C1;19.02.2024;262,15\nB2;C2;25.08.2024;1.484,83\n"
        "B3;C1;01.09.2024;7,00\n",
        encoding="utf-8",
    )
    plan = plan_quickstart(source, read_table(source))
    assert plan.transactions.amount == "amount" and plan.csv == {"delimiter": ";", "decimal": ","}
    config = write_files(plan, read_table(source), tmp_path / "out")
    assert "decimal comma" in config.read_text()
    result = ingest_table(load_config(config), Lake.local(tmp_path / "lake"), "quickstart", "orders")
    assert sorted(result.data["amount"].tolist()) == [7.0, 262.15, 1484.83] and result.quarantine.empty


def test_without_a_key_the_user_is_offered_a_row_number(tmp_path):
    frame = people(5).drop(columns="CustomerID")
    frame = pd.concat([frame, frame.iloc[[0]]], ignore_index=True)  # the same row twice: no column is unique
    with pytest.raises(UserError, match="--row-key to number the rows"):
        plan_quickstart(tmp_path / "people.csv", frame)
    plan = plan_quickstart(tmp_path / "people.csv", frame, row_key=True)
    assert plan.key.column == ROW_KEY
    config = write_files(plan, frame, tmp_path / "out")
    copy = pd.read_csv(tmp_path / "out" / "data" / "people.csv", dtype=str)
    assert copy[ROW_KEY].tolist() == [str(i) for i in range(1, 7)] and len(copy.columns) == len(frame.columns) + 1
    assert yaml.safe_load(config.read_text())["sources"]["quickstart"]["tables"]["people"]["path"] == "data/people.csv"


def test_with_row_numbers_as_the_key_an_id_column_is_not_said_to_be_on_the_profile(tmp_path):
    frame = people(5)
    frame = pd.concat([frame, frame.iloc[[0]]], ignore_index=True)  # the same row twice: no column is unique
    plan = plan_quickstart(tmp_path / "people.csv", frame, row_key=True)
    text = write_files(plan, frame, tmp_path / "out").read_text()
    assert "on the profile already" not in text
    assert "# CustomerID is left out: an identifier, but not the primary key (row_number is" in text
    assert "map it to 'custom' to keep it there" in text


def test_a_folder_is_refused_as_a_folder_not_as_a_missing_file(tmp_path):
    with pytest.raises(UserError, match="a folder; quickstart takes one CSV or Parquet file"):
        read_table(tmp_path)


def test_few_attributes_get_simple_rules_and_a_hand_edited_configuration_is_kept(tmp_path):
    frame = pd.DataFrame(
        {
            "id": ["1", "2", "3"],
            "full_name": ["Ann Lee", "Ann Lee", "Bob Stone"],
            "email": ["ann@x.example", "ann@x.example", "bob@x.example"],
        }
    )
    source = tmp_path / "contacts.csv"
    frame.to_csv(source, index=False)
    plan = plan_quickstart(source, read_table(source))
    config = write_files(plan, read_table(source), tmp_path / "out")
    loaded = yaml.safe_load(config.read_text())
    table = loaded["unify"]["tables"][0]
    assert "match" not in loaded["unify"]
    assert table["dedup"]["rules"] == [
        {"name": "same_email", "conditions": [{"field": "email"}, {"field": "full_name", "precision": "high"}]}
    ]
    assert main(["validate", str(config)]) == 0
    # Writing the same plan again is a no-op; a file the user changed is never overwritten.
    assert write_files(plan, frame, tmp_path / "out") == config
    config.write_text(config.read_text() + "# mine\n")
    with pytest.raises(UserError, match="exists and differs"):
        write_files(plan, frame, tmp_path / "out")
    assert config.read_text().endswith("# mine\n")


def test_a_file_of_names_and_towns_gets_a_rule_of_the_whole_name_in_one_town(tmp_path):
    frame = pd.DataFrame(
        {"id": ["1", "2", "3"], "first": ["Ann", "Ann", "Bob"], "last": ["Lee", "Lee", "Stone"], "city": ["Kiel"] * 3}
    )
    source = tmp_path / "people.csv"
    frame.to_csv(source, index=False)
    config = write_files(plan_quickstart(source, read_table(source)), frame, tmp_path / "out")
    text = config.read_text()
    rules = yaml.safe_load(text)["unify"]["tables"][0]["dedup"]["rules"]
    whole = [{"field": "first_name", "precision": "high"}, {"field": "last_name", "precision": "high"}]
    assert rules == [{"name": "first_name_last_name_and_city", "conditions": [{"field": "city"}, *whole]}]
    assert "namesakes living in one large town would be merged too" in text


def test_an_export_with_blanks_in_its_header_and_multi_line_values_is_configured_as_ingestion_reads_it(tmp_path):
    # A header written `id, given_name, ...` (as the febrl files are), and quoted addresses over two lines.
    source = tmp_path / "export.csv"
    source.write_text(
        "rec_id, given_name, surname, email, address\n"
        'r1, ann, lee, ann@x.example,"12 Main St\nApt 4"\n'
        "r2, bob, stone, bob@x.example, 3 Elm Rd\n"
        'r3, ann, lee, ann@x.example,"12 Main Street\nApartment 4"\n',
        encoding="utf-8",
    )
    frame = read_table(source)
    assert list(frame.columns) == ["rec_id", "given_name", "surname", "email", "address"]
    plan = plan_quickstart(source, frame)
    config_path = write_files(plan, frame, tmp_path / "out")
    written = yaml.safe_load(config_path.read_text())
    table = written["sources"]["quickstart"]["tables"]["export"]
    assert table["csv"] == {"multiline": True} == plan.csv
    assert {"given_name", "surname", "email"} <= set(written["unify"]["tables"][0]["columns"])
    assert main(["validate", str(config_path)]) == 0
    # Every row is read: none is quarantined as broken quoting.
    result = ingest_table(load_config(config_path), Lake.local(tmp_path / "lake"), "quickstart", "export")
    assert result.rows_read == 3 and len(result.data) == 3 and result.quarantine.empty
    assert result.data["address"].str.contains("\n").sum() == 2


def test_a_file_without_line_breaks_in_values_reads_csv_lines_as_rows(tmp_path):
    source = tmp_path / "contacts.csv"
    people(20).to_csv(source, index=False)
    plan = plan_quickstart(source, read_table(source))
    assert plan.csv == {}
    written = yaml.safe_load(write_files(plan, read_table(source), tmp_path / "out").read_text())
    assert "csv" not in written["sources"]["quickstart"]["tables"]["contacts"]


@pytest.mark.parametrize(
    ("delimiter", "encoding", "options"),
    [
        (";", "cp1252", {"encoding": "cp1252", "delimiter": ";"}),
        ("\t", "utf-8", {"delimiter": "\t"}),
        ("|", "utf-8", {"delimiter": "|"}),
        (",", "cp1252", {"encoding": "cp1252"}),
        # Excel's "Unicode text": UTF-16 with a byte-order mark, tab-separated.
        ("\t", "utf-16", {"encoding": "utf-16", "delimiter": "\t"}),
        (",", "utf-32", {"encoding": "utf-32"}),
    ],
)
def test_a_spreadsheet_export_is_read_with_its_delimiter_and_encoding(tmp_path, delimiter, encoding, options):
    frame = people(12)
    frame.loc[0, "FirstName"], frame.loc[1, "LastName"] = "Zoë", "Müller"
    source = tmp_path / "export.csv"
    frame.to_csv(source, sep=delimiter, index=False, encoding=encoding)
    read = read_table(source)
    assert read.attrs["csv"] == options
    assert list(read.columns) == list(frame.columns) and read.loc[0, "FirstName"] == "Zoë"
    plan = plan_quickstart(source, read)
    config_path = write_files(plan, read, tmp_path / "out")
    assert yaml.safe_load(config_path.read_text())["sources"]["quickstart"]["tables"]["export"]["csv"] == options
    assert main(["validate", str(config_path)]) == 0
    result = ingest_table(load_config(config_path), Lake.local(tmp_path / "lake"), "quickstart", "export")
    assert len(result.data) == 12 and result.quarantine.empty
    assert result.data.loc[result.data["CustomerID"] == "CRM-1001", "LastName"].tolist() == ["Müller"]


@pytest.mark.parametrize("rows", [60, 120], ids=["rules", "model"])
def test_phone_numbers_written_with_a_country_code_set_the_region_of_those_without(tmp_path, rows):
    frame = people(rows)
    frame["Phone"] = [f"+44 7700 900{i:03d}" if i % 2 else f"07700 900{i:03d}" for i in range(rows)]
    source = tmp_path / "uk.csv"
    frame.to_csv(source, index=False)
    plan = plan_quickstart(source, read_table(source))
    assert plan.phone_region == ("GB", 1.0)
    config_path = write_files(plan, read_table(source), tmp_path / "out")
    assert yaml.safe_load(config_path.read_text())["unify"]["normalize"] == {"default_region": "GB"}
    assert "100% of the phone numbers written with a country code are GB numbers" in config_path.read_text()
    assert main(["validate", str(config_path)]) == 0
    # US numbers (the default region) write nothing.
    source.write_text(people(60).to_csv(index=False))
    assert plan_quickstart(source, read_table(source)).phone_region is None


def test_a_handful_of_rows_gets_simple_rules_not_a_model_with_nothing_to_learn_from(tmp_path):
    source = tmp_path / "few.csv"
    people(12).to_csv(source, index=False)
    config_path = write_files(plan_quickstart(source, read_table(source)), read_table(source), tmp_path / "out")
    written = config_path.read_text()
    assert "The file has only 12 row(s): too few for a probabilistic model to learn from" in written
    unify = yaml.safe_load(written)["unify"]
    assert "match" not in unify and unify["tables"][0]["dedup"]["rules"][0]["name"] == "same_email"
    assert main(["validate", str(config_path)]) == 0
    # From the threshold on, the model.
    people(MODEL_ROWS).to_csv(source, index=False)
    plan = plan_quickstart(source, read_table(source))
    assert "method: probabilistic" in write_files(plan, read_table(source), tmp_path / "more").read_text()


def test_a_birth_date_in_three_columns_is_mapped_in_parts_and_published_as_one_date(tmp_path, capsys):
    frame = people(MODEL_ROWS)[["CustomerID", "FirstName", "LastName", "DOB"]]
    parts = frame.pop("DOB").str.split("-", expand=True).astype(int)
    frame = frame.assign(BirthYear=parts[0], BirthMonth=parts[1], BirthDay=parts[2])
    again = frame.iloc[::5].assign(CustomerID=lambda f: f["CustomerID"] + "-again")  # twenty people twice
    source = tmp_path / "people.csv"
    pd.concat([frame, again]).to_csv(source, index=False)
    config_path = write_files(plan_quickstart(source, read_table(source)), read_table(source), tmp_path / "out")
    written = yaml.safe_load(config_path.read_text())["unify"]
    assert written["tables"][0]["columns"] == {
        "FirstName": "first_name",
        "LastName": "last_name",
        "BirthYear": "birth_year",
        "BirthMonth": "birth_month",
        "BirthDay": "birth_day",
    }
    # Two names and the birth date: three comparable attributes, enough for the model.
    assert written["match"]["method"] == "probabilistic"
    assert main(["run", "--config", str(config_path)]) == 0
    # The run says what it did to the CustomerIds: on a first run, every customer's id is new.
    told = f"CustomerId changes this run: {MODEL_ROWS:,} new, 0 merged, 0 split, 0 moved, 0 removed (each in unify"
    out = capsys.readouterr().out
    assert told in out and "\nunification: full: no state of an earlier run at file://" in out
    profiles = pd.read_parquet(tmp_path / "out" / "lake" / "ci_pipeline" / "unify" / "customer_profile.parquet")
    joined = {f"{y}-{m:02d}-{d:02d}" for y, m, d in parts.itertuples(index=False)}
    assert len(profiles) == MODEL_ROWS and set(profiles["BirthDate"].astype("string")) == joined
    assert not {"BirthYear", "BirthMonth", "BirthDay"} & set(profiles.columns)


def test_a_file_of_distinct_people_gets_simple_rules_with_the_reason_not_a_run_that_fails(tmp_path, capsys):
    # A clean export: no two rows of one person, so a model has nothing to learn from and the first run's
    # training would stop.
    source = tmp_path / "clean.csv"
    people(MODEL_ROWS)[["CustomerID", "FirstName", "LastName", "DOB"]].to_csv(source, index=False)
    plan = plan_quickstart(source, read_table(source))
    assert "found no candidate pair to train on" in plan.model_refused
    assert "the model has nothing to learn from" in plan.model_refused
    assert main(["quickstart", str(source), "--out", str(tmp_path / "out")]) == 0
    assert "matching: simple rules, as a probabilistic model could not be trained" in capsys.readouterr().out
    written = (tmp_path / "out" / "ci_pipeline.yaml").read_text()
    assert "# A probabilistic model could not be trained on this file (quickstart tried): the training" in written
    said = " ".join(line.strip().lstrip("# ") for line in written.splitlines() if line.strip().startswith("#"))
    assert "to train one. Until then, duplicates are found by simple rules (docs/config/unify.md)." in said
    unify = yaml.safe_load(written)["unify"]
    assert "match" not in unify
    # The first and last name with the birth date: the first name alone joined strangers of one birthday.
    (rule,) = unify["tables"][0]["dedup"]["rules"]
    assert rule["name"] == "first_name_last_name_and_birth_date"
    assert [c["field"] for c in rule["conditions"]] == ["birth_date", "first_name", "last_name"]
    profiles = pd.read_parquet(tmp_path / "out" / "lake" / "ci_pipeline" / "unify" / "customer_profile.parquet")
    assert len(profiles) == MODEL_ROWS


def test_a_file_in_no_encoding_it_can_read_names_the_fix(tmp_path):
    source = tmp_path / "export.csv"
    source.write_bytes(b"id,name,email\n1,\x81\xff,a@x.example\n")  # 0x81 is no Windows-1252 character
    with pytest.raises(UserError, match="neither UTF-8 .* nor Windows-1252; save it as UTF-8, or .* csv.encoding"):
        read_table(source)


def test_a_url_is_refused_as_not_a_local_file_without_its_password(tmp_path, capsys):
    url = "https://admin:S3cretPassw0rd@files.example.com/customers.csv?sig=abc123"
    assert main(["quickstart", url, "--out", str(tmp_path / "out")]) == 2
    error = capsys.readouterr().err
    assert "S3cretPassw0rd" not in error and "abc123" not in error
    assert (
        "https://admin:***@files.example.com/customers.csv?sig=*** is a URL; quickstart takes a local file path"
        in error
    )


@pytest.mark.slow
def test_quickstart_on_a_customer_file_deduplicates_with_the_probabilistic_model(tmp_path, capsys):
    frame = people(300)
    # Twenty people entered a second time under another id, with the phone written another way.
    again = frame.iloc[::15].copy()
    again["CustomerID"] = [f"CRM-9{i:03d}" for i in range(len(again))]
    again["Phone"] = again["Phone"].str.replace("+1 ", "(", regex=False).str.replace(" 555 ", ") 555-", regex=False)
    source = tmp_path / "customers_export.csv"
    pd.concat([frame, again], ignore_index=True).to_csv(source, index=False)
    out = tmp_path / "qs"

    assert main(["quickstart", str(source), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    config = out / "ci_pipeline.yaml"
    assert "320 rows of a customer table" in printed and f"configuration   {config}" in printed
    assert yaml.safe_load(config.read_text())["unify"]["match"]["method"] == "probabilistic"
    assert "# medium: column name" in config.read_text() or "# high:" in config.read_text()
    assert main(["validate", str(config)]) == 0
    profiles = pd.read_parquet(out / "lake" / "ci_pipeline" / "unify" / "customer_profile.parquet")
    assert len(profiles) == 300


@pytest.mark.slow
def test_quickstart_on_a_transaction_file_builds_customers_measures_and_rfm_segments(tmp_path, capsys):
    rows = 400
    n = pd.RangeIndex(rows)
    amounts = [round(5 + (i * 37) % 250 + (i % 100) / 100, 2) for i in n]
    sales = pd.DataFrame(
        {
            "TransactionID": [f"T{100000 + i}" for i in n],
            "CustomerNo": [f"C{(i * 7) % 90:03d}" for i in n],
            "TransactionDate": [
                (pd.Timestamp("2024-01-01 09:00:00") + pd.Timedelta(hours=int(i) * 13)).strftime("%Y-%m-%d %H:%M:%S")
                for i in n
            ],
            "Amount": [f"{a:.2f}" for a in amounts],
            "PaymentMethod": ["card" if i % 3 else "cash" for i in n],
        }
    )
    source = tmp_path / "pos_sales.csv"
    sales.to_csv(source, index=False)
    out = tmp_path / "qs"

    assert main(["quickstart", str(source), "--out", str(out)]) == 0
    captured = capsys.readouterr()
    printed = captured.out
    assert "customers: CustomerNo (90 distinct); date: TransactionDate; amount: Amount" in printed
    config = yaml.safe_load((out / "ci_pipeline.yaml").read_text())
    # The generated customer table holds one record per reference by construction: nothing to warn about.
    assert config["unify"]["tables"][0]["one_customer_per_record"] is True
    assert "no dedup, match or attach rule" not in captured.out + captured.err
    assert config["measures"]["as_of"] == pd.Timestamp(sales["TransactionDate"].max()).date()
    assert set(config["segments"]["definitions"]) >= {"rfm_champions", "rfm_at_risk"}
    assert main(["validate", str(out / "ci_pipeline.yaml")]) == 0

    lake = out / "lake" / "ci_pipeline"
    profiles = pd.read_parquet(lake / "unify" / "customer_profile.parquet")
    assert len(profiles) == 90
    measures = pd.read_parquet(lake / "measures" / "customer_measure_values.parquet")
    spend = measures.merge(profiles[["CustomerId", "CustomerKey"]], on="CustomerId").set_index("CustomerKey")
    expected = sales.assign(Amount=amounts).groupby("CustomerNo")["Amount"].sum()
    assert spend["total_spend"].astype(float).sort_index().round(2).to_dict() == expected.round(2).to_dict()
    membership = pd.read_parquet(lake / "segments" / "segment_membership.parquet")
    assert len(membership) > 0


def test_a_parquet_file_keeps_its_own_types(tmp_path):
    source = tmp_path / "shop.parquet"
    pd.DataFrame(
        {
            "order_id": [1, 2, 3],
            "customer_id": [10, 10, 11],
            "order_ts": pd.to_datetime(["2024-01-01 10:00", "2024-02-01 11:30", "2024-03-05 09:15"]),
            "total": [1.5, 2.0, 3.25],
        }
    ).to_parquet(source)
    plan = plan_quickstart(source, read_table(source))
    assert plan.kind == "transactions" and plan.key.column == "order_id"
    # A timestamp column of the file needs no format; its last day ends the measures' windows.
    assert plan.formats == {"order_ts": {"type": "datetime"}, "total": {"type": "double"}}
    assert plan.as_of == "2024-03-05" and plan.customer_ids["customer_key"].tolist() == ["10", "11"]
    config = yaml.safe_load(write_files(plan, read_table(source), tmp_path / "out").read_text())
    assert config["sources"]["quickstart"]["tables"]["shop"]["format"] == "parquet"


def test_a_date_in_the_future_does_not_end_the_measures_windows(tmp_path):
    # The run quarantines the 2066 row as in the future; taken as as_of, it made every recency some 40 years.
    source = tmp_path / "shop.parquet"
    pd.DataFrame(
        {
            "order_id": [1, 2, 3, 4],
            "customer_id": [10, 10, 11, 11],
            "order_ts": pd.to_datetime(
                ["2024-01-01 10:00", "2024-02-01 11:30", "2066-03-14 00:26", "2024-01-20 08:00"]
            ),
            "total": [1.5, 2.0, 3.25, 4.0],
        }
    ).to_parquet(source)
    plan = plan_quickstart(source, read_table(source))
    assert plan.as_of == "2024-02-01"
    written = write_files(plan, read_table(source), tmp_path / "out").read_text()
    assert str(yaml.safe_load(written)["measures"]["as_of"]) == "2024-02-01"
    said = " ".join(written.replace("#", " ").split())
    assert (
        "Windows end on 2024-02-01, so the results do not change from day to day: the last order_ts in shop.parquet "
        "that is not in the future; 1 later row(s), up to 2066-03-14, are quarantined by the run as in the future"
    ) in said


def test_a_clean_file_the_model_trains_on_without_finding_duplicates_gets_simple_rules(tmp_path, capsys):
    """Distinct people among many namesakes: blocking finds pairs and training succeeds, but the model expects next
    to no pair of one person, so its few links would be its least certain: quickstart writes simple rules."""
    rng = np.random.default_rng(1)
    n = 400
    source = tmp_path / "clean.csv"
    pd.DataFrame(
        {
            "id": [f"c{i}" for i in range(n)],
            "first_name": rng.choice(FIRST, n),
            "last_name": rng.choice(LAST, n),
            "dob": pd.to_datetime(rng.integers(-7000, 12000, n), unit="D").strftime("%Y-%m-%d"),
            "city": rng.choice(["Oslo", "Bergen", "Molde", "Hamar"], n),
            "email": [f"user{i}@x{i % 13}.example" for i in range(n)],
        }
    ).to_csv(source, index=False)
    assert main(["quickstart", str(source), "--out", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert "matching: simple rules, as a probabilistic model could not be trained: the model expects" in out
    assert "too few duplicates to learn from" in out
    unify = yaml.safe_load((tmp_path / "out" / "ci_pipeline.yaml").read_text())["unify"]
    assert "match" not in unify and unify["tables"][0]["dedup"]["rules"]
    profiles = pd.read_parquet(tmp_path / "out" / "lake" / "ci_pipeline" / "unify" / "customer_profile.parquet")
    assert len(profiles) == n


def test_simple_rules_match_on_a_persons_own_number_first(tmp_path):
    # Payroll forms of a town whose postal codes are all one placeholder: the number that is each person's own is
    # the rule that finds their forms (the name with the postal code found one pair of thousands).
    source = tmp_path / "forms.csv"
    frame = people(12)
    frame["ssn"] = [f"{100 + i // 2:03d}-45-{6789 + i // 2}" for i in range(len(frame))]
    frame.to_csv(source, index=False)
    config_path = write_files(plan_quickstart(source, read_table(source)), read_table(source), tmp_path / "out")
    rules = yaml.safe_load(config_path.read_text())["unify"]["tables"][0]["dedup"]["rules"]
    assert rules[0]["name"] == "same_ssn" and rules[0]["conditions"][0] == {"field": "ssn"}
    assert main(["validate", str(config_path)]) == 0


def test_a_census_file_with_numbered_name_columns_is_a_customer_table(tmp_path):
    # The ONS census's columns had been refused as "its only customer attributes are birth_year, gender,
    # postal_code": forename and surname as pername1 and pername2, the address line as enumcap, the month as dob_mon.
    source = tmp_path / "census.csv"
    pd.DataFrame(
        {
            "resident_id": ["R1", "R2", "R3", "R4"],
            "pername1": ["JOHN", "MARY", "PETER", "SUSAN"],
            "pername2": ["SMITH", "JONES", "TAYLOR", "BROWN"],
            "sex": ["M", "F", "M", "F"],
            "dob_day": ["3", "17", "28", "9"],
            "dob_mon": ["1", "12", "5", "7"],
            "dob_year": ["1950", "1987", "1962", "2001"],
            "enumcap": ["64 HIGHFIELD ROAD", "1 CHURCH STREET", "7 MILL LANE", "22 PARK AVENUE"],
            "enumpc": ["DE22 1GH", "DE1 2AB", "NG7 1AA", "LE1 5XY"],
        }
    ).to_csv(source, index=False)
    config_path = write_files(plan_quickstart(source, read_table(source)), read_table(source), tmp_path / "out")
    assert yaml.safe_load(config_path.read_text())["unify"]["tables"][0]["columns"] == {
        "pername1": "first_name",
        "pername2": "last_name",
        "sex": "gender",
        "dob_day": "birth_day",
        "dob_mon": "birth_month",
        "dob_year": "birth_year",
        "enumcap": "street",
        "enumpc": "postal_code",
    }
    load_config(config_path)  # validates


def test_a_column_only_named_date_beside_names_is_mapped_as_the_birth_date_others_are_left_out_with_how(tmp_path):
    frame = people(12)[["CustomerID", "FirstName", "LastName"]]
    spread = [f"{1940 + 5 * i}/0{1 + i % 9}/1{i % 9}" for i in range(12)]
    for column, line in (("date", "date: birth_date  # medium: values:"), ("visit_date", "# visit_date is left out")):
        source = tmp_path / column / "people.csv"
        source.parent.mkdir()
        frame.assign(**{column: spread}).to_csv(source, index=False)
        plan = plan_quickstart(source, read_table(source))
        written = write_files(plan, read_table(source), tmp_path / column / "out")
        comment = next(x for x in written.read_text().splitlines() if x.strip().startswith(line))
        assert ("unmap it if it is not" if column == "date" else "map it as birth_date") in comment


def test_a_true_false_return_column_is_mapped_so_returns_are_not_counted_as_orders():
    frame = pd.DataFrame(
        {
            "customer_id": ["C1", "C1", "C2"],
            "order_date": ["2025-01-01", "2025-01-11", "2025-02-01"],
            "order_total": [20.0, -20.0, 30.0],
            "is_return": ["False", "True", "False"],
        }
    )
    found, _ = detect_transactions(frame)
    assert found.is_return == "is_return"
    assert detect_transactions(frame.assign(is_return=["no idea", "x", "y"]))[0].is_return is None
