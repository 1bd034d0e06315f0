"""Ingestion from Azure storage (a real Azurite): sources are read in place, outputs land in the Azure lake."""

from __future__ import annotations

import io
import json
import os

import adlfs
import pandas as pd
import pytest

from ci_pipeline.ingest import ingest_table
from ci_pipeline.lake import Lake
from ci_pipeline_tests.ingest.conftest import checks, materialize, metadata, write_config

pytestmark = pytest.mark.slow


def _azure_config(tmp_path, container, tables, connection="env:AZURE_TEST_CONNECTION"):
    lake = {"url": f"abfs://{container}/lake", "connection_string": connection}
    return write_config(tmp_path, tables, lake=lake)


def _fs():
    return adlfs.AzureBlobFileSystem(connection_string=os.environ["AZURE_TEST_CONNECTION"])


def test_csv_in_azure_is_ingested_into_an_azure_lake(tmp_path, azure_container):
    fs = _fs()
    fs.pipe_file(f"{azure_container}/crm/contacts.csv", b"id,name,n\n2,Bob,2\n1,Ann,1\n3,Cy,x\n")
    config = _azure_config(
        tmp_path,
        azure_container,
        {
            "contacts": {
                "format": "csv",
                "path": f"abfs://{azure_container}/crm/contacts.csv",
                "primary_key": "id",
                "columns": {"n": "int64"},
            }
        },
    )
    result = materialize(config)
    assert result.success
    meta = metadata(result, ["src", "contacts"])
    assert (meta["rows_read"], meta["rows_accepted"], meta["rows_quarantined"]) == (3, 2, 1)
    assert checks(result)["rows_balance"].passed
    stored = pd.read_parquet(io.BytesIO(fs.cat_file(f"{azure_container}/lake/ci_pipeline/src/contacts.parquet")))
    assert stored["id"].tolist() == ["1", "2"]
    corrupt = pd.read_parquet(
        io.BytesIO(fs.cat_file(f"{azure_container}/lake/ci_pipeline/src/contacts_corrupt.parquet"))
    )
    assert corrupt["file"].tolist() == [f"abfs://{azure_container}/crm/contacts.csv"]
    assert corrupt["raw"].tolist() == ["3,Cy,x"]
    assert fs.exists(f"{azure_container}/lake/ci_pipeline/_state/ingest/src/contacts/schema.json")


def test_cdm_folder_in_azure_with_account_url_partitions(tmp_path, azure_container, azurite):
    fs = _fs()
    endpoint = f"http://127.0.0.1:{azurite['port']}/devstoreaccount1/{azure_container}"
    model = {
        "name": "loyalty",
        "version": "1.0",
        "entities": [
            {
                "$type": "LocalEntity",
                "name": "Members",
                "attributes": [{"name": "member_id", "dataType": "string"}, {"name": "points", "dataType": "int64"}],
                "partitions": [
                    {
                        "name": "p0",
                        "location": f"{endpoint}/loyalty/Members/part-0.csv",
                        "fileFormatSettings": {"$type": "CsvFormatSettings", "columnHeaders": False},
                    },
                    {
                        "name": "p1",
                        "location": "Members/part-1.csv",
                        "fileFormatSettings": {"$type": "CsvFormatSettings", "columnHeaders": False},
                    },
                ],
            }
        ],
    }
    fs.pipe_file(f"{azure_container}/loyalty/model.json", json.dumps(model).encode())
    fs.pipe_file(f"{azure_container}/loyalty/Members/part-0.csv", b"m2,20\nm1,10\n")
    fs.pipe_file(f"{azure_container}/loyalty/Members/part-1.csv", b"m3,30\nm3,31\n")
    config = _azure_config(
        tmp_path,
        azure_container,
        {
            "members": {
                "format": "cdm",
                "path": f"abfs://{azure_container}/loyalty/model.json",
                "entity": "Members",
                "primary_key": "member_id",
            }
        },
    )
    result = materialize(config)
    assert result.success
    meta = metadata(result, ["src", "members"])
    assert (meta["rows_read"], meta["rows_accepted"], meta["rows_quarantined"]) == (4, 3, 1)
    stored = pd.read_parquet(io.BytesIO(fs.cat_file(f"{azure_container}/lake/ci_pipeline/src/members.parquet")))
    assert stored["member_id"].tolist() == ["m1", "m2", "m3"] and stored["points"].tolist() == [10, 20, 30]


def test_missing_azure_file_is_a_clear_error(tmp_path, azure_container):
    config = _azure_config(
        tmp_path,
        azure_container,
        {"t": {"format": "csv", "path": f"abfs://{azure_container}/nope.csv", "primary_key": "id"}},
    )
    lake = Lake.from_config(config.lake, tmp_path)
    with pytest.raises(Exception, match=rf"abfs://{azure_container}/nope\.csv: file or folder not found"):
        ingest_table(config, lake, "src", "t")


def test_unreachable_storage_account_is_a_clear_error(tmp_path, monkeypatch):
    from ci_pipeline_tests.conftest import AZURITE_KEY, free_port

    dead = (
        f"DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey={AZURITE_KEY};"
        f"BlobEndpoint=http://127.0.0.1:{free_port()}/devstoreaccount1;"
    )
    monkeypatch.setenv("DEAD_CONNECTION", dead)
    config = _azure_config(
        tmp_path,
        "c",
        {"t": {"format": "csv", "path": "abfs://c/t.csv", "primary_key": "id"}},
        connection="env:DEAD_CONNECTION",
    )
    result = materialize(config)
    assert not result.success
    message = result.get_step_failure_events()[0].event_specific_data.error.to_string()
    assert "StorageError" in message and "is unreachable" in message and "check the account name" in message


def test_delta_table_in_azure_is_read_incrementally(tmp_path, azure_container):
    from deltalake import write_deltalake

    from ci_pipeline.ingest.delta import delta_storage_options

    config = _azure_config(
        tmp_path,
        azure_container,
        {"events": {"format": "delta", "path": f"abfs://{azure_container}/events", "primary_key": "id"}},
    )
    lake = Lake.from_config(config.lake, tmp_path)
    uri = f"az://{azure_container}/events"
    options = delta_storage_options(lake, f"abfs://{azure_container}/events")
    write_deltalake(uri, pd.DataFrame({"id": [2, 1], "v": ["b", "a"]}), storage_options=options)
    assert metadata(materialize(config), ["src", "events"])["rows_accepted"] == 2
    write_deltalake(uri, pd.DataFrame({"id": [3], "v": ["c"]}), mode="append", storage_options=options)
    meta = metadata(materialize(config), ["src", "events"])
    assert "read 1 new file(s) only" in meta["notes"] and meta["rows_accepted"] == 3
