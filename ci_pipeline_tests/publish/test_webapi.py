"""The Dataverse Web API sink against a real HTTP server on loopback (ci_pipeline.dataverse.loopback)."""

from __future__ import annotations

import threading
import time

import pandas as pd
import pytest
from azure.core.credentials import AccessToken

from ci_pipeline.config.publish import DataverseConfig
from ci_pipeline.dataverse.loopback import Fault, LoopbackDataverse
from ci_pipeline.dataverse.prepare import prepare
from ci_pipeline.dataverse.webapi import DataverseClient, DataverseError, WebApiSink
from ci_pipeline.errors import UserError
from ci_pipeline.lake import Lake
from ci_pipeline_tests.conftest import free_port

KEYS_SET = "msdynci_alternatekeys"
PROFILES_SET = "msdynci_customerprofiles"


class ServerCredential:
    """An azure-identity style credential whose tokens the loopback server issues (and can expire)."""

    def __init__(self, server: LoopbackDataverse | None, valid: bool = True):
        self.server, self.valid = server, valid
        self.scopes: list[tuple] = []
        self.lock = threading.Lock()

    def get_token(self, *scopes, **kwargs):
        with self.lock:
            self.scopes.append(scopes)
        token = self.server.issue_token() if self.valid else "not-a-token"
        return AccessToken(token, int(time.time()) + 3600)


@pytest.fixture
def server():
    with LoopbackDataverse(latency=0.005, page_size_cap=7) as running:
        yield running


def client_for(server, credential=None, **options) -> DataverseClient:
    settings = {"chunk_size": 10, "elastic_chunk_size": 5, "max_concurrency": 4, "backoff": 0.01}
    settings.update(options)
    return DataverseClient(server.org_url, credential or ServerCredential(server), **settings)


def keys_frame(n: int, bad: set[int] = frozenset()) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "DataSourceName": "crm",
            "EntityName": "contacts",
            "AlternateValue": [f"k{i}" for i in range(n)],
            "KeyRing": ["REJECT-ME" if i in bad else "[]" for i in range(n)],
            "CustomerId": [f"C{i // 2}" for i in range(n)],
        }
    )


def expected_rows(table) -> dict[str, dict]:
    frame = table.frame.astype(object).where(table.frame.notna(), None)
    return {row[table.primary_key]: row for row in frame.to_dict(orient="records")}


def successful_sends(server) -> dict[str, int]:
    counts: dict[str, int] = {}
    for record in server.records():
        if record.status == 204 and record.method in ("POST", "PATCH") and "$batch" not in record.path:
            for key in record.ids:
                counts[key] = counts.get(key, 0) + 1
    return counts


def test_publish_lands_exact_rows_pages_keys_and_deletes_stale_rows(server, tmp_path):
    table = prepare("AlternateKey", keys_frame(40))
    server.tables[KEYS_SET] = {f"00000000-0000-0000-0000-00000000000{i}": {"x": i} for i in range(3)}
    credential = ServerCredential(server)
    lake = Lake.local(tmp_path)
    with WebApiSink(client_for(server, credential), lake=lake) as sink:
        result = sink.publish(table)
    assert server.rows(KEYS_SET) == expected_rows(table)
    assert (result.upserted, result.deleted, result.rejected) == (40, 3, 0)
    assert credential.scopes[0] == (f"{server.org_url}/.default",)
    upserts = server.records("POST", "UpsertMultiple")
    assert len(upserts) == 8  # elastic table: 5 rows a request
    assert len(server.records("GET", "$skiptoken")) >= 6  # 43 keys in pages of 7, followed by nextLink
    assert len(server.records("POST", "$batch")) == 1
    assert sink.usage()["msdynci_alternatekey"].rows == 40
    # Publishing again changes nothing and deletes nothing.
    with WebApiSink(client_for(server), lake=lake) as sink:
        again = sink.publish(table)
    assert again.deleted == 0 and server.rows(KEYS_SET) == expected_rows(table)


def test_429_pauses_every_sender_then_ramps_up(server):
    server.latency = 0.03
    server.faults = [Fault("429", times=1, retry_after=0.6, path_contains="UpsertMultiple")]
    table = prepare("CustomerProfile", pd.DataFrame({"CustomerId": [f"C{i}" for i in range(200)]}))
    with WebApiSink(client_for(server, max_concurrency=4)) as sink:
        result = sink.publish(table)
    assert result.throttles == 1 and server.rows(PROFILES_SET) == expected_rows(table)
    throttled = next(r for r in server.records() if r.status == 429)
    # Requests already on the wire when the 429 was sent may arrive just after it; nothing new starts until the
    # Retry-After has passed, from any sender.
    during = [r for r in server.records() if throttled.end + 0.05 < r.start < throttled.end + 0.6]
    assert during == []
    after = sorted((r for r in server.records() if r.start >= throttled.end + 0.6), key=lambda r: r.start)
    assert after[0].end <= after[1].start  # one sender first, then more
    assert _most_in_flight(server.records()) <= 4


def _most_in_flight(records) -> int:
    # The server notes a request's end after writing its answer, a moment after the client may have sent the next.
    events = sorted([(r.start, 1) for r in records] + [(r.end - 0.003, -1) for r in records])
    most = current = 0
    for _, step in events:
        current += step
        most = max(most, current)
    return most


def test_faults_are_retried_and_no_successful_request_is_sent_again(server):
    server.faults = [
        Fault("503", times=2, path_contains="UpsertMultiple"),
        Fault("drop", times=2, path_contains="UpsertMultiple"),
        Fault("504", times=1, method="GET"),
        Fault("expire", times=1, path_contains="UpsertMultiple"),
        Fault("429", times=1, retry_after=0.1, method="POST", path_contains="$batch"),
    ]
    server.tables[KEYS_SET] = {"00000000-0000-0000-0000-000000000001": {"x": 1}}
    table = prepare("AlternateKey", keys_frame(60))
    with WebApiSink(client_for(server)) as sink:
        result = sink.publish(table)
    assert server.rows(KEYS_SET) == expected_rows(table)
    assert all(f.times == 0 for f in server.faults)
    assert result.retries >= 7 and result.throttles == 1 and result.deleted == 1
    assert set(successful_sends(server).values()) == {1}
    assert len(successful_sends(server)) == 60


def test_bad_row_is_isolated_dead_lettered_and_the_rest_lands(server, tmp_path):
    table = prepare("CustomerMeasure", pd.DataFrame({"CustomerId": [f"C{i}" for i in range(35)], "Measures": "{}"}))
    bad_key = table.frame["msdynci_customermeasureid"].iloc[17]
    table.frame.loc[17, "msdynci_measures"] = "REJECT-ME"
    lake = Lake.local(tmp_path)
    with WebApiSink(client_for(server), lake=lake, run_id="run1") as sink:
        result = sink.publish(table)
    landed = server.rows("msdynci_customermeasures")
    assert len(landed) == 34 and bad_key not in landed
    assert result.rejected == 1 and result.upserted == 34 and bad_key in result.errors[0]
    letters = lake.read_parquet("ci_pipeline/publish/dead_letter/msdynci_customermeasure/run1.parquet")
    assert letters["key"].tolist() == [bad_key] and letters["status"].tolist() == [400]
    assert "not valid" in letters["error"].iloc[0]
    assert len(server.records("PATCH")) >= 1  # the isolated row was tried on its own


def test_429_storm_finishes_with_bounded_requests(server):
    server.faults = [Fault("429", times=25, retry_after=0.02, path_contains="UpsertMultiple")]
    table = prepare("AlternateKey", keys_frame(50))
    with WebApiSink(client_for(server, max_retries=40)) as sink:
        result = sink.publish(table)
    assert server.rows(KEYS_SET) == expected_rows(table)
    assert len(server.records("POST", "UpsertMultiple")) == 10 + 25
    assert result.throttles == 25


def test_unreachable_dataverse_gives_a_clear_error_and_reports_nothing_done(tmp_path):
    lake = Lake.local(tmp_path)
    dead = DataverseClient(
        f"http://127.0.0.1:{free_port()}", ServerCredential(None, valid=False), max_retries=2, backoff=0.01
    )
    dead.tokens.get = lambda refresh_from=None: "token"
    with (
        WebApiSink(dead, lake=lake) as sink,
        pytest.raises(DataverseError, match="gave up after 3 attempts.*ConnectError"),
    ):
        sink.publish(prepare("AlternateKey", keys_frame(3)))
    assert lake.find("ci_pipeline/publish") == []


def test_wrong_credentials_are_refused_clearly_and_nothing_lands(server):
    with (
        WebApiSink(client_for(server, ServerCredential(server, valid=False))) as sink,
        pytest.raises(DataverseError, match="refused the credentials"),
    ):
        sink.publish(prepare("AlternateKey", keys_frame(3)))
    assert server.rows(KEYS_SET) == {}


def test_secrets_are_resolved_at_the_first_request(server, monkeypatch, tmp_path):
    config = DataverseConfig(
        url=server.org_url, credential="client_secret", tenant_id="t", client_id="c", client_secret="env:CI_TEST_DV"
    )
    monkeypatch.delenv("CI_TEST_DV", raising=False)
    client = DataverseClient.from_config(config, tmp_path)  # no secret needed yet
    with pytest.raises(UserError, match="environment variable CI_TEST_DV is not set"):
        client.request("GET", "x", stats=__import__("ci_pipeline.dataverse.webapi", fromlist=["Stats"]).Stats())
    client.close()


def test_publish_assets_write_to_dataverse_through_the_configured_sink(server, tmp_path, monkeypatch):
    import dagster as dg

    from ci_pipeline.config import load_config
    from ci_pipeline.config.unify import UnifyConfig
    from ci_pipeline.dataverse import webapi
    from ci_pipeline.defs import publish
    from ci_pipeline.defs.resources import shared_resources
    from ci_pipeline_tests.publish.test_assets import upstream_assets

    (tmp_path / "ci_pipeline.yaml").write_text(
        "sources:\n  crm:\n    owner: me\n    tables:\n      contacts: {format: csv, path: c.csv, primary_key: id}\n"
        f"publish:\n  prefix: contoso\n  sink:\n    kind: dataverse\n    dataverse:\n      url: {server.org_url}\n"
        "      elastic_chunk_size: 2\n      max_concurrency: 2\n"
    )
    config = load_config(tmp_path / "ci_pipeline.yaml").model_copy(update={"unify": UnifyConfig.model_construct()})
    monkeypatch.setattr(webapi, "credential_factory", lambda cfg, base: lambda: ServerCredential(server))
    result = dg.materialize(
        [*upstream_assets(["C1", "C2", "C3"]), *publish.build(config).assets], resources=shared_resources(config)
    )
    assert result.success
    assert len(server.rows("contoso_alternatekeys")) == 3 and len(server.rows("contoso_customerprofiles")) == 3
    assert server.rows("contoso_enrichments") == {}
    # Chunks of two: one UpsertMultiple, and the last single row as PATCH.
    assert len(server.records("POST", "contoso_alternatekeys/Microsoft.Dynamics.CRM.UpsertMultiple")) == 1
    assert len(server.records("PATCH", "contoso_alternatekeys(")) == 1
    metadata = {
        e.asset_key.to_user_string(): e.materialization.metadata for e in result.get_asset_materialization_events()
    }
    assert metadata["publish/sink_alternate_key"]["requests"].value >= 3
    assert metadata["publish/sink_capacity"]["profiles"].value == 3


def test_failed_publish_deletes_nothing_and_a_rerun_equals_a_clean_run(server):
    stale = "00000000-0000-0000-0000-000000000009"
    server.tables[KEYS_SET] = {stale: {"x": 9}}
    server.faults = [Fault("503", times=1, path_contains="UpsertMultiple")]
    table = prepare("AlternateKey", keys_frame(30))
    with WebApiSink(client_for(server, max_retries=0)) as sink, pytest.raises(DataverseError, match="gave up"):
        sink.publish(table)
    assert stale in server.rows(KEYS_SET)  # no reconciliation after a failed upsert
    assert server.records("POST", "$batch") == []
    with WebApiSink(client_for(server)) as sink:
        sink.publish(table)
    assert server.rows(KEYS_SET) == expected_rows(table)
