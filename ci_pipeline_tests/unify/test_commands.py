"""`explain` and `suggest-mapping` on the lake outputs of a real unify run."""

from __future__ import annotations

import json

import dagster as dg
import pandas as pd
import pytest
import yaml

from ci_pipeline.cli import main
from ci_pipeline.config import load_config
from ci_pipeline.unify.suggest import suggest_mapping
from ci_pipeline_tests.unify.helpers import frames
from ci_pipeline_tests.unify.test_assets import project, run


@pytest.fixture(scope="module")
def unified(tmp_path_factory):
    """The configuration of a project whose unify group ran once for the module: explain and suggest-mapping only
    read its lake."""
    cfg, lake = project(tmp_path_factory.mktemp("unified"))
    assert run(cfg).success
    return str(cfg.path)


def test_explain_record_lists_customer_records_and_links(unified, capsys):
    assert main(["--config", unified, "explain", "crm", "contacts", "c1"]) == 0
    out = capsys.readouterr().out
    assert "crm|contacts|c1 belongs to customer" in out and "(3 record(s))" in out
    assert "shop|customers|s1" in out and "loyalty|members|m1" in out
    assert "match rule email_name (email 1.0, first_name 1.0)" in out
    # Each record with the values its table holds, as written there: what they share is seen at once.
    shop = next(line for line in out.splitlines() if line.startswith("  - shop|customers|s1: "))
    assert {"full_name Bob Smith", "email bob.smith@example.com", "town Springfield"} <= set(shop[23:].split(", "))
    crm = next(line for line in out.splitlines() if line.startswith("  - crm|contacts|c1: "))
    assert {"first_name Robert", "email Bob.Smith@Example.com", "city Springfield"} <= set(crm[21:].split(", "))
    assert main(["--config", unified, "explain", "crm", "contacts", "c1", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert {link["rule"] for link in info["links"]} == {"email_name", "phone_last_name"}
    assert info["values"]["loyalty|members|m1"]["first_name"]


def test_explain_pair_shows_each_condition(unified, capsys):
    assert main(["--config", unified, "explain", "crm", "contacts", "c2", "--pair", "shop", "customers", "s3"]) == 0
    out = capsys.readouterr().out
    assert "rule email_name: no match" in out
    assert "never compared: blocking field(s) email differ or are missing" in out
    assert "verdict: no rule matches" in out
    assert "different customers" in out
    assert main(["--config", unified, "explain", "crm", "contacts", "c1", "--pair", "shop", "customers", "s1"]) == 0
    out = capsys.readouterr().out
    assert "verdict: matched by email_name" in out
    assert "'Bob.Smith@Example.com' vs 'bob.smith@example.com' -> 'bob.smith@example.com'" in out


def test_explain_unknown_record_is_a_clear_error(unified, capsys):
    assert main(["--config", unified, "explain", "crm", "contacts", "nope"]) == 2
    assert "not in the last unification run" in capsys.readouterr().err
    # A pair of the record with itself explains nothing.
    assert main(["--config", unified, "explain", "crm", "contacts", "c1", "--pair", "crm", "contacts", " c1"]) == 2
    assert "--pair crm contacts c1 is the record explained itself" in capsys.readouterr().err


def test_suggest_mapping_from_names_and_values(unified, capsys):
    assert main(["--config", unified, "suggest-mapping", "shop", "customers"]) == 0
    out = capsys.readouterr().out
    assert "full_name: full_name" in out and "address: street" in out and "town: city" in out


def test_suggest_mapping_uses_values_when_names_say_nothing():
    frame = pd.DataFrame(
        {"c1": ["a@x.com", "b@y.org", "c@z.net"], "c2": ["555-010-1234", "(555) 010-9999", "+1 555 010 7777"]}
    )
    got = suggest_mapping(frame).set_index("column")["suggested"].to_dict()
    assert got == {"c1": "email", "c2": "phone"}


def test_suggest_mapping_never_takes_dates_or_identifiers_for_phones():
    frame = pd.DataFrame(
        {
            "signup_date": ["2023-02-21", "2025-03-26", "2024-11-02"],
            "lastLogin": ["2026-06-06T19:09:52", "2026-05-20T14:13:13", "2026-05-21T08:00:00"],
            "created": ["03/16/2021 21:21:51", "10/27/2020 23:13:17", "01/02/2022 08:00:00"],
            "dob": ["1970-05-17", "1988-06-24", "2001-01-30"],
            "DoB": ["05/17/1970", "06/24/1988", "01/30/2001"],
            "account_number": ["5550101234", "5550109999", "5550107777"],
            "mobile_no": ["5550101234", "5550109999", "5550107777"],
        }
    )
    got = suggest_mapping(frame).set_index("column")
    assert got["suggested"].to_dict() == {
        "signup_date": "",
        "lastLogin": "",
        "created": "",
        "dob": "birth_date",
        "DoB": "custom",  # also a birth date, but one column per type: the first keeps it
        "account_number": "",
        "mobile_no": "phone",
    }
    assert got.loc["created", "reason"].startswith("100% of values look like dates or times: not a customer attribute")
    assert got.loc["account_number", "reason"].startswith("an identifier")
    assert got.loc["DoB", "reason"].startswith("also looks like birth_date, which dob takes")
    assert suggest_mapping(frame[["DoB"]])["suggested"].tolist() == ["birth_date"]
    assert got.loc["dob", "confidence"] == "high"


def test_explain_of_a_record_ingestion_quarantined_says_why(tmp_path, capsys):
    cfg, lake = project(tmp_path)
    raw = yaml.safe_load(cfg.path.read_text())
    raw["sources"]["crm"]["tables"]["contacts"]["columns"] = {"modified_at": "date"}
    cfg.path.write_text(yaml.safe_dump(raw))
    contacts = frames()[("crm", "contacts")]
    bad = contacts.iloc[[0]].assign(contact_id="c9", modified_at="31/02/2026")
    pd.concat([contacts, bad]).to_csv(tmp_path / "contacts.csv", index=False)
    ingest = dg.AssetSelection.keys(dg.AssetKey(["crm", "contacts"])).required_multi_asset_neighbors()
    assert run(load_config(cfg.path), dg.AssetSelection.groups("unify") | ingest).success
    assert main(["--config", str(cfg.path), "explain", "crm", "contacts", "c9"]) == 2
    err = capsys.readouterr().err
    assert "record crm.contacts key 'c9' was quarantined by ingestion" in err
    assert "malformed value in column 'modified_at': '31/02/2026' is not a valid date" in err
    assert "contacts.csv, line 6" in err and "contacts_corrupt.parquet" in err
    # The other side of a pair is looked up too.
    assert main(["--config", str(cfg.path), "explain", "crm", "contacts", "c1", "--pair", "crm", "contacts", "c9"]) == 2
    assert "'c9' was quarantined by ingestion" in capsys.readouterr().err


def test_explain_names_the_unified_tables_for_a_misspelt_one_and_trims_the_key(unified, capsys):
    assert main(["--config", unified, "explain", "crm", "contact", "c1"]) == 2
    err = capsys.readouterr().err
    assert "crm contact: no such table among unify.tables (did you mean 'crm.contacts'?)" in err
    assert "the unified tables are crm.contacts, shop.customers, loyalty.members" in err
    assert main(["--config", unified, "explain", "crm", "contacts", " c1 "]) == 0
    assert "crm|contacts|c1 belongs to customer" in capsys.readouterr().out
