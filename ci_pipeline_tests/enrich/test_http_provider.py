"""The HTTP provider against a real HTTP server on loopback: batches, retries, partial and broken answers, secrets."""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pandas as pd
import pytest

from ci_pipeline.enrich.http import _retry_after, build
from ci_pipeline.enrich.provider import EnrichmentFailed, EnrichmentInputs
from ci_pipeline.errors import UserError
from ci_pipeline.governance import Governance, SecretResolver, open_store
from ci_pipeline_tests.conftest import SERVE

API_KEY = "sk-test-Q7fz9Kp2Lm4Xw8Rt"
PARAMS = {
    "type": "Demographics",
    "provider": "Acme Data",
    "fields": ["Email", "PostalCode"],
    "mapping": {
        "Income": {"path": "household.income", "type": "number"},
        "Size": {"path": "household.size", "type": "integer"},
        "FirstInterest": "interests.0",
        "Verified": {"path": "verified", "type": "boolean"},
    },
    "batch_size": 10,
    "concurrency": 3,
    "timeout_seconds": 2,
    "retries": 2,
    "backoff_seconds": 0.01,
}

Reply = tuple[int, dict, bytes]


def answer(records: list[dict]) -> list[dict]:
    """What the provider knows about each customer it is sent."""
    return [
        {
            "CustomerId": r["CustomerId"],
            "household": {"income": 1000.0 * len(r["Email"] or ""), "size": 2.0},
            "interests": ["hiking", "books"],
            "verified": r["PostalCode"] is not None,
        }
        for r in records
    ]


def ok(results: list) -> Reply:
    return 200, {"Content-Type": "application/json"}, json.dumps({"results": results}).encode()


@dataclass
class FakeProvider:
    """A third party's API: records each request and answers with ``reply(call number, records)``."""

    url: str = ""
    reply: Callable[[int, list[dict]], Reply] = lambda n, records: ok(answer(records))
    delay: Callable[[int], float] = lambda n: 0.0
    requests: list[tuple[dict, dict]] = field(default_factory=list)
    in_flight: int = 0
    most_in_flight: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


@pytest.fixture
def provider():
    state = FakeProvider()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 (the http.server interface)
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            with state.lock:
                state.requests.append((dict(self.headers), body))
                number = len(state.requests)
                state.in_flight += 1
                state.most_in_flight = max(state.most_in_flight, state.in_flight)
            answering = True
            try:
                time.sleep(state.delay(number))
                status, headers, payload = state.reply(number, body["records"])
                self.send_response(status)
                for key, value in {**headers, "Content-Length": str(len(payload))}.items():
                    self.send_header(key, value)
                self.end_headers()
                # Done before the body goes out: once the client has it, it may send its next request at once,
                # possibly before this thread would get to count this one as finished.
                answering = False
                self._leave()
                self.wfile.write(payload)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up waiting (the timeout tests)
            finally:
                if answering:
                    self._leave()

        def _leave(self) -> None:
            with state.lock:
                state.in_flight -= 1

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs=SERVE, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}/v1/enrich"
    yield state
    server.shutdown()
    server.server_close()


@dataclass
class Context:
    """What the stage hands a provider: the enrichment, its connection and how to resolve it."""

    resolve_connection: Callable[[str], dict]
    enrichment: str = "demographics"
    connection: str | None = "acme"
    project: str = "ci_pipeline"


def context_for(url: str, **settings) -> Context:
    return Context(lambda name: {"name": name, "type": "http-enrichment", "url": url, "api_key": API_KEY, **settings})


def profiles(n: int = 50) -> pd.DataFrame:
    ids = [f"{i:032x}" for i in range(n)]
    return pd.DataFrame(
        {
            "CustomerId": ids[::-1],
            "FullName": [f"Person {i}" for i in range(n)],
            "Email": [None if i % 9 == 0 else f"p{i}@example.com" for i in range(n)],
            "PostalCode": [None if i % 3 == 0 else f"{10000 + i}" for i in range(n)],
        }
    ).astype("string")


def run(provider: FakeProvider, frame: pd.DataFrame | None = None, **params):
    enrich = build({**PARAMS, **params}, context_for(provider.url))
    return enrich.enrich(EnrichmentInputs(profiles=profiles() if frame is None else frame))


def test_success_sends_only_the_chosen_fields_in_bounded_concurrent_batches(provider):
    provider.delay = lambda n: 0.1
    result = run(provider)
    frame = profiles()
    not_sent = frame["Email"].isna() & frame["PostalCode"].isna()
    assert result.counts == {
        "sent": int((~not_sent).sum()),
        "batches": 5,
        "not_sent_empty": int(not_sent.sum()),
        "returned": int((~not_sent).sum()),
        "not_returned": 0,
        "unknown_ids": 0,
        "duplicate_ids": 0,
        "malformed_records": 0,
        "wrong_type": 0,
        "retries": 0,
    }
    assert result.warnings == ()
    headers, body = provider.requests[0]
    assert headers["Authorization"] == f"Bearer {API_KEY}"
    assert headers["Content-Type"] == "application/json"
    sent = [r for _, b in provider.requests for r in b["records"]]
    assert all(set(r) == {"CustomerId", "Email", "PostalCode"} for r in sent)  # never FullName
    assert sorted(r["CustomerId"] for r in sent) == sorted(frame.loc[~not_sent, "CustomerId"])
    assert 2 <= provider.most_in_flight <= 3
    values = result.values
    assert values["CustomerId"].tolist() == sorted(values["CustomerId"])
    assert set(values["EnrichmentType"]) == {"Demographics"}
    row = dict(zip(frame["CustomerId"], frame["Email"], strict=True))
    first = values.iloc[0]
    assert first["Values"] == {
        "Income": 1000.0 * len(row[first["CustomerId"]] or ""),
        "Size": 2,
        "FirstInterest": "hiking",
        "Verified": True,
    }
    assert isinstance(first["Values"]["Size"], int)
    assert build(PARAMS, context_for(provider.url)).name == "Acme Data"
    again = run(provider, concurrency=1, batch_size=7)
    pd.testing.assert_frame_equal(result.values, again.values)


def test_numbers_and_missing_values_are_sent_as_json_numbers_and_null(provider):
    frame = pd.DataFrame(
        {
            "CustomerId": ["b", "a", "c"],
            "BirthYear": pd.array([1980, None, 1975], dtype="Int64"),
            "Spend": [10.5, float("nan"), 3.0],
            "Email": pd.array([None, "a@example.com", None], dtype="string"),
        }
    )
    provider.reply = lambda n, records: ok([{"CustomerId": r["CustomerId"], "verified": True} for r in records])
    result = run(provider, frame, fields=["BirthYear", "Spend", "Email"], mapping={"Verified": "verified"})
    assert provider.requests[0][1] == {
        "records": [
            {"CustomerId": "a", "BirthYear": None, "Spend": None, "Email": "a@example.com"},
            {"CustomerId": "b", "BirthYear": 1980, "Spend": 10.5, "Email": None},
            {"CustomerId": "c", "BirthYear": 1975, "Spend": 3.0, "Email": None},
        ]
    }
    assert result.values["Values"].tolist() == [{"Verified": True}] * 3


def test_a_partial_answer_with_unknown_duplicate_and_mistyped_records_is_counted_not_fatal(provider):
    def partial(n: int, records: list[dict]) -> Reply:
        results = answer(records)[1:]  # the first customer of each batch is not returned
        results.append({**results[0]})  # returned twice
        results.append({"CustomerId": "not-sent-in-this-batch", "verified": True})
        results.append({"CustomerId": 42})
        results.append(["not", "an", "object"])
        results[0] = {**results[0], "household": {"income": "high", "size": 2.5}, "verified": "yes"}
        return ok(results)

    provider.reply = partial
    result = run(provider)
    counts = result.counts
    assert counts["batches"] == 5 and counts["not_returned"] == 5
    assert counts["returned"] == counts["sent"] - 5
    assert (counts["unknown_ids"], counts["duplicate_ids"], counts["malformed_records"]) == (5, 5, 10)
    assert counts["wrong_type"] == 5 * 3
    assert len(result.values) == counts["returned"]
    mistyped = [v for v in result.values["Values"] if v["Income"] is None]
    assert len(mistyped) == 5
    assert all(v["Size"] is None and v["Verified"] is None and v["FirstInterest"] == "hiking" for v in mistyped)
    said = "\n".join(result.warnings)
    assert "5 customers sent were not returned" in said and "5 results had a CustomerId that was not sent" in said
    assert "5 results repeated a CustomerId" in said and "10 results were not objects" in said
    assert "15 values had another type" in said


def test_malformed_json_and_a_wrong_shape_fail_the_enrichment_with_a_clear_message(provider):
    provider.reply = lambda n, records: (200, {"Content-Type": "text/html"}, b"<html>oops</html>")
    with pytest.raises(EnrichmentFailed) as failed:
        run(provider)
    message = str(failed.value)
    assert message.startswith("enrich.enrichments.demographics: batch ")
    assert "the response is not JSON (text/html, 17 bytes)" in message
    assert f"to http://127.0.0.1:{provider.url.split(':')[2].split('/')[0]}/v1/enrich" in message

    provider.reply = lambda n, records: (200, {}, json.dumps({"data": []}).encode())
    with pytest.raises(EnrichmentFailed, match="the response has no 'results' list"):
        run(provider)


def test_timeouts_are_retried_and_then_fail(provider):
    provider.delay = lambda n: 1.5 if n == 1 else 0.0
    recovered = run(provider, timeout_seconds=0.5, concurrency=1)
    assert recovered.counts["retries"] == 1 and recovered.counts["not_returned"] == 0
    assert "1 requests were retried" in recovered.warnings[0]

    provider.requests.clear()
    provider.delay = lambda n: 1.5
    started = time.monotonic()
    with pytest.raises(EnrichmentFailed) as failed:
        run(provider, timeout_seconds=0.3, retries=1, concurrency=1)
    assert "no response within 0.3 s (ReadTimeout) after 2 attempt(s); raise params.timeout_seconds" in str(
        failed.value
    )
    # The first batch failed for good: the others were not sent.
    assert len(provider.requests) == 2 and time.monotonic() - started < 5


def test_429_waits_as_retry_after_asks_and_5xx_is_retried(provider):
    def busy(n: int, records: list[dict]) -> Reply:
        if n == 1:
            return 429, {"Retry-After": "1"}, b""
        if n == 2:
            return 503, {}, b"maintenance"
        return ok(answer(records))

    provider.reply = busy
    started = time.monotonic()
    result = run(provider, concurrency=1)
    assert time.monotonic() - started >= 1.0
    assert result.counts["retries"] == 2 and result.counts["returned"] == result.counts["sent"]

    provider.requests.clear()
    provider.reply = lambda n, records: (502, {}, b"bad gateway")
    with pytest.raises(EnrichmentFailed, match=r"HTTP 502 after 3 attempt\(s\); the provider is busy or failing"):
        run(provider, concurrency=1)
    assert len(provider.requests) == 3

    provider.reply = lambda n, records: (429, {"Retry-After": "3600"}, b"")
    with pytest.raises(EnrichmentFailed, match=r"asks to wait 3600 s \(Retry-After\), longer than params.max_wait"):
        run(provider, max_wait_seconds=5)


def test_retry_after_in_seconds_or_as_a_date():
    later = datetime.now(UTC) + timedelta(seconds=30)
    assert _retry_after(httpx.Response(429, headers={"Retry-After": "7"})) == 7
    assert 25 < _retry_after(httpx.Response(429, headers={"Retry-After": format_datetime(later, usegmt=True)})) <= 30
    naive = format_datetime(later.replace(tzinfo=None))  # "-0000": no zone given
    assert 25 < _retry_after(httpx.Response(503, headers={"Retry-After": naive})) <= 30
    assert _retry_after(httpx.Response(503, headers={"Retry-After": "soon"})) == -1
    assert _retry_after(httpx.Response(503)) == -1


def test_the_api_key_never_appears_in_a_message_a_warning_a_value_or_the_log(provider, caplog):
    caplog.set_level(logging.DEBUG)

    def echo_key(n: int, records: list[dict]) -> Reply:
        # A careless provider that repeats the key it was sent, in values and error bodies.
        results = [{**r, "verified": True, "interests": [API_KEY]} for r in answer(records)]
        return ok(results + [{"CustomerId": API_KEY}])

    provider.reply = echo_key
    result = run(provider)
    seen = [json.dumps(list(result.values["Values"])), *result.warnings, json.dumps(dict(result.counts))]
    seen.append(json.dumps(dict(result.report)))
    messages = []
    # The last body quotes the key across the 200th character, where the message cuts it.
    straddled = "x" * 190 + API_KEY
    bodies = (
        (400, f"bad request for key {API_KEY}"),
        (401, "no"),
        (500, f"Authorization: {API_KEY}"),
        (422, straddled),
    )
    for status, body in bodies:
        provider.reply = lambda n, records, status=status, body=body: (status, {}, body.encode())
        with pytest.raises(EnrichmentFailed) as failed:
            run(provider, retries=0)
        messages.append(str(failed.value))
    assert "HTTP 400: bad request for key ***" in messages[0]
    assert "HTTP 401: the provider refused the API key; an admin checks the connection's api_key" in messages[1]
    seen += messages + [r.getMessage() for r in caplog.records]
    assert not [text for text in seen if API_KEY in text or API_KEY[:10] in text]
    assert {v["FirstInterest"] for v in result.values["Values"]} == {"***"}


def test_a_key_an_http_header_cannot_carry_fails_with_the_fix_before_any_request(provider):
    provider.reply = lambda n, records: pytest.fail("no request may be sent")
    enrich = build(PARAMS, context_for(provider.url, api_key="sk-Valué-99"))
    with pytest.raises(EnrichmentFailed, match="api_key holds a character an HTTP header cannot carry at position 8"):
        enrich.enrich(EnrichmentInputs(profiles=profiles()))


def test_connection_problems_are_clear(provider):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    url = f"http://127.0.0.1:{closed}/enrich"
    with pytest.raises(EnrichmentFailed, match=r"cannot reach the provider \(ConnectError\) after 1 attempt\(s\)"):
        build({**PARAMS, "retries": 0}, context_for(url)).enrich(EnrichmentInputs(profiles=profiles()))
    wrong = Context(lambda name: {"name": name, "type": "adls", "account": "a"})
    with pytest.raises(EnrichmentFailed, match="'acme' is a adls connection; an HTTP enrichment needs an http-enr"):
        build(PARAMS, wrong).enrich(EnrichmentInputs(profiles=profiles()))
    with pytest.raises(EnrichmentFailed, match=r"demographics\.connection: name the http-enrichment connection"):
        build(PARAMS, Context(lambda name: {}, connection=None))


def test_a_url_with_its_credential_given_as_the_connection_is_masked_once_and_told_what_belongs_there():
    pasted = "https://user:sk_live_SUPERSECRET123@api.acme.example/x"

    def unknown(name):
        raise UserError(f"connection {name!r} does not exist; `ci-pipeline connections list` shows them")

    with pytest.raises(EnrichmentFailed) as failed:
        build(PARAMS, Context(unknown, connection=pasted)).enrich(EnrichmentInputs(profiles=profiles()))
    message = str(failed.value)
    assert "SUPERSECRET" not in message and message.count("https://user:***@api.acme.example/x") == 1
    assert "takes the name of an http-enrichment connection, not a URL" in message


def test_bad_params_and_unknown_fields_name_the_key(provider):
    with pytest.raises(EnrichmentFailed) as failed:
        build({**PARAMS, "batch_size": 0, "colour": "red", "mapping": {"X": {"path": "a..b"}}}, context_for(""))
    message = str(failed.value)
    for key in ("params.batch_size: Input should be greater", "params.colour: not a parameter", "params.mapping.X"):
        assert f"enrich.enrichments.demographics.{key}" in message
    with pytest.raises(EnrichmentFailed, match=r"params.fields: the customer profile has no column Phone"):
        run(provider, fields=["Email", "Phone"])


def test_param_typos_are_told_with_the_near_miss_and_the_names_allowed():
    params = {**PARAMS, "batchsize": 10, "mapping": {"Income": {"path": "a.b", "type": "numbr"}, "Size": 5}}
    with pytest.raises(EnrichmentFailed) as failed:
        build(params, context_for(""))
    assert str(failed.value).split("; enrich.") == [
        "enrich.enrichments.demographics.params.batchsize: not a parameter (did you mean 'batch_size'?); remove it "
        "or correct its spelling (it takes type, fields, mapping, provider, batch_size, concurrency, "
        "timeout_seconds, retries, backoff_seconds, max_wait_seconds, api_key_header)",
        "enrichments.demographics.params.mapping.Income.type: 'numbr' is not one of any, string, number, integer, "
        "boolean (did you mean 'number'?)",
        "enrichments.demographics.params.mapping.Size: give a text or a mapping with path, type; got 5",
    ]


def test_the_provider_works_through_a_governed_connection(provider, tmp_path, monkeypatch):
    monkeypatch.setenv("ACME_API_KEY", API_KEY)
    store = open_store(f"sqlite:///{tmp_path / 'metadata.sqlite'}")
    admin = Governance(store, "root", SecretResolver([tmp_path]))
    admin.init({})
    admin.add_connection("acme", "http-enrichment", {"url": provider.url, "api_key": "env:ACME_API_KEY"}, consent=True)
    context = Context(admin.resolve_connection)
    result = build(PARAMS, context).enrich(EnrichmentInputs(profiles=profiles()))
    assert result.counts["returned"] == result.counts["sent"] > 0
    assert provider.requests[0][0]["Authorization"] == f"Bearer {API_KEY}"
    stranger = Context(Governance(store, "mallory", SecretResolver([tmp_path])).resolve_connection)
    with pytest.raises(EnrichmentFailed, match="enrich.enrichments.demographics: connection 'acme': ") as refused:
        build(PARAMS, stranger).enrich(EnrichmentInputs(profiles=profiles()))
    assert API_KEY not in str(refused.value)
