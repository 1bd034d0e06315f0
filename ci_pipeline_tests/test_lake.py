"""The lake: atomic writes and Parquet round trips on a local folder and on a real Azurite."""

from __future__ import annotations

import pandas as pd
import pytest

from ci_pipeline.config.lake import LakeConfig
from ci_pipeline.errors import StorageError
from ci_pipeline.lake import Lake

FRAME = pd.DataFrame({"id": ["a", "b"], "n": [1, 2]})


def test_local_parquet_round_trip_and_no_temporary_files_left(tmp_path):
    lake = Lake.local(tmp_path)
    lake.write_parquet("stage/table.parquet", FRAME)
    pd.testing.assert_frame_equal(lake.read_parquet("stage/table.parquet"), FRAME, check_dtype=False)
    assert lake.find("stage") == ["stage/table.parquet"]


def test_a_failed_write_leaves_the_old_file_intact(tmp_path, monkeypatch):
    lake = Lake.local(tmp_path)
    lake.write_bytes("f.bin", b"old")

    def broken_replace(*_):
        raise OSError("disk full")

    monkeypatch.setattr("os.replace", broken_replace)
    with pytest.raises(OSError):
        lake.write_bytes("f.bin", b"new")
    monkeypatch.undo()
    assert lake.read_bytes("f.bin") == b"old"
    assert lake.find() == ["f.bin"]


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(StorageError, match="not found in the lake"):
        Lake.local(tmp_path).read_bytes("nothing.parquet")


@pytest.mark.slow
def test_azurite_round_trip_through_config(azure_container, tmp_path):
    config = LakeConfig(url=f"abfs://{azure_container}/lake", connection_string="env:AZURE_TEST_CONNECTION")
    lake = Lake.from_config(config, tmp_path)
    lake.write_parquet("stage/table.parquet", FRAME)
    assert lake.find("stage") == ["stage/table.parquet"]
    pd.testing.assert_frame_equal(lake.read_parquet("stage/table.parquet"), FRAME, check_dtype=False)
    lake.delete("stage/table.parquet")
    assert lake.find("stage") == []


@pytest.mark.slow
def test_unreachable_storage_account_is_a_clear_error(tmp_path, monkeypatch):
    from ci_pipeline_tests.conftest import AZURITE_KEY, free_port

    dead = (
        f"DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey={AZURITE_KEY};"
        f"BlobEndpoint=http://127.0.0.1:{free_port()}/devstoreaccount1;"
    )
    monkeypatch.setenv("DEAD_CONNECTION", dead)
    with pytest.raises(StorageError, match=r"abfs://c/x: storage endpoint 127.0.0.1:\d+ is unreachable"):
        Lake.from_config(LakeConfig(url="abfs://c/x", connection_string="env:DEAD_CONNECTION"), tmp_path)
