"""The new-file sensor, evaluated tick by tick with build_sensor_context on a local folder and on Azurite."""

from __future__ import annotations

import json
import os
import time
from datetime import UTC, datetime, timedelta

import adlfs
import dagster as dg
import pytest
import yaml

from ci_pipeline.config import load_config
from ci_pipeline.defs import orchestration
from ci_pipeline.defs.orchestration import watched_tables
from ci_pipeline.defs.registry import REFRESH_TAG
from ci_pipeline.defs.resources import LakeResource
from ci_pipeline_tests.orchestration.conftest import build_project, stage_definitions, write_project

SETTLED = {"new_files": {"settle_seconds": 0}}
CONTACTS_RUN = [
    ["crm", "contacts"],
    ["crm", "contacts_corrupt"],
    ["publish", "customer"],
    ["unify", "customer_profile"],
    ["unify", "match_pairs"],
]


class Ticker:
    """Evaluates the project's new-file sensor repeatedly, carrying the cursor like the daemon does."""

    def __init__(self, config):
        self.defs = build_project(config)
        self.sensor = self.defs.resolve_sensor_def("new_files")
        self.lake = LakeResource.from_config(config)
        self.cursor = None

    def __call__(self) -> dg.SensorResult:
        context = dg.build_sensor_context(cursor=self.cursor, resources={"lake": self.lake})
        result = self.sensor.evaluate_tick(context)
        self.cursor = result.cursor
        return result


def keys(request: dg.RunRequest) -> list[list[str]]:
    return sorted(key.path for key in request.asset_selection)


def old(path, seconds=3600):
    stamp = time.time() - seconds
    os.utime(path, (stamp, stamp))


@pytest.fixture
def local(tmp_path):
    config = load_config(write_project(tmp_path, SETTLED))
    return tmp_path, Ticker(config)


def test_baseline_then_new_file_requests_the_table_and_everything_downstream(local):
    folder, tick = local
    first = tick()
    assert not first.run_requests and "baseline" in first.skip_message
    (folder / "crm" / "contacts.csv").write_text("id\n1\n")
    result = tick()
    [request] = result.run_requests
    assert keys(request) == CONTACTS_RUN
    assert request.tags["ci_pipeline/mode"] == "incremental"
    assert request.tags["ci_pipeline/changed_tables"] == "crm/contacts"
    # The request is runnable as is: the sensor's job accepts exactly this selection.
    job = tick.defs.resolve_job_def("incremental_refresh").get_subset(asset_selection=set(request.asset_selection))
    assert job.execute_in_process(instance=dg.DagsterInstance.ephemeral(), tags=request.tags).success
    # The cursor holds a count, a digest and a watermark per table, not the files' paths.
    saved = json.loads(result.cursor)["tables"]["crm/contacts"]
    assert saved["files"] == 1 and saved["watermark"] > 0 and str(folder) not in result.cursor


def test_new_files_run_and_files_already_processed_do_not_with_a_small_cursor(local):
    folder, tick = local
    orders = folder / "shop" / "orders"
    for i in range(500):
        (orders / f"part-{i:04}.parquet").write_bytes(b"PAR1")
        old(orders / f"part-{i:04}.parquet")
    assert not tick().run_requests
    assert len(tick.cursor) < 400, tick.cursor
    assert not tick().run_requests
    (orders / "part-0500.parquet").write_bytes(b"PAR1")
    [request] = tick().run_requests
    assert request.tags["ci_pipeline/changed_files"] == "1"
    assert len(tick.cursor) < 400
    old(orders / "part-0007.parquet", seconds=7200)  # touched to an older time: changed, so it runs again
    assert tick().run_requests
    assert not tick().run_requests


def test_same_file_again_starts_nothing_and_a_changed_file_runs_again(local):
    folder, tick = local
    tick()
    (folder / "crm" / "contacts.csv").write_text("id\n1\n")
    first_key = tick().run_requests[0].run_key
    again = tick()
    assert not again.run_requests and again.skip_message.startswith("no new or changed files")
    (folder / "crm" / "contacts.csv").write_text("id\n1\n2\n")
    changed = tick().run_requests[0]
    assert changed.run_key != first_key and keys(changed) == CONTACTS_RUN


def test_the_same_batch_gives_the_same_run_key(local):
    # A daemon restart that re-evaluates a tick with the old cursor must not start a second run.
    folder, tick = local
    tick()
    (folder / "shop" / "orders" / "part-0.parquet").write_bytes(b"PAR1")
    before = tick.cursor
    first = tick().run_requests[0]
    tick.cursor = before
    assert tick().run_requests[0].run_key == first.run_key
    assert keys(first) == [
        ["publish", "customer"],
        ["shop", "orders"],
        ["unify", "customer_profile"],
        ["unify", "match_pairs"],
    ]


def test_partial_file_waits_for_the_next_tick(tmp_path):
    tick = Ticker(load_config(write_project(tmp_path, {"new_files": {"settle_seconds": 600}})))
    tick()
    orders = tmp_path / "shop" / "orders"
    (orders / "part-0.parquet.tmp").write_bytes(b"PAR1")
    result = tick()
    assert not result.run_requests and "shop/orders: 1 file(s) waiting (temporary name" in result.skip_message
    (orders / "part-0.parquet.tmp").rename(orders / "part-0.parquet")
    growing = tick()
    assert not growing.run_requests and "still being written" in growing.skip_message
    with open(orders / "part-0.parquet", "ab") as handle:
        handle.write(b"more")
    assert not tick().run_requests
    [request] = tick().run_requests  # unchanged since the last tick: complete
    assert request.tags["ci_pipeline/changed_tables"] == "shop/orders"


def test_a_burst_of_files_gives_one_run(local):
    folder, tick = local
    tick()
    for i in range(200):
        (folder / "shop" / "orders" / f"part-{i:04}.parquet").write_bytes(b"PAR1")
    (folder / "crm" / "contacts.csv").write_text("id\n1\n")
    result = tick()
    assert len(result.run_requests) == 1
    request = result.run_requests[0]
    assert request.tags["ci_pipeline/changed_files"] == "201"
    assert request.tags["ci_pipeline/changed_tables"] == "crm/contacts,shop/orders"
    assert ["crm", "contacts"] in keys(request) and ["shop", "orders"] in keys(request)
    assert not tick().run_requests


def test_unreachable_storage_is_reported_without_losing_the_cursor(tmp_path, monkeypatch):
    monkeypatch.setenv(
        "DEAD_STORAGE",
        "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=a2V5;"
        "BlobEndpoint=http://127.0.0.1:9/devstoreaccount1;",
    )
    config = load_config(
        write_project(
            tmp_path,
            SETTLED,
            lake={"url": "lake", "connection_string": "env:DEAD_STORAGE"},
            orders="abfs://landing/shop/orders",
        )
    )
    tick = Ticker(config)
    tick.lake = LakeResource.from_config(config).model_copy(update={"url": "abfs://landing/lake"})
    first = tick()
    assert not first.run_requests
    assert "shop/orders: cannot list abfs://landing/shop/orders" in first.skip_message
    assert "check the path, the credentials and that the storage is reachable" in first.skip_message
    # The reachable source keeps working and the unreachable one keeps no half-made cursor entry.
    (tmp_path / "crm" / "contacts.csv").write_text("id\n1\n")
    second = tick()
    assert second.run_requests[0].tags["ci_pipeline/changed_tables"] == "crm/contacts"
    assert "shop/orders" not in json.loads(second.cursor)["tables"]


def test_missing_lake_secret_is_a_clear_skip(tmp_path, monkeypatch):
    monkeypatch.delenv("NOT_SET_ANYWHERE", raising=False)
    config = load_config(
        write_project(tmp_path, SETTLED, lake={"url": "abfs://lake/x", "connection_string": "env:NOT_SET_ANYWHERE"})
    )
    result = Ticker(config)()
    assert not result.run_requests
    assert "environment variable NOT_SET_ANYWHERE is not set" in result.skip_message


@pytest.mark.slow
def test_new_and_changed_blobs_on_azure_storage(tmp_path, azure_container):
    fs = adlfs.AzureBlobFileSystem(connection_string=os.environ["AZURE_TEST_CONNECTION"])
    config = load_config(
        write_project(
            tmp_path,
            SETTLED,
            lake={"url": f"abfs://{azure_container}/lake", "connection_string": "env:AZURE_TEST_CONNECTION"},
            contacts=f"abfs://{azure_container}/crm/contacts.csv",
            orders=f"abfs://{azure_container}/shop/orders",
        )
    )
    tick = Ticker(config)
    fs.pipe_file(f"{azure_container}/shop/orders/part-0.parquet", b"PAR1")
    assert "baseline" in tick().skip_message
    fs.pipe_file(f"{azure_container}/shop/orders/part-1.parquet", b"PAR1")
    fs.pipe_file(f"{azure_container}/shop/orders/part-2.parquet._COPYING_", b"PA")
    waiting = tick()
    assert not waiting.run_requests and "temporary name" in waiting.skip_message
    fs.rm(f"{azure_container}/shop/orders/part-2.parquet._COPYING_")
    fs.pipe_file(f"{azure_container}/crm/contacts.csv", b"id\n1\n")
    [request] = tick().run_requests
    assert request.tags["ci_pipeline/changed_tables"] == "crm/contacts,shop/orders"
    assert json.loads(tick.cursor)["tables"]["shop/orders"]["files"] == 2
    assert not tick().run_requests
    fs.pipe_file(f"{azure_container}/shop/orders/part-0.parquet", b"PAR1-rewritten")
    [changed] = tick().run_requests
    assert changed.tags["ci_pipeline/changed_tables"] == "shop/orders"


def test_incremental_hour_folders_start_a_run_once_closed(tmp_path):
    config_file = write_project(tmp_path, SETTLED, orders="shop/orders_incremental")
    settings = yaml.safe_load(config_file.read_text())
    settings["sources"]["shop"]["tables"]["orders"].update({"format": "csv", "incremental": {}})
    config_file.write_text(yaml.safe_dump(settings))
    tick = Ticker(load_config(config_file))
    table = tmp_path / "shop" / "orders_incremental"
    (table / "FullData").mkdir(parents=True)
    (table / "FullData" / "part-0.csv").write_text("id\no1\n")
    tick()
    now = datetime.now(UTC)
    open_hour = table / "IncrementalData" / now.strftime("%Y/%m/%d/%H") / "Upserts"
    closed_hour = table / "IncrementalData" / (now - timedelta(hours=1)).strftime("%Y/%m/%d/%H") / "Upserts"
    for folder in (open_hour, closed_hour):
        folder.mkdir(parents=True)
        (folder / "1.csv").write_text("id\no2\n")
    result = tick()
    [request] = result.run_requests
    assert request.tags["ci_pipeline/changed_files"] == "1"
    # The full load and the closed hour are processed; the open hour is not, until it closes.
    assert json.loads(result.cursor)["tables"]["shop/orders"]["files"] == 2
    assert "hour folder closes at" in tick().skip_message


def test_a_new_file_does_not_request_the_on_demand_assets_downstream_of_it(tmp_path):
    # A match model trained on the customer tables is retrained on demand (or monthly), never by a landing file:
    # a run that retrains moves CustomerIds for the model's noise.
    config = load_config(write_project(tmp_path, SETTLED))

    @dg.asset(
        key=["unify", "match_model"], group_name="unify", deps=[["crm", "contacts"]], tags={REFRESH_TAG: "on_demand"}
    )
    def match_model() -> None:
        return None

    stages = dg.Definitions.merge(stage_definitions(config), dg.Definitions(assets=[match_model]))
    watched = watched_tables(config, orchestration.build(config, stages).resolve_asset_graph())
    assert [list(k) for k in watched["crm/contacts"].assets] == CONTACTS_RUN
