"""The Dataverse Web API sink: a thin client on httpx and azure-identity (spec/dataverse-web-api.md).

Writes go out as UpsertMultiple requests in chunks from a bounded pool of senders. All senders share one
:class:`Governor`: a 429 pauses every sender for Retry-After, then concurrency ramps back up one sender at a time;
502/503/504 and dropped connections are retried with exponential backoff; a 401 refreshes the token once. A chunk
refused as a whole is halved until the bad row is isolated; that row is reported and dead-lettered, the rest lands.
Stale rows are found by paging the table's keys and deleted through ``$batch`` (404 counts as done).
"""

from __future__ import annotations

import json
import logging
import posixpath
import random
import re
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd

from ci_pipeline.config.base import resolve_secret
from ci_pipeline.dataverse.attachment import AttachmentClaim, check_marker
from ci_pipeline.dataverse.sink import Sink, SinkTable, TableResult, TableUsage
from ci_pipeline.errors import UserError
from ci_pipeline.redact import clipped, first_line, redact

log = logging.getLogger("ci_pipeline.dataverse")

RETRYABLE = {502, 503, 504}
#: Seconds to open a connection; the first request of a client also waits at most this long for any answer, so an
#: environment that is down or silent fails in seconds (the configured timeout is for slow answers to big writes).
CONNECT_TIMEOUT = 5.0
#: Retries of a request that got no answer at all (refused, or timed out), 1 s and 2 s apart. With the connect
#: timeout this bounds an unreachable environment to about 20 s; answers (5xx, 429) keep ``max_retries``.
NO_ANSWER_RETRIES = 2
#: Where rejected rows go in the lake: ``<prefix>/<logical table>/<run id>.parquet``.
DEAD_LETTER = "ci_pipeline/publish/dead_letter"
USAGE = "ci_pipeline/publish/dataverse_usage"
STATE = "ci_pipeline/publish/dataverse_state"
#: The key of the one attachment marker row (the same in every Dataverse environment).
MARKER_ID = str(uuid.uuid5(uuid.NAMESPACE_URL, "https://github.com/ci_pipeline/attachment-marker"))
#: The marker's fields, without the table's publisher prefix.
MARKER_FIELDS = ("environmentid", "storageaccount", "region", "attachedat")


class DataverseError(UserError):
    """Dataverse could not be reached, refused the credentials, or refused a request that cannot be retried."""


class DataverseUnavailable(DataverseError):
    """Dataverse answered, but kept answering 429/5xx or dropping the connection through every retry."""

    #: Worth another try of the whole step later (unlike refused credentials or an environment that is not there).
    transient = True


class Governor:
    """Shared pacing of all senders: at most ``limit`` requests in flight; a 429 pauses everyone and drops the
    limit to one, and each run of ``limit`` successes raises it by one again, up to ``max_concurrency``."""

    def __init__(self, max_concurrency: int, jitter: float = 0.1):
        self.max_concurrency = max_concurrency
        self.limit = max_concurrency
        self.jitter = jitter
        self._in_flight = 0
        self._paused_until = 0.0
        self._successes = 0
        #: Bumped by every 429, so answers to requests sent before it do not count towards the ramp-up.
        self._epoch = 0
        self._cond = threading.Condition()

    def acquire(self) -> int:
        """Wait for a free slot (and the end of any pause); returns the ticket to pass to :meth:`release`."""
        with self._cond:
            while True:
                wait = self._paused_until - time.monotonic()
                if wait > 0:
                    self._cond.wait(wait)
                elif self._in_flight < self.limit:
                    self._in_flight += 1
                    return self._epoch
                else:
                    self._cond.wait(1.0)

    def release(self, ticket: int, success: bool) -> None:
        with self._cond:
            self._in_flight -= 1
            if success and ticket == self._epoch and self.limit < self.max_concurrency:
                self._successes += 1
                if self._successes >= self.limit:
                    self.limit += 1
                    self._successes = 0
            self._cond.notify_all()

    def throttle(self, retry_after: float) -> None:
        """Pause every sender for ``retry_after`` seconds (plus jitter), then restart with one sender."""
        with self._cond:
            until = time.monotonic() + retry_after * (1 + random.random() * self.jitter)
            self._paused_until = max(self._paused_until, until)
            self.limit = 1
            self._successes = 0
            self._epoch += 1
            self._cond.notify_all()


@dataclass(frozen=True)
class SettingsAdvice:
    """What to check when the environment does not answer (``url``) or refuses the credential (``credential``):
    the configuration keys, or the governed connection the URL and credential come from."""

    url: str
    credential: str


#: A ``publish.sink.dataverse`` block with its own URL and credential.
INLINE_SETTINGS = SettingsAdvice(
    url="check publish.sink.dataverse.url",
    credential="check publish.sink.dataverse credential, tenant_id, client_id and secret",
)


def connection_advice(name: str) -> SettingsAdvice:
    """The advice for a governed ``dataverse`` connection (``publish.sink.connection``): its settings are an admin's
    to check and change with `ci-pipeline connections`, not configuration keys."""
    edit = f"`ci-pipeline connections edit {name}"
    return SettingsAdvice(
        url=(
            f"check the environment URL of connection {name!r} (an admin sees it with `ci-pipeline connections show "
            f"{name}` and changes it with {edit} --org-url https://<environment>.crm.dynamics.com`)"
        ),
        credential=(
            f"check the tenant id, client id and secret of connection {name!r} (an admin checks its secret with "
            f"`ci-pipeline connections show {name} --check` and changes them with {edit} --tenant-id ... "
            "--client-id ... --client-secret <reference>` or `--certificate <reference>`)"
        ),
    )


class TokenSource:
    """Bearer tokens for one scope from an azure-identity credential, cached until shortly before they expire."""

    def __init__(self, credential_factory: Callable[[], Any], scope: str, advice: SettingsAdvice = INLINE_SETTINGS):
        self._factory = credential_factory
        self.advice = advice
        self._credential = None
        self.scope = scope
        self._token = None
        self._lock = threading.Lock()

    def get(self, refresh_from: str | None = None) -> str:
        """The current token; ``refresh_from`` = a token the server refused, which is replaced (once per token)."""
        with self._lock:
            stale = self._token is None or self._token.expires_on - 120 < time.time()
            if stale or (refresh_from is not None and self._token.token == refresh_from):
                if self._credential is None:
                    self._credential = self._factory()
                try:
                    self._token = self._credential.get_token(self.scope)
                except Exception as exc:  # azure-identity raises many types; all mean "no token"
                    # Redacted before it is cut, so that a secret across the cut is still masked whole.
                    first = first_line(exc)
                    # Not chained: the identity library's message may quote the request it sent.
                    raise DataverseError(
                        f"cannot get a token for {self.scope} ({type(exc).__name__}: {first}); "
                        + self.advice.credential
                    ) from None
            return self._token.token


@dataclass
class Stats:
    """Counters of one table's publish, shared by its senders."""

    requests: int = 0
    retries: int = 0
    throttles: int = 0
    sent: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, **counts: int) -> None:
        with self.lock:
            for name, value in counts.items():
                setattr(self, name, getattr(self, name) + value)


@dataclass
class Rejected:
    """A row Dataverse refused, with its error."""

    key: str
    status: int
    error: str
    row: dict


def credential_factory(config, base_dir: Path) -> Callable[[], Any]:
    """A function creating the azure-identity credential the configuration names; secrets are read when called."""

    def make():
        import azure.identity as identity

        key = "publish.sink.dataverse"
        if config.credential == "client_secret":
            secret = resolve_secret(config.client_secret, f"{key}.client_secret", base_dir)
            return identity.ClientSecretCredential(config.tenant_id, config.client_id, secret)
        if config.credential == "certificate":
            path = Path(config.certificate_path).expanduser()
            password = (
                resolve_secret(config.certificate_password, f"{key}.certificate_password", base_dir)
                if config.certificate_password
                else None
            )
            return identity.CertificateCredential(
                config.tenant_id,
                config.client_id,
                certificate_path=str(path if path.is_absolute() else base_dir / path),
                password=password,
            )
        if config.credential == "managed_identity":
            return identity.ManagedIdentityCredential(client_id=config.client_id)
        return identity.DefaultAzureCredential()

    return make


def connection_credential_factory(connection: dict) -> Callable[[], Any]:
    """A function creating the azure-identity credential of a governed ``dataverse`` connection (its secret or
    certificate already resolved through the governance layer)."""

    def make():
        import azure.identity as identity

        if connection.get("client_secret"):
            return identity.ClientSecretCredential(
                connection["tenant_id"], connection["client_id"], connection["client_secret"]
            )
        return identity.CertificateCredential(
            connection["tenant_id"], connection["client_id"], certificate_data=connection["certificate"].encode()
        )

    return make


class DataverseClient:
    """Talks to one Dataverse environment.

    Args:
        org_url: environment URL, e.g. ``https://contoso.crm.dynamics.com``; the token scope is ``<org_url>/.default``.
        credential: an azure-identity credential, or a function returning one (called at first use).
        api_path: Web API path.
        chunk_size, elastic_chunk_size: rows per UpsertMultiple for standard and elastic tables.
        elastic_tables: output tables that are elastic in Dataverse.
        max_concurrency: requests in flight at once.
        max_retries: retries of one request on 429, 5xx and dropped connections before giving up.
        backoff: first backoff in seconds (doubles per retry, at most 60 s).
        advice: what the messages ask to check when the environment does not answer or refuses the credential.
    """

    def __init__(
        self,
        org_url: str,
        credential,
        api_path: str = "/api/data/v9.2/",
        chunk_size: int = 1000,
        elastic_chunk_size: int = 100,
        elastic_tables: tuple[str, ...] | list[str] = ("AlternateKey", "UnifiedActivity"),
        max_concurrency: int = 8,
        max_retries: int = 8,
        timeout: float = 120.0,
        delete_batch_size: int = 500,
        page_size: int = 5000,
        backoff: float = 0.5,
        advice: SettingsAdvice = INLINE_SETTINGS,
    ):
        self.org_url = org_url.rstrip("/")
        self.advice = advice
        self.base_url = self.org_url + "/" + api_path.strip("/") + "/"
        factory = credential if callable(credential) and not hasattr(credential, "get_token") else lambda: credential
        self.tokens = TokenSource(factory, f"{self.org_url}/.default", advice)
        self.chunk_size = chunk_size
        self.elastic_chunk_size = elastic_chunk_size
        self.elastic_tables = set(elastic_tables)
        self.max_concurrency = max_concurrency
        self.max_retries = max_retries
        self.delete_batch_size = delete_batch_size
        self.page_size = page_size
        self.backoff = backoff
        self.governor = Governor(max_concurrency)
        limits = httpx.Limits(max_connections=max_concurrency + 2, max_keepalive_connections=max_concurrency + 2)
        self.http = httpx.Client(
            base_url=self.base_url, timeout=httpx.Timeout(timeout, connect=CONNECT_TIMEOUT), limits=limits
        )
        self._reachable = False
        self._probe_lock = threading.Lock()

    @classmethod
    def from_config(cls, config, base_dir: Path, connection: dict | None = None) -> DataverseClient:
        """A client for a ``publish.sink.dataverse`` block (secrets are resolved at the first request), or for a
        governed connection's URL and credential with the block's tuning settings."""
        return cls(
            connection["org_url"] if connection else config.url,
            connection_credential_factory(connection) if connection else credential_factory(config, base_dir),
            api_path=config.api_path,
            chunk_size=config.chunk_size,
            elastic_chunk_size=config.elastic_chunk_size,
            elastic_tables=config.elastic_tables,
            max_concurrency=config.max_concurrency,
            max_retries=config.max_retries,
            timeout=config.timeout_seconds,
            delete_batch_size=config.delete_batch_size,
            page_size=config.page_size,
            advice=connection_advice(connection["name"]) if connection else INLINE_SETTINGS,
        )

    def close(self) -> None:
        self.http.close()

    # -- one request, with every retry rule ----------------------------------------------------------------------
    def request(
        self, method: str, url: str, stats: Stats, *, body: bytes | None = None, headers=None
    ) -> httpx.Response:
        """Send one request and return its final answer (2xx or a non-retryable error status).

        A request that got a successful answer is never sent again.
        """
        self._check_reachable()
        failures = no_answer = 0
        refreshed = False
        refused_token = None
        while True:
            token = self.tokens.get(refresh_from=refused_token)
            refused_token = None
            ticket = self.governor.acquire()
            success = False
            try:
                stats.add(requests=1)
                response = self.http.request(method, url, content=body, headers=self._headers(token, headers))
                success = response.status_code < 400
            except httpx.TransportError as exc:
                response = None
                problem = f"{type(exc).__name__}: {redact(exc)}"
                if isinstance(exc, (httpx.ConnectError, httpx.TimeoutException)):
                    no_answer += 1
            finally:
                self.governor.release(ticket, success)
            if response is not None:
                status = response.status_code
                if status == 429:
                    stats.add(throttles=1)
                    self.governor.throttle(_retry_after(response, self.backoff * 2**failures))
                    problem = "429 Too Many Requests"
                elif status in RETRYABLE:
                    problem = f"{status} {response.reason_phrase}"
                elif status == 401 and not refreshed:
                    refreshed = True
                    refused_token = token
                    stats.add(retries=1)
                    continue
                elif status == 401:
                    raise DataverseError(
                        f"{self.org_url} refused the credentials (401) even with a fresh token; "
                        f"{self.advice.credential}, and that the application user exists in the environment"
                    )
                else:
                    return response
            failures += 1
            unreachable = no_answer > min(self.max_retries, NO_ANSWER_RETRIES)
            if failures > self.max_retries or unreachable:
                raise (DataverseError if unreachable else DataverseUnavailable)(
                    f"{method} {self.base_url}{url.removeprefix(self.base_url)}: gave up after {failures} attempts "
                    f"({problem}); check that {self.org_url} is reachable and publish again (publishing is "
                    "idempotent)"
                )
            stats.add(retries=1)
            if response is None and no_answer:
                time.sleep(float(no_answer))
            elif response is None or response.status_code != 429:
                time.sleep(min(60.0, self.backoff * 2 ** (failures - 1)) * (1 + random.random() * 0.2))

    def _check_reachable(self) -> None:
        """Before the first request: any HTTP answer within :data:`CONNECT_TIMEOUT` proves the environment is there."""
        with self._probe_lock:
            if self._reachable:
                return
            try:
                self.http.request("HEAD", self.org_url + "/", timeout=CONNECT_TIMEOUT)
            except httpx.TransportError as exc:
                reason = "no answer" if isinstance(exc, httpx.TimeoutException) else f"{type(exc).__name__}: {exc}"
                raise DataverseError(
                    f"{self.org_url} is unreachable ({redact(reason)} within {CONNECT_TIMEOUT:g} s); "
                    f"{self.advice.url} and the network, then publish again (publishing is idempotent)"
                ) from None
            self._reachable = True

    def _headers(self, token: str, extra: dict | None) -> dict:
        headers = {
            "Authorization": f"Bearer {token}",
            "OData-MaxVersion": "4.0",
            "OData-Version": "4.0",
            "Accept": "application/json",
            "Content-Type": "application/json; charset=utf-8",
        }
        headers.update(extra or {})
        return headers

    # -- upsert -------------------------------------------------------------------------------------------------
    def upsert(self, table: SinkTable, stats: Stats) -> list[Rejected]:
        """Upsert every row of a table; return the rows refused (each isolated by halving its chunk)."""
        records = _records(table)
        size = self.elastic_chunk_size if table.name in self.elastic_tables else self.chunk_size
        chunks = [records[i : i + size] for i in range(0, len(records), size)]
        rejected: list[Rejected] = []
        started = time.monotonic()
        progress = _Progress(table.name, len(records), stats, started)

        failed = threading.Event()

        def send(chunk: list[dict]) -> None:
            # After one chunk has failed for good the table fails anyway: stop sending the rest.
            if failed.is_set():
                return
            try:
                rejected.extend(self._upsert_chunk(table, chunk, stats))
            except BaseException:
                failed.set()
                raise
            progress.report()

        with ThreadPoolExecutor(max_workers=self.max_concurrency, thread_name_prefix="dataverse") as pool:
            for future in [pool.submit(send, chunk) for chunk in chunks]:
                future.result()
        return rejected

    def _upsert_chunk(self, table: SinkTable, chunk: list[dict], stats: Stats) -> list[Rejected]:
        if len(chunk) == 1:
            # A single row goes out as PATCH <set>(<guid>): its answer names exactly what is wrong with this row.
            row = {k: v for k, v in chunk[0].items() if k != "@odata.type"}
            key = row[table.primary_key]
            response = self.request("PATCH", f"{table.entity_set}({key})", stats, body=_json(row))
            if response.status_code < 400:
                stats.add(sent=1)
                return []
            return [Rejected(key, response.status_code, _error_message(response), row)]
        body = _json({"Targets": chunk})
        response = self.request("POST", f"{table.entity_set}/Microsoft.Dynamics.CRM.UpsertMultiple", stats, body=body)
        if response.status_code < 400:
            stats.add(sent=len(chunk))
            return []
        # Refused as a whole: halve until the bad row is alone, so every other row still lands.
        middle = len(chunk) // 2
        return self._upsert_chunk(table, chunk[:middle], stats) + self._upsert_chunk(table, chunk[middle:], stats)

    # -- reconcile ----------------------------------------------------------------------------------------------
    def keys(self, entity_set: str, primary_key: str, stats: Stats) -> list[str]:
        """Every primary key of a table, page by page (``$select`` + ``odata.maxpagesize`` + ``@odata.nextLink``)."""
        url = f"{entity_set}?$select={primary_key}"
        found: list[str] = []
        while url:
            response = self.request("GET", url, stats, headers={"Prefer": f"odata.maxpagesize={self.page_size}"})
            if response.status_code == 404:
                raise DataverseError(
                    f"{self.base_url}{entity_set}: no such entity set; create the table in Dataverse or set "
                    "publish.sink.dataverse.entity_sets"
                )
            if response.status_code >= 400:
                raise DataverseError(f"GET {entity_set}: {response.status_code} {_error_message(response)}")
            page = response.json()
            found.extend(row[primary_key] for row in page.get("value", []))
            url = page.get("@odata.nextLink")
        return found

    def delete(self, entity_set: str, keys: list[str], stats: Stats) -> int:
        """Delete rows by key through ``$batch`` (continue on error); 404 counts as deleted. Returns the count."""
        batches = [keys[i : i + self.delete_batch_size] for i in range(0, len(keys), self.delete_batch_size)]

        def run(batch: list[str]) -> int:
            pending, rounds = batch, 0
            while pending:
                statuses = self._delete_batch(entity_set, pending, stats)
                answers = list(zip(pending, statuses, strict=True))
                retry = [k for k, s in answers if s == 429 or s in RETRYABLE]
                failed = [(k, s) for k, s in answers if s >= 400 and s != 404 and k not in retry]
                if failed:
                    key, status = failed[0]
                    raise DataverseError(f"DELETE {entity_set}({key}): {status}; {len(failed)} deletes refused")
                rounds += 1
                if retry and rounds > self.max_retries:
                    raise DataverseUnavailable(f"DELETE in {entity_set}: {len(retry)} rows still failing after retries")
                if retry:
                    stats.add(retries=1)
                    time.sleep(min(60.0, self.backoff * 2 ** (rounds - 1)))
                pending = retry
            return len(batch)

        with ThreadPoolExecutor(max_workers=self.max_concurrency, thread_name_prefix="dataverse") as pool:
            return sum(pool.map(run, batches))

    def _delete_batch(self, entity_set: str, keys: list[str], stats: Stats) -> list[int]:
        boundary = f"batch_{uuid.uuid4()}"
        parts = [
            f"--{boundary}\r\nContent-Type: application/http\r\nContent-Transfer-Encoding: binary\r\n\r\n"
            f"DELETE {self.base_url}{entity_set}({key}) HTTP/1.1\r\nAccept: application/json\r\n\r\n\r\n"
            for key in keys
        ]
        body = ("".join(parts) + f"--{boundary}--\r\n").encode()
        headers = {"Content-Type": f"multipart/mixed; boundary={boundary}", "Prefer": "odata.continue-on-error"}
        response = self.request("POST", "$batch", stats, body=body, headers=headers)
        if response.status_code >= 400:
            raise DataverseError(f"$batch delete in {entity_set}: {response.status_code} {_error_message(response)}")
        statuses = [int(s) for s in re.findall(r"HTTP/1\.1 (\d{3})", response.text)]
        if len(statuses) != len(keys):
            raise DataverseError(f"$batch delete in {entity_set}: {len(statuses)} answers for {len(keys)} requests")
        return statuses


class _Progress:
    """Logs rows sent, rows/s, retries and throttles at most every few seconds, and at the end."""

    def __init__(self, table: str, total: int, stats: Stats, started: float, every: float = 5.0):
        self.table, self.total, self.stats, self.started, self.every = table, total, stats, started, every
        self._last = started
        self._lock = threading.Lock()

    def report(self) -> None:
        now = time.monotonic()
        with self._lock:
            if now - self._last < self.every and self.stats.sent < self.total:
                return
            self._last = now
        elapsed = max(now - self.started, 1e-9)
        log.info(
            "%s: %d/%d rows sent, %.0f rows/s, %d retries, %d throttles",
            self.table,
            self.stats.sent,
            self.total,
            self.stats.sent / elapsed,
            self.stats.retries,
            self.stats.throttles,
        )


def _records(table: SinkTable) -> list[dict]:
    frame = table.frame
    records = frame.astype(object).where(frame.notna(), None).to_dict(orient="records")
    kind = f"Microsoft.Dynamics.CRM.{table.logical_name}"
    for record in records:
        record["@odata.type"] = kind
    return records


def _json(obj) -> bytes:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def _retry_after(response: httpx.Response, default: float) -> float:
    try:
        return max(0.0, float(response.headers.get("Retry-After", default)))
    except ValueError:
        return default


def _error_message(response: httpx.Response) -> str:
    """The server's error text (it can echo a request's URL or headers back, so it is redacted, and only then cut:
    a secret across the cut would no longer be whole, and the part left would not be masked)."""
    try:
        return redact(response.json()["error"]["message"])
    except Exception:
        return clipped(response.text, 300)


class WebApiSink(Sink):
    """Publishes to Dataverse through the Web API. The table's keys are read first; then new and changed rows are
    upserted; stale rows are deleted only when every upsert request has been answered, so a failed publish never
    removes rows.

    With a lake, a hash of every row published is kept per environment and table
    (``ci_pipeline/publish/dataverse_state/<host>/<table>.parquet``), and rows whose hash is unchanged and whose key
    Dataverse still has are not sent again. A row changed or deleted in Dataverse by someone else is corrected on
    the next publish only when its key is gone; set ``skip_unchanged=False`` to send every row.

    Args:
        client: the Web API client.
        lake: where rejected rows are dead-lettered, usage and row hashes are recorded (optional).
        run_id: names this run's dead-letter files.
        skip_unchanged: do not resend rows published before with the same content.
    """

    def __init__(
        self,
        client: DataverseClient,
        lake=None,
        run_id: str = "manual",
        skip_unchanged: bool = True,
        marker_entity_set: str = "msdynci_pipelineattachments",
    ):
        self.client = client
        self.lake = lake
        self.run_id = run_id
        self.skip_unchanged = skip_unchanged and lake is not None
        self.marker_entity_set = marker_entity_set

    def close(self) -> None:
        self.client.close()

    # -- attachment marker --------------------------------------------------------------------------------------
    def _marker_columns(self) -> dict[str, str]:
        prefix = self.marker_entity_set.split("_", 1)[0]
        names = ("environment_id", "storage_account", "region", "attached_at")
        return {name: f"{prefix}_{field}" for name, field in zip(names, MARKER_FIELDS, strict=True)}

    def _marker(self) -> dict | None:
        stats = Stats()
        response = self.client.request("GET", self.marker_entity_set, stats)
        if response.status_code == 404:
            raise DataverseError(
                f"{self.client.base_url}{self.marker_entity_set}: no such entity set; create the attachment marker "
                "table (docs/governance.md) or set publish.sink.dataverse.marker_entity_set"
            )
        if response.status_code >= 400:
            raise DataverseError(f"GET {self.marker_entity_set}: {response.status_code} {_error_message(response)}")
        key = self.marker_entity_set.split("_", 1)[0] + "_pipelineattachmentid"
        columns = self._marker_columns()
        for row in response.json().get("value", []):
            if row.get(key) == MARKER_ID:
                return {name: row.get(column) for name, column in columns.items()}
        return None

    def claim(self, claim: AttachmentClaim) -> None:
        if not check_marker(self._marker(), claim, f"Dataverse environment {self.client.org_url}"):
            return
        key = self.marker_entity_set.split("_", 1)[0] + "_pipelineattachmentid"
        row = {column: claim.marker()[name] for name, column in self._marker_columns().items()}
        response = self.client.request(
            "PATCH", f"{self.marker_entity_set}({MARKER_ID})", Stats(), body=_json({key: MARKER_ID, **row})
        )
        if response.status_code >= 400:
            raise DataverseError(
                f"PATCH {self.marker_entity_set}: {response.status_code} {_error_message(response)}; the attachment "
                "marker could not be written, so nothing was published"
            )

    def release(self, environment_id: str) -> bool:
        marker = self._marker()
        if marker is None or marker["environment_id"] != environment_id:
            return False
        response = self.client.request("DELETE", f"{self.marker_entity_set}({MARKER_ID})", Stats())
        return response.status_code < 400 or response.status_code == 404

    def _state_path(self, table: SinkTable) -> str:
        host = re.sub(r"[^A-Za-z0-9.-]", "_", self.client.org_url.split("://", 1)[-1])
        return posixpath.join(STATE, host, f"{table.logical_name}.parquet")

    def publish(self, table: SinkTable) -> TableResult:
        started = time.monotonic()
        stats = Stats()
        frame, pk = table.frame, table.primary_key
        existing = self.client.keys(table.entity_set, pk, stats)
        hashes = pd.util.hash_pandas_object(frame, index=False).to_numpy()
        send = np.ones(len(frame), dtype=bool)
        if self.skip_unchanged and self.lake.exists(self._state_path(table)):
            before = self.lake.read_parquet(self._state_path(table))
            known = pd.Series(before["hash"].to_numpy(), index=pd.Index(before["key"], dtype=object))
            previous = known.reindex(pd.Index(frame[pk], dtype=object)).to_numpy()
            in_dataverse = pd.Index(frame[pk], dtype=object).isin(pd.Index(existing, dtype=object))
            send = ~((previous == hashes) & in_dataverse)
        to_send = table.with_rows(frame[send].reset_index(drop=True))
        rejected = self.client.upsert(to_send, stats) if len(to_send.frame) else []
        present = set(frame[pk].tolist())
        stale = [k for k in existing if k not in present]
        deleted = self.client.delete(table.entity_set, stale, stats) if stale else 0
        if self.lake is not None:
            refused = {r.key for r in rejected}
            keep = ~frame[pk].isin(refused).to_numpy()
            state = pd.DataFrame({"key": frame[pk].to_numpy(dtype=object)[keep], "hash": hashes[keep]})
            self.lake.write_parquet(self._state_path(table), state)
        size = int(table.frame.fillna("").map(len).to_numpy().sum()) if len(table.frame) else 0
        result = TableResult(
            table=table.name,
            rows=len(table.frame),
            upserted=stats.sent,
            deleted=deleted,
            unchanged=int((~send).sum()),
            rejected=len(rejected),
            bytes=size,
            seconds=time.monotonic() - started,
            requests=stats.requests,
            retries=stats.retries,
            throttles=stats.throttles,
            errors=[f"{r.key}: {r.status} {r.error}" for r in rejected],
        )
        if rejected:
            result.dead_letter = self._dead_letter(table, rejected)
            for message in result.errors:
                log.warning("%s: rejected row %s", table.name, message)
        if self.lake is not None:
            usage = {"rows": len(table.frame) - len(rejected), "bytes": size}
            self.lake.write_bytes(posixpath.join(USAGE, f"{table.logical_name}.json"), _json(usage))
        log.info(
            "%s: %d rows sent, %d deleted, %d rejected, %.0f rows/s, %d requests, %d retries, %d throttles",
            table.name,
            stats.sent,
            deleted,
            len(rejected),
            stats.sent / max(result.seconds, 1e-9),
            stats.requests,
            stats.retries,
            stats.throttles,
        )
        return result

    def _dead_letter(self, table: SinkTable, rejected: list[Rejected]) -> str:
        frame = pd.DataFrame(
            {
                "table": table.name,
                "key": [r.key for r in rejected],
                "status": [r.status for r in rejected],
                "error": [r.error for r in rejected],
                "row": [json.dumps(r.row, ensure_ascii=False, sort_keys=True) for r in rejected],
                "rejected_at": datetime.now(UTC).isoformat(timespec="seconds"),
            }
        )
        relative = posixpath.join(DEAD_LETTER, table.logical_name, f"{self.run_id}.parquet")
        if self.lake is None:
            return ""
        self.lake.write_parquet(relative, frame)
        return self.lake.url(relative)

    def usage(self) -> dict[str, TableUsage]:
        """Rows and bytes of each table's last successful publish (recorded in the lake)."""
        if self.lake is None:
            return {}
        found = {}
        for path in self.lake.find(USAGE):
            if path.endswith(".json"):
                data = json.loads(self.lake.read_bytes(path))
                found[posixpath.basename(path)[:-5]] = TableUsage(rows=data["rows"], bytes=data["bytes"])
        return found
