"""Injected data-quality faults: present, deterministic, recorded, and quarantined by ingestion and activities."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from ci_pipeline.activities.timeline import place_activities
from ci_pipeline.config import load_config
from ci_pipeline.generate import generate
from ci_pipeline.generate.faults import FAULT_COLUMNS, ROWS_PER_FAULT
from ci_pipeline.ingest import ingest_table
from ci_pipeline.lake import Lake

PEOPLE = 200
INGEST_KINDS = {
    ("crm", "contacts"): {"duplicate_key", "malformed_value", "column_count", "broken_quoting", "missing_key"},
    ("support", "surveys"): {"malformed_value"},
}
ACTIVITY_KINDS = {
    ("support", "surveys"): {"unknown_customer"},
    ("ecommerce", "orders"): {"unknown_customer", "future_timestamp"},
}
#: What a sensible quarantine reason says for each kind.
REASON_WORDS = {
    "duplicate_key": "duplicate primary key",
    "malformed_value": "malformed value",
    "column_count": "expected 15 columns, found 16",
    "broken_quoting": "broken quoting",
    "missing_key": "missing primary key",
}


@pytest.fixture(scope="module")
def sample(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("faulty")
    generate(people=PEOPLE, seed=11, out=out)
    return out


@pytest.fixture(scope="module")
def faults(sample) -> pd.DataFrame:
    return pd.read_parquet(sample / "ground_truth" / "faults.parquet")


def test_every_kind_is_injected_and_recorded(sample, faults):
    assert list(faults.columns) == FAULT_COLUMNS
    for (source, table), kinds in {**INGEST_KINDS, **ACTIVITY_KINDS}.items():
        mine = faults[(faults["source"] == source) & (faults["table"] == table)]
        assert kinds <= set(mine["kind"]), (source, table)
    csv = faults[faults["table"].isin(["contacts", "surveys"])]
    assert csv["line"].notna().all() and not csv.duplicated(["table", "line"]).any()
    orders = pd.read_parquet(sample / "ecommerce" / "orders.parquet")
    assert set(faults.loc[faults["table"] == "orders", "key"]) <= set(orders["order_id"])


def test_faults_stay_a_small_share(tmp_path):
    generate(people=2000, seed=3, out=tmp_path)
    faults = pd.read_parquet(tmp_path / "ground_truth" / "faults.parquet")
    orders = len(pd.read_parquet(tmp_path / "ecommerce" / "orders.parquet"))
    assert faults["table"].value_counts()["orders"] / orders <= 0.003
    # Each kind once per ROWS_PER_FAULT rows, at least once: small tables get one of each and no more.
    assert faults.groupby(["table", "kind"]).size().max() == max(1, orders // ROWS_PER_FAULT)


def test_faults_are_deterministic_and_leave_genuine_rows_alone(sample, faults, tmp_path):
    generate(people=PEOPLE, seed=11, out=tmp_path)
    pd.testing.assert_frame_equal(faults, pd.read_parquet(tmp_path / "ground_truth" / "faults.parquet"))
    lines = (sample / "crm" / "contacts.csv").read_text().split("\n")
    bad = set(faults.loc[faults["table"] == "contacts", "line"])
    genuine = [line for n, line in enumerate(lines, start=1) if n not in bad and n > 1 and line]
    assert genuine == sorted(genuine), "the genuine contacts stay in key order"


def test_tiny_tables_stay_clean(tmp_path):
    generate(people=3, seed=1, out=tmp_path)
    assert pd.read_parquet(tmp_path / "ground_truth" / "faults.parquet").empty


@pytest.mark.parametrize(("source", "table"), sorted(INGEST_KINDS))
def test_ingestion_quarantines_each_injected_fault(sample, faults, tmp_path, source, table):
    config = load_config(sample / "ci_pipeline.yaml")
    result = ingest_table(config, Lake.local(tmp_path / "lake"), source, table)
    lines = (sample / config.sources[source].tables[table].path).read_text().strip("\n").split("\n")
    assert result.rows_read == len(lines) - 1
    assert result.rows_read == result.rows_accepted + result.rows_quarantined and result.balanced

    mine = faults[(faults["source"] == source) & (faults["table"] == table) & (faults["stage"] == "ingest")]
    quarantine = result.quarantine.set_index("line")
    assert sorted(quarantine.index) == sorted(mine["line"]), "exactly the injected rows are quarantined"
    assert set(quarantine["severity"]) == {"warning"}
    for fault in mine.itertuples():
        row = quarantine.loc[fault.line]
        assert row["kind"] == fault.kind, fault
        assert REASON_WORDS[fault.kind] in row["reason"], (fault, row["reason"])
        if fault.kind == "malformed_value":
            column = "birth_date" if table == "contacts" else "rating"
            assert f"column '{column}'" in row["reason"]

    key = config.sources[source].tables[table].primary_key
    if table == "contacts":
        records = pd.read_parquet(sample / "ground_truth" / "records.parquet")
        truth = records.loc[records["table"] == "contacts", "key"]
        assert sorted(result.data[key]) == sorted(truth), "records.parquet lists exactly the accepted contacts"
    else:
        # Faults for the activities stage pass ingestion.
        later = faults[(faults["table"] == table) & (faults["stage"] == "activities")]
        assert set(later["key"]) <= set(result.data[key])


@pytest.mark.parametrize(("source", "table"), sorted(ACTIVITY_KINDS))
def test_activities_quarantine_orphans_and_future_timestamps(sample, faults, tmp_path, source, table):
    config = load_config(sample / "ci_pipeline.yaml")
    lake = Lake.local(tmp_path / "lake")
    name = next(n for n, t in config.activities.tables.items() if (t.source, t.table) == (source, table))
    spec = config.activities.tables[name]
    customers = ingest_table(config, lake, spec.customer.source, spec.customer.table).data[spec.customer.column]
    alternate_key = pd.DataFrame(
        {
            "DataSourceName": spec.customer.source,
            "EntityName": spec.customer.table,
            "AlternateValue": customers.astype("string"),
            "CustomerId": "customer-" + customers.astype("string"),
        }
    )
    frame = ingest_table(config, lake, source, table).data
    now = pd.Timestamp.now(tz="UTC") + pd.Timedelta(hours=config.activities.future_tolerance_hours)
    key = config.sources[source].tables[table].primary_key
    accepted, corrupt = place_activities(name, spec, frame, key, alternate_key, now)
    assert len(accepted) + len(corrupt) == len(frame)
    mine = faults[(faults["table"] == table) & (faults["stage"] == "activities")]
    reasons = corrupt.set_index("SourceActivityId")["Reason"]
    assert sorted(reasons.index) == sorted(mine["key"]), "exactly the injected rows are quarantined"
    for fault in mine.itertuples():
        word = "in the future" if fault.kind == "future_timestamp" else f"no {spec.customer.source}."
        assert word in reasons[fault.key], (fault, reasons[fault.key])
