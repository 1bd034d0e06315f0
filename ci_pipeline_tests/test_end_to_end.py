"""End to end over the bundled sample: `ci-pipeline run` twice, with the input rows shuffled in between.

What a user relies on: every stage succeeds, no customer record is lost, every key maps to one customer, the
published sink and the lake export agree with the lake, and neither a re-run nor a new row order changes any
CustomerId or any published byte.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest

from ci_pipeline.cli import main
from ci_pipeline.config import load_config
from ci_pipeline.lake import Lake
from ci_pipeline_tests.conftest import ROOT, SAMPLE_DIR

pytestmark = pytest.mark.slow


def sink_content(path) -> dict[str, list[tuple]]:
    with sqlite3.connect(path) as db:
        tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table' ORDER BY name")]
        return {t: db.execute(f'SELECT * FROM "{t}" ORDER BY 1').fetchall() for t in tables}


def read(lake: Lake, *key: str) -> pd.DataFrame:
    return lake.read_parquet("ci_pipeline/" + "/".join(key) + ".parquet")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The sample run once, then again after shuffling the CRM rows: (config, lake, outputs of each run)."""
    folder = tmp_path_factory.mktemp("e2e") / "sample"
    shutil.copytree(SAMPLE_DIR, folder, ignore=shutil.ignore_patterns("lake", "sink.sqlite*"))
    config_file = folder / "ci_pipeline.yaml"
    config = load_config(config_file)
    lake = Lake.from_config(config.lake, config.base_dir)
    sink = folder / "sink.sqlite"

    assert main(["--config", str(config_file), "run"]) == 0
    first = {
        "profile": read(lake, "unify", "customer_profile"),
        "alternate_key": read(lake, "unify", "alternate_key"),
        "sink": sink_content(sink),
    }
    assert main(["--config", str(config_file), "run"]) == 0
    again = {"profile": read(lake, "unify", "customer_profile"), "sink": sink_content(sink)}

    contacts = folder / "crm" / "contacts.csv"
    # Shuffle whole lines: the sample's deliberately broken CSV lines must reach ingestion as they are.
    header, *rows = contacts.read_text(encoding="utf-8").splitlines()
    shuffled_rows = pd.Series(rows).sample(frac=1.0, random_state=3)
    contacts.write_text("\n".join([header, *shuffled_rows]) + "\n", encoding="utf-8")
    assert main(["--config", str(config_file), "run"]) == 0
    shuffled = {"profile": read(lake, "unify", "customer_profile"), "sink": sink_content(sink)}
    return config, lake, first, again, shuffled


def test_every_customer_record_maps_to_exactly_one_existing_customer(runs):
    config, lake, first, _, _ = runs
    keys = first["alternate_key"]
    profile = first["profile"]
    expected = 0
    for table in config.unify.tables:
        ingested = read(lake, table.source, table.table)
        expected += len(ingested)
        mine = keys[(keys["DataSourceName"] == table.source) & (keys["EntityName"] == table.table)]
        primary_key = config.sources[table.source].tables[table.table].primary_key
        assert set(mine["AlternateValue"]) == set(ingested[primary_key].astype(str)), table.table
    assert len(keys) == expected
    assert not keys.duplicated(["DataSourceName", "EntityName", "AlternateValue"]).any()
    assert profile["CustomerId"].is_unique
    assert set(keys["CustomerId"]) == set(profile["CustomerId"])


def test_rows_read_equal_rows_accepted_plus_quarantined(runs):
    config, lake, *_ = runs
    for source_name, source in config.sources.items():
        for table_name in source.tables:
            accepted = read(lake, source_name, table_name)
            quarantined = read(lake, source_name, f"{table_name}_corrupt")
            assert len(accepted) > 0, f"{source_name}.{table_name} accepted nothing"
            assert len(quarantined) <= len(accepted), f"{source_name}.{table_name}"


def test_unification_finds_fewer_customers_than_records(runs):
    _, _, first, _, _ = runs
    assert len(first["profile"]) < len(first["alternate_key"])
    truth = pd.read_parquet(SAMPLE_DIR / "ground_truth" / "records.parquet")
    people = truth["person_id"].nunique()
    # Within 10% of the true number of people: neither lumping everyone together nor splitting everyone apart.
    assert abs(len(first["profile"]) - people) / people < 0.10


def test_rerun_changes_no_customer_id_and_no_published_byte(runs):
    _, _, first, again, _ = runs
    assert sorted(first["profile"]["CustomerId"]) == sorted(again["profile"]["CustomerId"])
    assert first["sink"] == again["sink"]


def test_shuffled_input_rows_change_no_customer_id(runs):
    _, _, first, _, shuffled = runs
    assert sorted(first["profile"]["CustomerId"]) == sorted(shuffled["profile"]["CustomerId"])
    assert first["sink"]["msdynci_alternatekey"] == shuffled["sink"]["msdynci_alternatekey"]


def test_sink_holds_the_seven_tables_matching_the_lake(runs):
    _, lake, first, _, _ = runs
    sink = first["sink"]
    assert {
        "msdynci_customerprofile",
        "msdynci_alternatekey",
        "msdynci_unifiedactivity",
        "msdynci_customermeasure",
        "msdynci_enrichment",
        "msdynci_prediction",
        "msdynci_segmentmembership",
    } <= set(sink)
    assert len(sink["msdynci_customerprofile"]) == len(first["profile"])
    assert len(sink["msdynci_alternatekey"]) == len(first["alternate_key"])
    assert len(sink["msdynci_unifiedactivity"]) == len(read(lake, "activities", "unified_activity"))
    memberships = read(lake, "segments", "segment_membership")
    assert len(sink["msdynci_segmentmembership"]) == len(memberships)
    for segments in memberships["Segments"]:
        names = json.loads(segments)
        assert names == sorted(set(names)) and names


def test_sql_over_the_lake_export_counts_the_profiles(runs, capsys):
    config, _, first, _, _ = runs
    capsys.readouterr()
    assert (
        main(["--config", str(config.path), "sql", "SELECT count(*) AS n FROM CustomerProfile", "--format", "json"])
        == 0
    )
    out = capsys.readouterr().out
    assert json.loads(out)[0]["n"] == len(first["profile"])


def test_runs_started_by_tests_stay_out_of_the_projects_run_history(runs):
    # The CLI keeps runs in $DAGSTER_HOME; the test session's own home holds them, the project's stays untouched.
    home = Path(os.environ["DAGSTER_HOME"]).resolve()
    assert not home.is_relative_to(ROOT.resolve())
    with dg.DagsterInstance.get() as instance:
        # Three runs of the command; the second finds nothing changed and starts no Dagster run.
        assert len(instance.get_run_records()) >= 2


#: Digests of every published table on the bundled sample (sink rows in key order, and each CSV export file). A
#: restructuring must keep them; a deliberate change of output updates them in the same commit, saying why.
PUBLISHED_DIGESTS = {
    "sink/msdynci_alternatekey": "fdd3f12021790c00",
    "sink/msdynci_customermeasure": "eec6c55d1ce12228",
    "sink/msdynci_customerprofile": "03c3ced847851892",
    "sink/msdynci_enrichment": "4a473039da1f67dc",
    "sink/msdynci_prediction": "5202408faad6b774",
    "sink/msdynci_segmentmembership": "940d08c6676f4c32",
    "sink/msdynci_unifiedactivity": "1c75c9b00ac22d1f",
    "export/AlternateKey": "b9ad778b6bcd8e26",
    "export/CustomerMeasure": "4091e7ab0e93160f",
    "export/CustomerProfile": "de076f5533e35482",
    "export/Enrichment": "e5b8e370bbfea433",
    "export/Prediction": "07deb15524d15863",
    "export/SegmentMembership": "81216b494eb3a4ca",
    "export/UnifiedActivity": "ef74c8a836838628",
}


def published_digests(folder: Path) -> dict[str, str]:
    found = {}
    with sqlite3.connect(folder / "sink.sqlite") as db:
        for (table,) in db.execute("SELECT name FROM sqlite_master WHERE type='table' ORDER BY name"):
            digest = hashlib.sha256(repr([r[1] for r in db.execute(f'PRAGMA table_info("{table}")')]).encode())
            for row in db.execute(f'SELECT * FROM "{table}" ORDER BY 1'):
                digest.update(repr(row).encode())
            found[f"sink/{table}"] = digest.hexdigest()[:16]
    # Export files sit under <entity>/<yyyy>/<mm>/<dd>/<hhmm>/: the run's time names the folder, not the content.
    # Every run's snapshot of an entity must hold the same bytes, so each entity has one digest.
    exports: dict[str, set[str]] = {}
    for file in sorted((folder / "lake" / "exports").rglob("*.csv")):
        digest = hashlib.sha256(file.read_bytes()).hexdigest()[:16]
        exports.setdefault(f"export/{file.parents[4].name}", set()).add(digest)
    return found | {key: ", ".join(sorted(digests)) for key, digests in exports.items()}


def test_every_published_table_on_the_sample_keeps_its_digest(runs):
    config, *_ = runs
    assert published_digests(config.base_dir) == PUBLISHED_DIGESTS
