"""End to end: ingest -> unify -> publish to the embedded sink and a CDM export, then read both back."""

from __future__ import annotations

import json

import pytest

from ci_pipeline.cli import main
from ci_pipeline.dataverse.sqlite import SqliteSink

CONFIG = """
name: e2e
sources:
  crm:
    owner: sales
    tables:
      contacts: {format: csv, path: contacts.csv, primary_key: contact_id}
  shop:
    owner: web
    tables:
      customers: {format: csv, path: customers.csv, primary_key: customer_id}
unify:
  tables:
    - source: crm
      table: contacts
      columns: {first_name: first_name, last_name: last_name, email: email}
    - source: shop
      table: customers
      columns: {full_name: full_name, email: email}
  match:
    rules:
      - name: same_email
        conditions: [{field: email}]
publish:
  exports:
    - name: warehouse
"""
CONTACTS = "contact_id,first_name,last_name,email\nc1,Anna,Berg,anna@x.example\nc2,Bo,Lind,bo@x.example\n"
CUSTOMERS = "customer_id,full_name,email\ns1,Anna Berg,anna@x.example\ns2,Cy Dahl,cy@x.example\n"


@pytest.mark.slow
def test_run_publishes_unified_customers_and_a_merge_removes_stale_rows(tmp_path, capsys):
    (tmp_path / "ci_pipeline.yaml").write_text(CONFIG)
    (tmp_path / "contacts.csv").write_text(CONTACTS)
    (tmp_path / "customers.csv").write_text(CUSTOMERS)
    config = str(tmp_path / "ci_pipeline.yaml")
    assert main(["--config", config, "run"]) == 0, capsys.readouterr().out
    with SqliteSink(tmp_path / "sink.sqlite") as sink:
        keys = sink.read("msdynci_alternatekey")
        profiles = sink.read("msdynci_customerprofile")
        first_dump = sink.dump()
    assert len(keys) == 4 and len(profiles) == 3
    anna = keys.loc[keys["msdynci_alternatevalue"] == "c1", "msdynci_customerid"].iloc[0]
    assert keys.loc[keys["msdynci_alternatevalue"] == "s1", "msdynci_customerid"].iloc[0] == anna
    capsys.readouterr()
    assert main(["--config", config, "sql", "SELECT count(*) AS n FROM AlternateKey", "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out) == [{"n": 4}]

    # The same data again: the sink content does not change.
    assert main(["--config", config, "run"]) == 0
    with SqliteSink(tmp_path / "sink.sqlite") as sink:
        assert sink.dump() == first_dump

    # Cy's record is deleted at the source: Cy's profile and key disappear from the sink.
    (tmp_path / "customers.csv").write_text("customer_id,full_name,email\ns1,Anna Berg,anna@x.example\n")
    assert main(["--config", config, "run"]) == 0
    with SqliteSink(tmp_path / "sink.sqlite") as sink:
        assert sorted(sink.read("msdynci_alternatekey")["msdynci_alternatevalue"]) == ["c1", "c2", "s1"]
        assert len(sink.read("msdynci_customerprofile")) == 2


@pytest.mark.slow
def test_sample_run_publishes_every_available_table_without_losing_rows(sample_run_copy, capsys):
    from ci_pipeline.lake import Lake

    # The sample after the session's one `ci-pipeline run` (conftest's sample_run_copy).
    sample_copy = sample_run_copy
    config = str(sample_copy / "ci_pipeline.yaml")
    lake = Lake.local(sample_copy / "lake")
    upstream = {
        "msdynci_customerprofile": "unify/customer_profile",
        "msdynci_alternatekey": "unify/alternate_key",
        "msdynci_unifiedactivity": "activities/unified_activity",
        "msdynci_customermeasure": "measures/customer_measure",
        "msdynci_enrichment": "enrich/enrichment",
        "msdynci_segmentmembership": "segments/segment_membership",
    }
    with SqliteSink(sample_copy / "sink.sqlite") as sink:
        usage = sink.usage()
        first = sink.dump()
    assert len(usage) == 7
    for table, key in upstream.items():
        assert usage[table].rows == len(lake.read_parquet(f"ci_pipeline/{key}.parquet")) > 0, table
    capsys.readouterr()
    assert main(["--config", config, "sql", "SELECT count(*) AS n FROM UnifiedActivity", "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out) == [{"n": usage["msdynci_unifiedactivity"].rows}]
    # Publishing the same tables again leaves the sink content identical.
    assert main(["--config", config, "run", "--select", "group:publish"]) == 0
    with SqliteSink(sample_copy / "sink.sqlite") as sink:
        assert sink.dump() == first
