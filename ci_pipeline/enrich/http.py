"""Third-party enrichment over HTTP: send a few profile fields to a provider's API, map its answer to Values.

The provider is reached through an ``http-enrichment`` connection (an administrator's URL and API-key secret
reference; see docs/governance.md). Only the fields the enrichment names are sent, with ``CustomerId``; profiles
with none of them are not sent. Profiles go in batches, in ``CustomerId`` order, a bounded number at a time.

Request (one per batch)::

    POST <connection url>
    Authorization: Bearer <api key>            (or <api_key_header>: <api key>)
    Content-Type: application/json
    {"records": [{"CustomerId": "...", "<field>": <value or null>, ...}, ...]}

Response: ``{"results": [{"CustomerId": "...", ...}, ...]}`` (or the list alone), HTTP 200. Each Values key is
read from a result with a declared path (``household.income``, ``emails.0``) and optional type.

Retries: HTTP 429 and 5xx, timeouts and connection errors are retried with exponential backoff (``Retry-After``
is obeyed up to ``max_wait_seconds``). A batch that still fails, any other HTTP error, or a response that is not
JSON of that shape fails the enrichment with a message that names the batch, the host and path and the fix, and
never the API key or a query string; the stage then keeps the enrichment's previous output. Within a usable
response, problems are counted, reported as warnings and never fatal: customers the provider did not return,
ids it was not sent (unknown), ids returned twice (the first is kept), results that are not objects with a string
``CustomerId``, and values of the wrong type (published as null).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Literal
from urllib.parse import urlsplit

import httpx
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ci_pipeline import redact
from ci_pipeline.config.messages import describe_errors
from ci_pipeline.enrich.provider import (
    EnrichmentFailed,
    EnrichmentInputs,
    EnrichmentResult,
    empty_values,
    value_records,
)
from ci_pipeline.errors import UserError

if TYPE_CHECKING:
    from ci_pipeline.enrich.provider import ProviderContext

CONNECTION_TYPE = "http-enrichment"
ID = "CustomerId"
RESULTS = "results"
#: Statuses worth another try: the provider is busy or briefly broken.
_RETRY_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})
_PATH_PART = r"[A-Za-z0-9_$@-]+"

ValueType = Literal["any", "string", "number", "integer", "boolean"]


class ValueMapping(BaseModel):
    """Where one Values key is read in a result, and what type it must have."""

    model_config = ConfigDict(extra="forbid")

    path: str = Field(pattern=rf"^{_PATH_PART}(\.{_PATH_PART})*$")
    type: ValueType = "any"


class HttpParams(BaseModel):
    """The parameters of an HTTP enrichment (``enrich.enrichments.<name>.params``)."""

    model_config = ConfigDict(extra="forbid")

    type: str = Field(min_length=1, max_length=100, description="the EnrichmentType of the rows")
    fields: list[str] = Field(min_length=1, description="profile columns sent (CustomerId is always sent)")
    mapping: dict[str, ValueMapping | str] = Field(min_length=1, description="Values key -> path or {path, type}")
    provider: str | None = Field(None, max_length=100, description="the EnrichmentProvider (default: connection)")
    batch_size: int = Field(100, ge=1, le=10_000)
    concurrency: int = Field(4, ge=1, le=32)
    timeout_seconds: float = Field(30.0, gt=0, le=600)
    retries: int = Field(3, ge=0, le=10)
    backoff_seconds: float = Field(1.0, ge=0, le=60)
    max_wait_seconds: float = Field(60.0, ge=0, le=3600)
    api_key_header: str = Field("Authorization", pattern=r"^[A-Za-z0-9-]+$")


class _BatchFailed(Exception):
    """A batch could not be enriched; the message is user-facing and holds no secret. ``skipped``: the batch was
    not sent because another one failed first."""

    def __init__(self, message: str, skipped: bool = False):
        super().__init__(message)
        self.skipped = skipped


@dataclass
class _Tally:
    """What the batches counted (threads add to it under the lock)."""

    retries: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def retried(self) -> None:
        with self.lock:
            self.retries += 1


class HttpProvider:
    """Values from a third-party HTTP API; see the module docstring for the request and response contract.

    Args:
        params: the enrichment's checked parameters.
        connection: the ``http-enrichment`` connection's name.
        resolve_connection: ``name -> settings`` with the API key resolved (called when the enrichment runs).
        enrichment: the enrichment's name, for messages.
    """

    needs: frozenset[str] = frozenset()

    def __init__(
        self, params: HttpParams, connection: str, resolve_connection: Callable[[str], dict], enrichment: str = ""
    ):
        self.params = params
        self.connection = connection
        self.resolve_connection = resolve_connection
        self.name = params.provider or connection
        self.where = f"enrich.enrichments.{enrichment or params.type}"
        self.mapping = {
            k: v if isinstance(v, ValueMapping) else ValueMapping(path=v) for k, v in params.mapping.items()
        }

    def enrich(self, inputs: EnrichmentInputs) -> EnrichmentResult:
        """Send the chosen fields in batches and map the answers; see the module docstring."""
        url, api_key = self._settings()
        records, not_sent = self._records(inputs.profiles)
        size = self.params.batch_size
        batches = [records[i : i + size] for i in range(0, len(records), size)]
        tally = _Tally()
        answers = self._send_all(batches, url, api_key, tally)
        values, counts = _collect(batches, answers, self.mapping, api_key)
        counts = {"sent": len(records), "batches": len(batches), "not_sent_empty": not_sent, **counts}
        counts["retries"] = tally.retries
        warnings = tuple(redact.redact(w).replace(api_key, redact.MASK) for w in _warnings(counts, self.name))
        if not values:
            return EnrichmentResult(values=empty_values(), counts=counts, warnings=warnings)
        ids = sorted(values)
        frame = pd.DataFrame(
            {"CustomerId": ids, "EnrichmentType": self.params.type, "Values": [values[i] for i in ids]}
        ).astype({"CustomerId": "string", "EnrichmentType": "string"})
        return EnrichmentResult(values=frame, counts=counts, warnings=warnings)

    def _settings(self) -> tuple[str, str]:
        """The URL and API key of the connection, checked; a problem is an :class:`EnrichmentFailed`."""
        try:
            settings = self.resolve_connection(self.connection)
        except (UserError, EnrichmentFailed) as exc:
            said = redact.redact(exc)
            named = redact.redact(f"connection {self.connection!r}") in said
            if "://" in self.connection:
                # A URL pasted where a connection's name belongs: where the URL and its key go instead.
                said += (
                    f"; connection: takes the name of an {CONNECTION_TYPE} connection, not a URL: an admin adds it "
                    f"with `ci-pipeline connections add NAME --type {CONNECTION_TYPE} --url URL --api-key env:VAR`"
                )
            raise EnrichmentFailed(
                f"{self.where}: {said if named else f'connection {redact.redact(repr(self.connection))}: {said}'}"
            ) from None
        kind = settings.get("type", CONNECTION_TYPE)
        if kind != CONNECTION_TYPE:
            raise EnrichmentFailed(
                f"{self.where}: connection {self.connection!r} is a {kind} connection; an HTTP enrichment needs an "
                f"{CONNECTION_TYPE} connection (`ci-pipeline connections add NAME --type {CONNECTION_TYPE} ...`)"
            )
        url, api_key = settings.get("url"), settings.get("api_key")
        if not url or not api_key:
            missing = "url" if not url else "api_key"
            raise EnrichmentFailed(f"{self.where}: connection {self.connection!r} has no {missing}; an admin sets it")
        redact.register(api_key)
        if problem := header_problem(api_key):
            raise EnrichmentFailed(f"{self.where}: connection {self.connection!r} api_key {problem}")
        return url, api_key

    def _records(self, profiles: pd.DataFrame) -> tuple[list[dict], int]:
        """The records to send, in CustomerId order, and how many profiles had none of the fields."""
        fields = [f for f in dict.fromkeys(self.params.fields) if f != ID]
        missing = [f for f in fields if f not in profiles.columns]
        if missing:
            raise EnrichmentFailed(
                f"{self.where}.params.fields: the customer profile has no column {', '.join(missing)}; name profile "
                f"columns (it has {', '.join(map(str, profiles.columns[:12]))}...)"
            )
        chosen = profiles[[ID, *fields]].sort_values(ID, kind="stable")
        has_any = chosen[fields].notna().any(axis=1) if fields else pd.Series(True, index=chosen.index)
        chosen = chosen[has_any.to_numpy()].astype({ID: "string"})
        return value_records(chosen), int((~has_any).sum())

    def _send_all(self, batches: list[list[dict]], url: str, api_key: str, tally: _Tally) -> list[list]:
        """Every batch's results, in batch order; the first batch that fails stops the others."""
        if not batches:
            return []
        header = self.params.api_key_header
        auth = f"Bearer {api_key}" if header.lower() == "authorization" else api_key
        headers = {header: auth, "Accept": "application/json", "Content-Type": "application/json"}
        stop = threading.Event()
        results, failures = [], []
        with (
            httpx.Client(headers=headers, timeout=self.params.timeout_seconds, follow_redirects=False) as client,
            ThreadPoolExecutor(max_workers=self.params.concurrency, thread_name_prefix="enrich-http") as pool,
        ):
            futures = [
                pool.submit(self._send, client, url, batch, number, len(batches), stop, tally)
                for number, batch in enumerate(batches, start=1)
            ]
            for future in futures:
                try:
                    results.append(future.result())
                except _BatchFailed as exc:
                    failures.append(exc)
        if failures:
            # The batch that failed first in batch order, not one that was merely skipped because of it.
            cause = next((f for f in failures if not f.skipped), failures[0])
            message = redact.redact(str(cause)).replace(api_key, redact.MASK)
            raise EnrichmentFailed(f"{self.where}: {message}")
        return results

    def _send(
        self,
        client: httpx.Client,
        url: str,
        batch: list[dict],
        number: int,
        total: int,
        stop: threading.Event,
        tally: _Tally,
    ) -> list:
        """One batch's results, retried as the module docstring says; :class:`_BatchFailed` when it cannot."""
        where = f"batch {number} of {total} ({len(batch)} customers) to {_endpoint(url)}"
        body = json.dumps({"records": batch}, ensure_ascii=False, default=str).encode("utf-8")
        attempts = self.params.retries + 1
        attempt = 0
        try:
            while True:
                if stop.is_set():
                    raise _BatchFailed(f"{where}: not sent, another batch failed", skipped=True)
                results, wait, problem = self._attempt(client, url, body, where)
                if problem is None:
                    return results
                if attempt + 1 == attempts:
                    raise _BatchFailed(f"{where}: {problem} after {attempts} attempt(s); {_advice(problem)}")
                if wait > self.params.max_wait_seconds:
                    raise _BatchFailed(
                        f"{where}: {problem}; the provider asks to wait {wait:g} s (Retry-After), longer than "
                        f"params.max_wait_seconds ({self.params.max_wait_seconds:g}); raise it or run later"
                    )
                tally.retried()
                backoff = min(self.params.backoff_seconds * 2**attempt, self.params.max_wait_seconds)
                stop.wait(wait if wait >= 0 else backoff)
                attempt += 1
        except _BatchFailed as exc:
            if not exc.skipped:
                stop.set()
            raise

    def _attempt(
        self, client: httpx.Client, url: str, body: bytes, where: str
    ) -> tuple[list | None, float, str | None]:
        """One POST: (results, 0, None) on success; (None, seconds to wait or -1 for the backoff, problem) when
        worth another try. Raises :class:`_BatchFailed` when not."""
        try:
            response = client.post(url, content=body)
        except httpx.TimeoutException as exc:
            return None, -1, f"no response within {self.params.timeout_seconds:g} s ({type(exc).__name__})"
        except httpx.TransportError as exc:
            return None, -1, f"cannot reach the provider ({type(exc).__name__})"
        if response.status_code in _RETRY_STATUS or response.status_code >= 500:
            return None, _retry_after(response), f"HTTP {response.status_code}"
        if response.status_code in (401, 403):
            raise _BatchFailed(
                f"{where}: HTTP {response.status_code}: the provider refused the API key; an admin checks the "
                f"connection's api_key (`ci-pipeline connections edit {self.connection} --api-key REF`)"
            )
        if response.status_code != 200:
            raise _BatchFailed(f"{where}: HTTP {response.status_code}: {_snippet(response)}")
        return _results(response, where), 0, None


def _advice(problem: str) -> str:
    if problem.startswith("no response"):
        return "raise params.timeout_seconds or lower params.batch_size"
    if problem.startswith("cannot reach"):
        return "check the connection's url and that the provider is up"
    return "the provider is busy or failing; run later, or lower params.concurrency"


def build(params: Mapping, context: ProviderContext | None = None) -> HttpProvider:
    """The provider for an enrichment's ``params`` and ``context`` (its ``connection`` and ``resolve_connection``).

    Bad parameters are an :class:`EnrichmentFailed` naming the key (``enrich.enrichments.<name>.params.<key>``).
    """
    enrichment = getattr(context, "enrichment", "") or ""
    where = f"enrich.enrichments.{enrichment or 'http'}"
    try:
        checked = HttpParams.model_validate(dict(params))
    except ValidationError as exc:
        raise EnrichmentFailed("; ".join(describe_errors(exc, HttpParams, f"{where}.params"))) from None
    connection = getattr(context, "connection", None)
    if not connection:
        raise EnrichmentFailed(
            f"{where}.connection: name the {CONNECTION_TYPE} connection the provider is reached through "
            f"(`ci-pipeline connections list`)"
        )
    resolve = getattr(context, "resolve_connection", None)
    if resolve is None:
        raise EnrichmentFailed(f"{where}: connection {connection!r} cannot be resolved here: no connections")
    return HttpProvider(checked, connection, resolve, enrichment)


def _endpoint(url: str) -> str:
    """Host and path of ``url``: never its query string or credentials."""
    parts = urlsplit(url)
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{parts.hostname}{port}{parts.path}"


def _retry_after(response: httpx.Response) -> float:
    """Seconds the provider asks to wait (``Retry-After`` in seconds or as a date), or -1 for the backoff."""
    value = response.headers.get("Retry-After", "").strip()
    if not value:
        return -1
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return -1
    # An HTTP date is in GMT; one written without a zone (``-0000``) is read the same way.
    when = when if when.tzinfo else when.replace(tzinfo=UTC)
    return max((when - datetime.now(UTC)).total_seconds(), 0.0)


def _results(response: httpx.Response, where: str) -> list:
    """The result list of a 200 response; :class:`_BatchFailed` when the body is not JSON of the contract."""
    try:
        body = response.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        kind = response.headers.get("Content-Type", "no content type")
        raise _BatchFailed(
            f"{where}: the response is not JSON ({kind}, {len(response.content)} bytes); the provider must answer "
            f'{{"{RESULTS}": [...]}}'
        ) from None
    results = body.get(RESULTS) if isinstance(body, dict) else body
    if not isinstance(results, list):
        raise _BatchFailed(
            f"{where}: the response has no {RESULTS!r} list (it is a JSON {type(body).__name__}); the provider "
            f'must answer {{"{RESULTS}": [...]}}'
        )
    return results


def header_problem(api_key: str) -> str | None:
    """Why ``api_key`` cannot be sent in an HTTP header (None when it can): a header carries printable ASCII only,
    and a key with other characters fails in the HTTP library with a message about encodings or the network."""
    at = next((i for i, c in enumerate(api_key) if not " " <= c <= "~"), None)
    if at is None:
        return None
    return (
        f"holds a character an HTTP header cannot carry at position {at + 1} (only printable ASCII may be sent); "
        "an admin stores the key as the provider issued it (`ci-pipeline connections edit ... --api-key ...`)"
    )


def _snippet(response: httpx.Response, limit: int = 200) -> str:
    return redact.clipped(" ".join(response.text.split()), limit) or "(empty body)"


def _collect(batches: list[list[dict]], answers: list[list], mapping: Mapping[str, ValueMapping], api_key: str):
    """Values per returned customer and the counts of what did not fit (see the module docstring).

    A provider that echoes the API key back in a value does not get it published: it is masked.
    """
    values: dict[str, dict] = {}
    counts = dict.fromkeys(("returned", "not_returned", "unknown_ids", "duplicate_ids", "malformed_records"), 0)
    counts["wrong_type"] = 0
    for batch, results in zip(batches, answers, strict=True):
        sent = {r[ID] for r in batch}
        seen: set[str] = set()
        for item in results:
            ident = item.get(ID) if isinstance(item, dict) else None
            if not isinstance(ident, str):
                counts["malformed_records"] += 1
            elif ident not in sent:
                counts["unknown_ids"] += 1
            elif ident in seen:
                counts["duplicate_ids"] += 1
            else:
                seen.add(ident)
                values[ident], wrong = _map(item, mapping, api_key)
                counts["wrong_type"] += wrong
        counts["returned"] += len(seen)
        counts["not_returned"] += len(sent) - len(seen)
    return values, counts


def _map(item: dict, mapping: Mapping[str, ValueMapping], api_key: str) -> tuple[dict, int]:
    """One result's Values and how many of them had the wrong type (those are None)."""
    out, wrong = {}, 0
    for key, spec in mapping.items():
        value = _masked(_lookup(item, spec.path), api_key)
        if value is not None and not _is(value, spec.type):
            value, wrong = None, wrong + 1
        out[key] = int(value) if spec.type == "integer" and value is not None else value
    return out, wrong


def _masked(value: object, secret: str) -> object:
    """``value`` with every occurrence of ``secret`` in its strings (nested ones too) replaced by the mask."""
    if isinstance(value, str):
        return value.replace(secret, redact.MASK) if secret in value else value
    if isinstance(value, dict):
        return {k: _masked(v, secret) for k, v in value.items()}
    if isinstance(value, list):
        return [_masked(v, secret) for v in value]
    return value


def _lookup(item: object, path: str) -> object:
    for part in path.split("."):
        if isinstance(item, dict):
            item = item.get(part)
        elif isinstance(item, list) and part.isdigit() and int(part) < len(item):
            item = item[int(part)]
        else:
            return None
    return item


def _is(value: object, kind: str) -> bool:
    if kind == "any":
        return True
    if kind == "string":
        return isinstance(value, str)
    if kind == "boolean":
        return isinstance(value, bool)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    return kind == "number" or float(value).is_integer()


def _warnings(counts: Mapping[str, int], provider: str) -> list[str]:
    said = {
        "not_returned": "customers sent were not returned by the provider (no values for them)",
        "unknown_ids": "results had a CustomerId that was not sent in their batch (ignored)",
        "duplicate_ids": "results repeated a CustomerId of their batch (the first was kept)",
        "malformed_records": "results were not objects with a string CustomerId (ignored)",
        "wrong_type": "values had another type than the mapping declares (published as null)",
        "retries": "requests were retried (HTTP 429/5xx, timeouts or connection errors)",
    }
    return [f"{provider}: {counts[k]} {text}" for k, text in said.items() if counts.get(k)]
