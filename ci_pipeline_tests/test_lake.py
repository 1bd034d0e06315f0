"""The lake: atomic writes and Parquet round trips on a local folder and on a real Azurite."""

from __future__ import annotations

import socket
import time
import traceback
import warnings
from datetime import UTC, datetime, timedelta

import duckdb
import pandas as pd
import pytest

import ci_pipeline.lake as lake_module
from ci_pipeline.config.lake import LakeConfig
from ci_pipeline.errors import StorageError
from ci_pipeline.lake import Lake
from ci_pipeline_tests.conftest import SERVE

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
    assert lake.dataset("stage/table.parquet").to_table(columns=["n"]).column("n").to_pylist() == [1, 2]
    # A streamed write is uploaded when complete; an interrupted one leaves the blob as it was.
    import pyarrow as pa
    import pyarrow.parquet as pq

    with lake.writing("stage/table.parquet") as local:
        pq.write_table(pa.table({"id": ["c"], "n": [3]}), local)
    with pytest.raises(RuntimeError), lake.writing("stage/table.parquet") as local:
        pq.write_table(pa.table({"id": ["d"]}), local)
        raise RuntimeError("killed while writing")
    assert lake.read_parquet("stage/table.parquet")["n"].tolist() == [3]
    lake.delete("stage/table.parquet")
    assert lake.find("stage") == []


def test_a_container_that_does_not_exist_is_named_with_its_connection(azurite):
    """The SDK fails a write to a missing container with errors about anything but it (a SAS: a RecursionError)."""
    from azure.storage.blob import ContainerSasPermissions, generate_container_sas

    from ci_pipeline_tests.conftest import AZURITE_KEY

    endpoint = f"http://127.0.0.1:{azurite['port']}/devstoreaccount1"
    sas = generate_container_sas(
        "devstoreaccount1",
        "nosuchbox",
        AZURITE_KEY,
        permission=ContainerSasPermissions(read=True, write=True),
        expiry=datetime.now(UTC) + timedelta(hours=1),
    )
    for secret in (azurite["connection_string"], f"BlobEndpoint={endpoint};SharedAccessSignature={sas}"):
        connection = {"name": "partner", "container": "nosuchbox", "account": "devstoreaccount1"}
        lake = Lake.for_connection({**connection, "connection_string": secret})
        with pytest.raises(StorageError) as caught, warnings.catch_warnings(record=True) as warned:
            lake.exists("")  # as an export asks first
            lake.write_bytes("exports/x/model.json", b"{}")
        # Only the message below: the storage library's "Failed to fetch container properties for nosuchbox.
        # Assume it exists already" (a SAS may not ask) came before it and said the opposite.
        assert [str(w.message) for w in warned if "container" in str(w.message)] == []
        assert str(caught.value) == (
            "abfs://nosuchbox/exports/x/model.json: the container 'nosuchbox' of connection 'partner' does not exist "
            "in the storage account; create it, or fix the connection's --container"
        )


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


class BlobStub:
    """A loopback HTTP server standing in for a storage account that refuses every request with one status.

    Its error code header and body quote the request back, SAS signature included, as proxies and some services
    do; ``requests`` records every path asked for.
    """

    def __init__(self, status: int):
        import http.server
        import threading

        stub = self
        self.requests: list[str] = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def _answer(self):
                stub.requests.append(self.path)
                body = f"<Error><Code>Refused</Code><Message>refused {self.command} {self.path}</Message></Error>"
                data = body.encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/xml")
                self.send_header("Content-Length", str(len(data)))
                self.send_header("x-ms-error-code", f"Refused {self.path}")
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            do_GET = do_HEAD = do_PUT = do_DELETE = _answer

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, kwargs=SERVE, daemon=True).start()
        self.port = self.server.server_address[1]

    def close(self):
        self.server.shutdown()
        self.server.server_close()


SAS = "sv=2022-11-02&ss=b&srt=sco&sp=rwdlac&se=2030-01-01T00:00:00Z&sig=TopSecretSignature0123%3D"


@pytest.mark.parametrize("status", [403, 404, 500])
def test_a_refusing_storage_account_fails_fast_and_never_shows_the_sas(tmp_path, monkeypatch, status):
    stub = BlobStub(status)
    monkeypatch.setenv("STUB_CONNECTION", f"BlobEndpoint=http://127.0.0.1:{stub.port}/acct;SharedAccessSignature={SAS}")
    try:
        lake = Lake.from_config(LakeConfig(url="abfs://c/lake", connection_string="env:STUB_CONNECTION"), tmp_path)
        started = time.monotonic()
        with pytest.raises(StorageError) as caught:
            lake.read_bytes("stage/table.parquet")
        seconds = time.monotonic() - started
    finally:
        stub.close()
    assert any("sig=TopSecretSignature0123" in path for path in stub.requests)  # the SDK really sent it
    error = caught.value
    assert "abfs://c/lake/stage/table.parquet: " in str(error)
    text = "".join(traceback.format_exception(error))
    assert "TopSecretSignature0123" not in text
    # 500 is retried twice (about 1 s and 3 s apart); the Azure SDK's defaults took 87 s here.
    assert seconds < (12 if status == 500 else 3)


def test_a_storage_account_that_never_answers_fails_at_open_within_the_connect_timeout(tmp_path, monkeypatch):
    # The same wait for an answer as the product's 5 s, only shorter: the test waits it out in full.
    monkeypatch.setattr(lake_module, "CONNECT_TIMEOUT", 1)
    with socket.socket() as silent:  # connections open and nothing ever answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        monkeypatch.setenv(
            "SILENT_CONNECTION",
            f"BlobEndpoint=http://127.0.0.1:{silent.getsockname()[1]}/acct;SharedAccessSignature={SAS}",
        )
        started = time.monotonic()
        with pytest.raises(StorageError, match=r"unreachable \(no answer within 1 s\)"):
            Lake.from_config(LakeConfig(url="abfs://c/lake", connection_string="env:SILENT_CONNECTION"), tmp_path)
        assert time.monotonic() - started < 1 + 3


def test_a_stored_table_reads_as_a_dataset_by_chosen_columns(tmp_path):
    lake = Lake.local(tmp_path)
    lake.write_parquet("facts/orders.parquet", pd.DataFrame({"CustomerId": ["a", "b", "a"], "Amount": [1.0, 2.0, 3.5]}))
    dataset = lake.dataset("facts/orders.parquet")
    assert dataset.to_table(columns=["Amount"]).column("Amount").to_pylist() == [1.0, 2.0, 3.5]
    totals = duckdb.sql('SELECT "CustomerId", sum("Amount") FROM dataset GROUP BY 1 ORDER BY 1').fetchall()
    assert totals == [("a", 4.5), ("b", 2.0)]
    with pytest.raises(StorageError, match="facts/none.parquet: not found in the lake"):
        lake.dataset("facts/none.parquet")


def test_a_streamed_write_replaces_the_file_only_when_complete(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    lake = Lake.local(tmp_path)
    lake.write_parquet("stage/table.parquet", FRAME)
    with pytest.raises(RuntimeError, match="killed"), lake.writing("stage/table.parquet") as local:
        with pq.ParquetWriter(local, pa.schema([("id", pa.string())])) as writer:
            writer.write_batch(pa.record_batch({"id": ["half"]}))
        raise RuntimeError("killed while writing")
    pd.testing.assert_frame_equal(lake.read_parquet("stage/table.parquet"), FRAME, check_dtype=False)
    assert lake.find("stage") == ["stage/table.parquet"]
    with lake.writing("stage/table.parquet") as local:
        pq.write_table(pa.table({"id": ["new"]}), local)
    assert lake.read_parquet("stage/table.parquet")["id"].tolist() == ["new"]
    assert lake.find("stage") == ["stage/table.parquet"]


def test_a_connection_string_that_is_none_is_told_with_its_connection():
    """A wrong secret stored as the connection string (a SAS alone, a key): named, without its value."""
    connection = {"name": "partner", "container": "c", "account": "acct", "connection_string": "sv=2022&sig=S3cr3tSig"}
    with pytest.raises(StorageError) as caught:
        Lake.for_connection(connection)
    assert str(caught.value).startswith(
        "connection 'partner': abfs://c: the connection string names neither AccountName nor BlobEndpoint"
    )
    assert "S3cr3tSig" not in str(caught.value)
