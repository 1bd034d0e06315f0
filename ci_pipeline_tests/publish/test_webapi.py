"""The Dataverse Web API sink against a real HTTP server on loopback (ci_pipeline.dataverse.loopback)."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import httpx
import pandas as pd
import pytest
from azure.core.credentials import AccessToken

from ci_pipeline import outputs
from ci_pipeline.config.publish import DataverseConfig
from ci_pipeline.dataverse import webapi
from ci_pipeline.dataverse.loopback import Fault, LoopbackDataverse
from ci_pipeline.dataverse.prepare import prepare
from ci_pipeline.dataverse.webapi import DataverseClient, DataverseError, DataverseUnavailable, Stats, WebApiSink
from ci_pipeline.errors import UserError
from ci_pipeline.lake import Lake
from ci_pipeline.redact import register as register_secret
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
    """An AlternateKey table as unification builds it (identifiers and GUIDs from the output contract)."""
    content = pd.DataFrame(
        {
            "DataSourceName": "crm",
            "EntityName": "contacts",
            "AlternateValue": [f"k{i}" for i in range(n)],
            "KeyRing": ["REJECT-ME" if i in bad else "[]" for i in range(n)],
            "CustomerId": [f"C{i // 2}" for i in range(n)],
        }
    )
    return outputs.build("AlternateKey", content)


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
    server.tables[KEYS_SET] = {f"00000000-0000-0000-0000-0000000000{i:02d}": {"x": i} for i in range(20)}
    credential = ServerCredential(server)
    lake = Lake.local(tmp_path)
    with WebApiSink(client_for(server, credential), lake=lake) as sink:
        result = sink.publish(table)
    assert server.rows(KEYS_SET) == expected_rows(table)
    assert (result.upserted, result.deleted, result.rejected) == (40, 20, 0)
    assert credential.scopes[0] == (f"{server.org_url}/.default",)
    upserts = server.records("POST", "UpsertMultiple")
    assert len(upserts) == 8  # elastic table: 5 rows a request
    assert len(server.records("GET", "$skiptoken")) == 2  # 20 keys in pages of 7, followed by nextLink
    assert len(server.records("POST", "$batch")) == 1
    assert sink.usage()["msdynci_alternatekey"].rows == 40
    # Publishing again sends nothing and deletes nothing.
    with WebApiSink(client_for(server), lake=lake) as sink:
        again = sink.publish(table)
    assert (again.upserted, again.unchanged, again.deleted) == (0, 40, 0)
    assert len(server.records("POST", "UpsertMultiple")) == 8 and server.rows(KEYS_SET) == expected_rows(table)


def test_only_changed_rows_and_rows_missing_in_dataverse_are_sent_again(server, tmp_path):
    lake = Lake.local(tmp_path)
    with WebApiSink(client_for(server), lake=lake) as sink:
        sink.publish(prepare("AlternateKey", keys_frame(30)))
    changed = keys_frame(30)
    changed.loc[changed["AlternateValue"] == "k3", "CustomerId"] = "MOVED"
    table = prepare("AlternateKey", changed)
    gone = next(iter(server.rows(KEYS_SET)))
    del server.tables[KEYS_SET][gone]  # removed in Dataverse by someone else
    sent_before = len(server.records("PATCH")) + len(server.records("POST", "UpsertMultiple"))
    with WebApiSink(client_for(server), lake=lake) as sink:
        result = sink.publish(table)
    assert (result.upserted, result.unchanged) == (2, 28)
    assert server.rows(KEYS_SET) == expected_rows(table)
    assert len(server.records("PATCH")) + len(server.records("POST", "UpsertMultiple")) - sent_before <= 2
    with WebApiSink(client_for(server), lake=lake, skip_unchanged=False) as sink:
        assert sink.publish(table).upserted == 30


def test_429_pauses_every_sender_then_ramps_up(server):
    server.latency = 0.03
    server.faults = [Fault("429", times=1, retry_after=1.0, path_contains="UpsertMultiple")]
    table = prepare("CustomerProfile", pd.DataFrame({"CustomerId": [f"C{i}" for i in range(200)]}))
    with WebApiSink(client_for(server, max_concurrency=4)) as sink:
        result = sink.publish(table)
    assert result.throttles == 1 and server.rows(PROFILES_SET) == expected_rows(table)
    records = server.records()
    throttled = next(r for r in records if r.status == 429)
    # Requests already on their way when the 429 was answered may arrive just after it (allow 0.2 s on a busy
    # machine); nothing new starts until the Retry-After has passed, from any sender.
    during = [round(r.start - throttled.end, 3) for r in records if throttled.end + 0.2 < r.start < throttled.end + 1.0]
    assert during == [], f"requests started during the pause, seconds after the 429: {during}"
    after = sorted((r for r in records if r.start >= throttled.end + 1.0), key=lambda r: r.start)
    # One sender first, then more. The server notes a request's end as its answer goes out, not when the client has
    # read it, so the two may be a few microseconds apart; two senders at once would overlap by most of the 30 ms
    # latency.
    assert after[0].end <= after[1].start + 0.01
    assert _most_in_flight(records) <= 4


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
    measures = pd.DataFrame({"CustomerId": [f"C{i}" for i in range(35)], "Measures": "{}"})
    table = prepare("CustomerMeasure", outputs.build("CustomerMeasure", measures))
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


def test_unreachable_dataverse_gives_a_clear_error_in_seconds_and_reports_nothing_done(tmp_path):
    lake = Lake.local(tmp_path)
    # The configured limits (120 s timeout, 8 retries) are for a slow environment, not for one that is not there.
    dead = DataverseClient(f"http://127.0.0.1:{free_port()}", ServerCredential(None, valid=False), max_retries=8)
    dead.tokens.get = lambda refresh_from=None: "token"
    started = time.monotonic()
    with (
        WebApiSink(dead, lake=lake) as sink,
        pytest.raises(DataverseError, match=r"127\.0\.0\.1:\d+ is unreachable \(ConnectError.* within 5 s\)"),
    ):
        sink.publish(prepare("AlternateKey", keys_frame(3)))
    assert time.monotonic() - started < 5
    assert lake.find("ci_pipeline/publish") == []


def governed_client(org_url: str, **tuning) -> DataverseClient:
    """A client for the governed connection ``dv-prod`` (its secret resolved), as a run builds it."""
    connection = {"name": "dv-prod", "type": "dataverse", "org_url": org_url, "tenant_id": "t", "client_id": "c"}
    return DataverseClient.from_config(DataverseConfig(**tuning), Path("."), {**connection, "client_secret": "s"})


def test_a_governed_connection_that_does_not_answer_names_the_connection_not_configuration_keys():
    # publish.sink.dataverse.url is refused next to publish.sink.connection: the fix is the connection's.
    dead = governed_client(f"http://127.0.0.1:{free_port()}")
    with pytest.raises(DataverseError) as refused:
        dead.request("GET", "x", Stats())
    message = str(refused.value)
    assert "is unreachable" in message and "publish.sink.dataverse" not in message
    assert "check the environment URL of connection 'dv-prod'" in message
    assert "`ci-pipeline connections edit dv-prod --org-url https://" in message
    dead.close()


def test_a_token_a_governed_connection_cannot_get_names_the_connection_and_masks_the_secret(server, monkeypatch):
    secret = "Sx9-secret-VALUE-7781"
    register_secret(secret)

    class Refused:
        def get_token(self, *scopes, **kwargs):
            # Identity libraries can quote what they sent; here the secret straddles the 300th character.
            prefix = "AADSTS7000215: invalid client secret provided: "
            raise ValueError(prefix.ljust(290, "x") + f" {secret} was sent")

    monkeypatch.setattr(webapi, "connection_credential_factory", lambda connection: Refused)
    client = governed_client(server.org_url)
    with pytest.raises(DataverseError) as refused:
        client.request("GET", "x", Stats())
    message = str(refused.value)
    assert secret[:8] not in message, message
    assert "cannot get a token" in message and "publish.sink.dataverse" not in message
    assert "connection 'dv-prod'" in message and "`ci-pipeline connections show dv-prod --check`" in message
    assert "`ci-pipeline connections edit dv-prod --tenant-id" in message
    client.close()


def test_an_error_body_is_redacted_before_it_is_cut():
    secret = "BodySecret-0042-abcdefgh"
    register_secret(secret)
    # Not JSON: the fallback keeps the first 300 characters; the secret crosses that cut.
    response = httpx.Response(500, text="<html>" + "x" * 290 + secret + "</html>")
    message = webapi._error_message(response)
    assert secret[:4] not in message and "***" in message


def test_silent_dataverse_fails_within_the_connect_timeout(tmp_path, monkeypatch):
    # The same wait for a first answer as the product's 5 s, only shorter: the test waits it out in full.
    monkeypatch.setattr(webapi, "CONNECT_TIMEOUT", 1.0)
    # A listening socket that is never accepted from: connections open, no answer ever comes.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        client = DataverseClient(f"http://127.0.0.1:{silent.getsockname()[1]}", lambda: None, timeout=120.0)
        started = time.monotonic()
        with WebApiSink(client) as sink, pytest.raises(DataverseError, match=r"unreachable \(no answer within 1 s\)"):
            sink.publish(prepare("AlternateKey", keys_frame(3)))
        assert time.monotonic() - started < 1 + 3


def test_dataverse_going_away_mid_publish_is_given_up_after_three_attempts(server):
    client = client_for(server, max_retries=8)
    stats = Stats()
    client._check_reachable()  # the environment answered once (the probe keeps no connection open)
    server.stop()
    started = time.monotonic()
    with pytest.raises(DataverseError, match="gave up after 3 attempts.*ConnectError"):
        client.request("GET", f"{KEYS_SET}?$select=msdynci_alternatekeyid", stats)
    # Two retries, 1 s and 2 s apart: bounded however many retries the configuration allows for answers.
    assert 2.5 < time.monotonic() - started < 10
    client.close()


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
    from ci_pipeline.defs import available_tables, publish
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
        [*upstream_assets(["C1", "C2", "C3"]), *publish.build(config, available_tables(config)).assets],
        resources=shared_resources(config),
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


def test_rejected_rows_fail_the_warning_check_of_the_sink_asset(server, tmp_path, monkeypatch):
    import dagster as dg

    from ci_pipeline.config import load_config
    from ci_pipeline.config.unify import UnifyConfig
    from ci_pipeline.dataverse import webapi
    from ci_pipeline.defs import available_tables, publish
    from ci_pipeline.defs.resources import shared_resources
    from ci_pipeline_tests.publish.test_assets import upstream_assets

    (tmp_path / "ci_pipeline.yaml").write_text(
        "sources:\n  crm:\n    owner: me\n    tables:\n      contacts: {format: csv, path: c.csv, primary_key: id}\n"
        f"publish:\n  sink:\n    kind: dataverse\n    dataverse:\n      url: {server.org_url}\n"
    )
    config = load_config(tmp_path / "ci_pipeline.yaml").model_copy(update={"unify": UnifyConfig.model_construct()})
    monkeypatch.setattr(webapi, "credential_factory", lambda cfg, base: lambda: ServerCredential(server))
    defs = publish.build(config, available_tables(config))
    profile_asset = next(a for a in defs.assets if a.key == publish.sink_asset_key("CustomerProfile"))
    result = dg.materialize(
        [*upstream_assets(["C1", "REJECT-ME", "C3"]), profile_asset],
        resources=shared_resources(config),
        selection=[publish.sink_asset_key("CustomerProfile"), dg.AssetKey(["unify", "customer_profile"])],
    )
    assert result.success
    (check,) = result.get_asset_check_evaluations()
    assert not check.passed and check.severity == dg.AssetCheckSeverity.WARN
    # The run summary's reason: how many, the first error, where the rows are kept.
    assert check.description.startswith("1 row(s) of 3 rejected by the sink; first error: ")
    assert "; the rows are in " in check.description
    assert len(server.rows("msdynci_customerprofiles")) == 2
    metadata = result.asset_materializations_for_node("publish__sink_customer_profile")[0].metadata
    assert metadata["rows_rejected"].value == 1 and "dead_letter" in metadata


def test_credential_kinds_build_the_matching_azure_identity_credentials(tmp_path, monkeypatch):
    import azure.identity as identity

    from ci_pipeline.dataverse.webapi import credential_factory

    monkeypatch.setenv("CI_TEST_DV", "s3cret")
    base = {"url": "https://contoso.crm.dynamics.com", "tenant_id": "t", "client_id": "c"}
    kinds = {
        "client_secret": ({"client_secret": "env:CI_TEST_DV"}, identity.ClientSecretCredential),
        "managed_identity": ({}, identity.ManagedIdentityCredential),
        "default": ({}, identity.DefaultAzureCredential),
    }
    for kind, (extra, expected) in kinds.items():
        config = DataverseConfig(**base, credential=kind, **extra)
        assert isinstance(credential_factory(config, tmp_path)(), expected), kind
    certificate = DataverseConfig(**base, credential="certificate", certificate_path="missing.pem")
    with pytest.raises((ValueError, OSError)):
        credential_factory(certificate, tmp_path)()
    with pytest.raises(ValueError, match="needs tenant_id, client_id and client_secret"):
        DataverseConfig(url="https://x.crm.dynamics.com", credential="client_secret")


def test_an_unreachable_dataverse_fails_the_sink_step_at_once_without_step_retries(tmp_path):
    import dagster as dg

    from ci_pipeline.config import load_config
    from ci_pipeline.config.unify import UnifyConfig
    from ci_pipeline.defs import available_tables, publish
    from ci_pipeline.defs.resources import shared_resources
    from ci_pipeline.orchestration import failure_reason
    from ci_pipeline_tests.publish.test_assets import upstream_assets

    (tmp_path / "ci_pipeline.yaml").write_text(
        "sources:\n  crm:\n    owner: me\n    tables:\n      contacts: {format: csv, path: c.csv, primary_key: id}\n"
        f"publish:\n  sink:\n    kind: dataverse\n    dataverse:\n      url: http://127.0.0.1:{free_port()}\n"
    )
    config = load_config(tmp_path / "ci_pipeline.yaml").model_copy(update={"unify": UnifyConfig.model_construct()})
    sink = [
        a
        for a in publish.build(config, available_tables(config)).assets
        if dg.AssetKey(["publish", "sink_alternate_key"]) in a.keys
    ]
    started = time.monotonic()
    result = dg.materialize(
        [*upstream_assets(["C1"]), *sink],
        resources=shared_resources(config),
        raise_on_error=False,
    )
    # The step's retry policy (10 s, 20 s, 40 s) is for a busy service, not for one that is not there.
    assert time.monotonic() - started < 10
    assert not result.success
    assert not [e for e in result.all_events if e.event_type_value == "STEP_UP_FOR_RETRY"]
    [failure] = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    message, is_user_error = failure_reason(failure.event_specific_data.error)
    assert is_user_error and "is unreachable (ConnectError" in message


def test_a_dataverse_answering_503_through_every_retry_is_transient():
    with LoopbackDataverse() as running:
        running.faults = [Fault("503", times=100)]
        client = client_for(running, max_retries=2)
        with pytest.raises(DataverseUnavailable, match="gave up after 3 attempts \\(503"):
            client.request("GET", KEYS_SET, Stats())
        client.close()
