"""The embedded SQLite sink: upsert by GUID, stale rows deleted, idempotent, crash-safe."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import textwrap

import pandas as pd
import pytest

from ci_pipeline import outputs
from ci_pipeline.dataverse.capacity import capacity_report, entitlement
from ci_pipeline.dataverse.prepare import prepare
from ci_pipeline.dataverse.sqlite import SqliteSink
from ci_pipeline.errors import UserError


def alternate_keys(n: int, customer_of=lambda i: f"C{i // 2}") -> pd.DataFrame:
    return pd.DataFrame(
        {
            "DataSourceName": ["crm"] * n,
            "EntityName": ["contacts"] * n,
            "AlternateValue": [f"k{i}" for i in range(n)],
            "KeyRing": ["[]"] * n,
            "CustomerId": [customer_of(i) for i in range(n)],
        }
    )


def profiles(ids) -> pd.DataFrame:
    return pd.DataFrame({"CustomerId": list(ids), "FullName": [f"name {i}" for i in ids]})


def publish_all(sink, keys: pd.DataFrame, profile: pd.DataFrame):
    results = {}
    for table, df in [("CustomerProfile", profile), ("AlternateKey", keys)]:
        # The producing stage builds its table through the contract; publishing only checks it.
        results[table] = sink.publish(prepare(table, outputs.build(table, df)))
    for table in ["UnifiedActivity", "CustomerMeasure", "Enrichment", "Prediction", "SegmentMembership"]:
        results[table] = sink.publish(prepare(table, None))
    return results


def test_publish_creates_seven_tables_and_reads_back(tmp_path):
    with SqliteSink(tmp_path / "sink.sqlite") as sink:
        results = publish_all(sink, alternate_keys(4), profiles(["C0", "C1"]))
        assert len(sink.tables()) == 7
        assert results["AlternateKey"].upserted == 4 and results["Enrichment"].rows == 0
        rows = sink.read("msdynci_alternatekey", where={"msdynci_customerid": "C1"})
        assert sorted(rows["msdynci_alternatevalue"]) == ["k2", "k3"]
        assert list(rows.columns)[0] == "msdynci_alternatekeyid"


def test_second_publish_is_unchanged_and_content_identical(tmp_path):
    with SqliteSink(tmp_path / "sink.sqlite") as sink:
        publish_all(sink, alternate_keys(6), profiles(["C0", "C1", "C2"]))
        first = sink.dump()
        again = publish_all(sink, alternate_keys(6), profiles(["C0", "C1", "C2"]))
        assert sink.dump() == first
        assert again["AlternateKey"].unchanged == 6 and again["AlternateKey"].upserted == 0
        assert again["AlternateKey"].deleted == 0


def test_stale_rows_are_deleted_and_changed_rows_updated(tmp_path):
    with SqliteSink(tmp_path / "sink.sqlite") as sink:
        publish_all(sink, alternate_keys(6), profiles(["C0", "C1", "C2"]))
        # C2 merged into C0: its keys now point at C0 and its profile disappears.
        merged = alternate_keys(6, customer_of=lambda i: "C0" if i // 2 == 2 else f"C{i // 2}")
        result = publish_all(sink, merged, profiles(["C0", "C1"]))
        assert result["CustomerProfile"].deleted == 1 and result["CustomerProfile"].unchanged == 2
        assert result["AlternateKey"].upserted == 2 and result["AlternateKey"].unchanged == 4
        left = sink.read("msdynci_customerprofile")
        assert sorted(left["msdynci_customerid"]) == ["C0", "C1"]
        assert set(sink.read("msdynci_alternatekey")["msdynci_customerid"]) == {"C0", "C1"}
    with SqliteSink(tmp_path / "clean.sqlite") as clean:
        publish_all(clean, merged, profiles(["C0", "C1"]))
        with SqliteSink(tmp_path / "sink.sqlite") as sink:
            assert sink.dump() == clean.dump()


def test_new_profile_attribute_rebuilds_the_table(tmp_path):
    with SqliteSink(tmp_path / "sink.sqlite") as sink:
        sink.publish(prepare("CustomerProfile", profiles(["C0", "C1"])))
        wider = profiles(["C1"]).assign(Email="e@x")
        result = sink.publish(prepare("CustomerProfile", wider))
        assert result.deleted == 1
        assert list(sink.read("msdynci_customerprofile").columns) == [
            "msdynci_customerprofileid",
            "msdynci_customerid",
            "msdynci_fullname",
            "msdynci_email",
        ]


def test_failure_inside_a_table_leaves_it_as_before_and_rerun_equals_clean(tmp_path):
    class Boom(Exception):
        pass

    def explode(table, step):
        if table == "AlternateKey" and step == "staged":
            raise Boom()

    with SqliteSink(tmp_path / "sink.sqlite") as sink:
        publish_all(sink, alternate_keys(4), profiles(["C0", "C1"]))
        before = sink.dump()
    with SqliteSink(tmp_path / "sink.sqlite", hook=explode) as sink, pytest.raises(Boom):
        publish_all(sink, alternate_keys(8), profiles(["C0", "C1", "C2", "C3"]))
    with SqliteSink(tmp_path / "sink.sqlite") as sink:
        keys = sink.read("msdynci_alternatekey")
        assert len(keys) == 4  # the interrupted table is untouched
        assert sink.dump() != before  # the profiles before it did land
        publish_all(sink, alternate_keys(8), profiles(["C0", "C1", "C2", "C3"]))
        with SqliteSink(tmp_path / "clean.sqlite") as clean:
            publish_all(clean, alternate_keys(8), profiles(["C0", "C1", "C2", "C3"]))
            assert sink.dump() == clean.dump()


KILLER = textwrap.dedent(
    """
    import os, signal, sys
    sys.path.insert(0, {root!r})
    from ci_pipeline_tests.publish.test_sqlite_sink import alternate_keys, profiles, publish_all
    from ci_pipeline.dataverse.sqlite import SqliteSink

    def kill(table, step):
        if table == "AlternateKey" and step == "staged":
            print("killing", flush=True)
            os.kill(os.getpid(), signal.SIGKILL)

    publish_all(SqliteSink({path!r}, hook=kill), alternate_keys(2000), profiles([f"C{{i}}" for i in range(1000)]))
    """
)


@pytest.mark.slow
def test_process_killed_mid_publish_then_rerun_equals_clean_run(tmp_path):
    from ci_pipeline_tests.conftest import ROOT

    path = tmp_path / "sink.sqlite"
    with SqliteSink(path) as sink:
        publish_all(sink, alternate_keys(10), profiles(["C0"]))
    done = subprocess.run(
        [sys.executable, "-c", KILLER.format(root=str(ROOT), path=str(path))], capture_output=True, text=True
    )
    assert done.returncode == -9 and "killing" in done.stdout, done.stderr
    ids = [f"C{i}" for i in range(1000)]
    with SqliteSink(path) as sink:
        assert len(sink.read("msdynci_alternatekey")) == 10  # the killed transaction left nothing behind
        publish_all(sink, alternate_keys(2000), profiles(ids))
        with SqliteSink(tmp_path / "clean.sqlite") as clean:
            publish_all(clean, alternate_keys(2000), profiles(ids))
            assert sink.dump() == clean.dump()
        count = sqlite3.connect(path).execute("SELECT count(DISTINCT msdynci_alternatekeyid) FROM msdynci_alternatekey")
        assert count.fetchone()[0] == 2000


def test_capacity_report_and_errors(tmp_path):
    assert entitlement(300_000) == {"profiles": 300000, "database_gb": 45.0, "file_gb": 60.0}
    with SqliteSink(tmp_path / "sink.sqlite") as sink:
        publish_all(sink, alternate_keys(4), profiles(["C0", "C1"]))
        report = capacity_report(sink.usage(), "msdynci_customerprofile")
        assert report["profiles"] == 2 and report["database_gb"] == pytest.approx(0.0003)
        assert report["published_rows"] == 6
        expected_bytes = sum(len(v) for v in sink.read("msdynci_alternatekey").to_numpy().ravel())
        assert report["tables"]["msdynci_alternatekey"]["bytes"] == expected_bytes
        with pytest.raises(UserError, match="no table 'nope'"):
            sink.read("nope")
    (tmp_path / "dir.sqlite").mkdir()
    with pytest.raises(UserError, match="cannot open the SQLite database"):
        SqliteSink(tmp_path / "dir.sqlite").publish(prepare("Enrichment", None))


def test_null_and_value_changes_are_detected(tmp_path):
    with SqliteSink(tmp_path / "sink.sqlite") as sink:
        first = pd.DataFrame({"CustomerId": ["A", "B", "C"], "Email": ["a@x", None, "c@x"]})
        sink.publish(prepare("CustomerProfile", first))
        second = pd.DataFrame({"CustomerId": ["A", "B", "C"], "Email": [None, "b@x", "c@x"]})
        result = sink.publish(prepare("CustomerProfile", second))
        assert (result.upserted, result.unchanged, result.deleted) == (2, 1, 0)
        rows = sink.read("msdynci_customerprofile").set_index("msdynci_customerid")["msdynci_email"]
        assert pd.isna(rows["A"]) and rows["B"] == "b@x" and rows["C"] == "c@x"
        with SqliteSink(tmp_path / "clean.sqlite") as clean:
            clean.publish(prepare("CustomerProfile", second))
            assert clean.dump() == sink.dump()
