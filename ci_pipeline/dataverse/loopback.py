"""A small Dataverse Web API server on loopback, for tests and benchmarks of the Web API sink.

It keeps tables in memory and speaks the subset the sink uses: UpsertMultiple, PATCH and DELETE by GUID, paged
GET with ``@odata.nextLink``, ``$batch`` (multipart/mixed), bearer tokens (which can be expired), and scripted
faults: 429 with Retry-After, 5xx, dropped connections. A row holding the ``reject_value`` anywhere is refused with
400, failing the whole UpsertMultiple request that carries it, as Dataverse does for standard tables.

Run it on its own (for benchmarks): ``python -m ci_pipeline.dataverse.loopback`` prints its base URL and token.
"""

from __future__ import annotations

import json
import re
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

API = "/api/data/v9.2/"


@dataclass
class Fault:
    """Answer the next ``times`` requests matching ``method``/``path_contains`` with a fault instead of serving them.

    ``kind``: ``"429"`` (with ``retry_after`` seconds), ``"500"``/``"502"``/``"503"``/``"504"``, ``"drop"`` (close
    the connection without an answer), or ``"expire"`` (every token issued so far expires; this request gets 401).
    """

    kind: str
    times: int = 1
    retry_after: float = 1.0
    method: str | None = None
    path_contains: str = ""


@dataclass
class Record:
    """One request as the server saw it."""

    start: float
    end: float
    method: str
    path: str
    status: int
    ids: list[str] = field(default_factory=list)


class LoopbackDataverse:
    """The server. Use as a context manager; ``base_url`` is the Web API root.

    Args:
        latency: seconds each request takes (simulated server work).
        reject_value: a value Dataverse refuses (400) wherever it appears in a row.
        page_size_cap: largest page served for GET, whatever the client asks.
    """

    def __init__(self, latency: float = 0.0, reject_value: str = "REJECT-ME", page_size_cap: int = 5000):
        self.latency = latency
        self.reject_value = reject_value
        self.page_size_cap = page_size_cap
        self.tables: dict[str, dict[str, dict]] = {}
        self.faults: list[Fault] = []
        self.log: list[Record] = []
        self.valid_tokens: set[str] = set()
        self.keep_log = True
        self._lock = threading.Lock()
        self._version = 0
        self._sorted: dict[str, tuple[int, int, list[str]]] = {}
        self._server: ThreadingHTTPServer | None = None

    # -- lifecycle ----------------------------------------------------------------------------------------------
    def start(self, port: int = 0) -> LoopbackDataverse:
        server = ThreadingHTTPServer(("127.0.0.1", port), _handler(self))
        server.daemon_threads = True
        self._server = server
        # A short poll: stop() waits for the serving loop to look up (half a second by default, per server).
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    @property
    def org_url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    @property
    def base_url(self) -> str:
        return self.org_url + API

    # -- tokens -------------------------------------------------------------------------------------------------
    def issue_token(self) -> str:
        token = uuid.uuid4().hex
        with self._lock:
            self.valid_tokens.add(token)
        return token

    def expire_tokens(self) -> None:
        with self._lock:
            self.valid_tokens.clear()

    # -- helpers for assertions ---------------------------------------------------------------------------------
    def rows(self, entity_set: str) -> dict[str, dict]:
        with self._lock:
            return {k: dict(v) for k, v in self.tables.get(entity_set, {}).items()}

    def records(self, method: str | None = None, contains: str = "") -> list[Record]:
        with self._lock:
            return [r for r in self.log if (method is None or r.method == method) and contains in r.path]

    # -- request handling ---------------------------------------------------------------------------------------
    def _take_fault(self, method: str, path: str) -> Fault | None:
        with self._lock:
            for fault in self.faults:
                if fault.times > 0 and fault.method in (None, method) and fault.path_contains in path:
                    fault.times -= 1
                    return fault
        return None

    def _authorised(self, header: str | None) -> bool:
        token = (header or "").removeprefix("Bearer ").strip()
        with self._lock:
            return token in self.valid_tokens

    def _rejects(self, row: dict) -> bool:
        return any(v == self.reject_value for v in row.values())

    def handle(self, method: str, path: str, headers: dict, body: bytes) -> tuple[int, dict, bytes, list[str]]:
        """Serve one (non-fault) request: (status, headers, body, ids touched)."""
        parsed = urlparse(path)
        route = parsed.path.removeprefix(API)
        if method == "POST" and route == "$batch":
            return self._batch(headers, body)
        match = re.fullmatch(r"([A-Za-z0-9_]+)\(([0-9a-fA-F-]+)\)", route)
        if match:
            entity_set, key = match.groups()
            if method == "DELETE":
                with self._lock:
                    gone = self.tables.get(entity_set, {}).pop(key, None)
                    self._version += 1
                return (204 if gone is not None else 404), {}, b"", [key]
            if method == "PATCH":
                row = json.loads(body)
                if self._rejects(row):
                    return _error(400, f"{entity_set}({key}): a value is not valid for its column", [key])
                with self._lock:
                    self.tables.setdefault(entity_set, {})[key] = {**row}
                    self._version += 1
                return 204, {}, b"", [key]
        if method == "POST" and route.endswith("/Microsoft.Dynamics.CRM.UpsertMultiple"):
            entity_set = route.split("/", 1)[0]
            targets = json.loads(body)["Targets"]
            ids = []
            for target in targets:
                logical = target.get("@odata.type", "").removeprefix("Microsoft.Dynamics.CRM.")
                key = target.get(f"{logical}id")
                if not key:
                    return _error(400, f"UpsertMultiple: a target has no {logical}id", ids)
                if self._rejects(target):
                    return _error(400, f"UpsertMultiple: {logical}id {key}: a value is not valid", [key])
                ids.append(key)
            with self._lock:
                table = self.tables.setdefault(entity_set, {})
                self._version += 1
                for target in targets:
                    row = {k: v for k, v in target.items() if k != "@odata.type"}
                    logical = target["@odata.type"].removeprefix("Microsoft.Dynamics.CRM.")
                    table[row[f"{logical}id"]] = row
            return 204, {}, b"", ids
        if method == "GET" and "/" not in route:
            return self._page(route, parsed.query, headers)
        return _error(404, f"{method} {route}: no such resource", [])

    def _page(self, entity_set: str, query: str, headers: dict) -> tuple[int, dict, bytes, list[str]]:
        params = parse_qs(query)
        select = params.get("$select", [""])[0]
        skip = int(params.get("$skiptoken", ["0"])[0])
        prefer = headers.get("prefer", "")
        asked = re.search(r"odata\.maxpagesize=(\d+)", prefer)
        size = min(int(asked.group(1)) if asked else self.page_size_cap, self.page_size_cap)
        with self._lock:
            table = self.tables.get(entity_set, {})
            cached = self._sorted.get(entity_set)
            # Paging a large table re-sorts nothing: the sorted keys are kept until the table changes.
            if cached is None or cached[0] != len(table) or cached[1] != self._version:
                cached = (len(table), self._version, sorted(table))
                self._sorted[entity_set] = cached
            keys = cached[2]
            page = [{select: k} if select else dict(self.tables[entity_set][k]) for k in keys[skip : skip + size]]
        out: dict = {"value": page}
        if skip + size < len(keys):
            out["@odata.nextLink"] = f"{self.base_url}{entity_set}?$select={select}&$skiptoken={skip + size}"
        return 200, {"Content-Type": "application/json"}, json.dumps(out).encode(), []

    def _batch(self, headers: dict, body: bytes) -> tuple[int, dict, bytes, list[str]]:
        boundary = re.search(r"boundary=([^;]+)", headers.get("content-type", ""))
        if not boundary:
            return _error(400, "$batch: no multipart boundary", [])
        marker = "--" + boundary.group(1).strip()
        answers, ids = [], []
        for part in body.decode().split(marker)[1:]:
            if part.startswith("--"):
                break
            _, _, request = part.partition("\r\n\r\n")
            head, _, inner_body = request.partition("\r\n\r\n")
            request_line, *header_lines = head.strip().split("\r\n")
            method, url, _ = request_line.split(" ", 2)
            inner_headers = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in header_lines)}
            status, _, payload, touched = self.handle(method, urlparse(url).path, inner_headers, inner_body.encode())
            ids.extend(touched)
            answers.append(
                "Content-Type: application/http\r\nContent-Transfer-Encoding: binary\r\n\r\n"
                f"HTTP/1.1 {status} {_reason(status)}\r\nContent-Type: application/json\r\n\r\n{payload.decode()}\r\n"
            )
        out_boundary = f"batchresponse_{uuid.uuid4()}"
        text = "".join(f"--{out_boundary}\r\n{a}" for a in answers) + f"--{out_boundary}--\r\n"
        return 200, {"Content-Type": f"multipart/mixed; boundary={out_boundary}"}, text.encode(), ids


def _reason(status: int) -> str:
    return {200: "OK", 204: "No Content", 400: "Bad Request", 404: "Not Found"}.get(status, "Status")


def _error(status: int, message: str, ids: list[str]) -> tuple[int, dict, bytes, list[str]]:
    body = json.dumps({"error": {"code": "0x80040203", "message": message}}).encode()
    return status, {"Content-Type": "application/json"}, body, ids


def _handler(server: LoopbackDataverse):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):  # keep test output quiet
            pass

        def _serve(self):
            start = time.monotonic()
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            method, path = self.command, self.path
            fault = server._take_fault(method, path)
            if server.latency:
                time.sleep(server.latency)
            if fault is not None and fault.kind == "expire":
                server.expire_tokens()
                fault = None
            if fault is not None and fault.kind == "drop":
                self._record(start, method, path, 0, [])
                self.close_connection = True
                self.connection.close()
                return
            if fault is not None:
                status = int(fault.kind)
                extra = {"Retry-After": f"{fault.retry_after:g}"} if status == 429 else {}
                self._answer(start, method, path, status, extra, b'{"error": {"message": "fault"}}', [])
                return
            if not server._authorised(self.headers.get("Authorization")):
                self._answer(start, method, path, 401, {}, b'{"error": {"message": "token expired"}}', [])
                return
            headers = {k.lower(): v for k, v in self.headers.items()}
            try:
                status, extra, payload, ids = server.handle(method, path, headers, body)
            except (ValueError, KeyError) as exc:
                status, extra, payload, ids = _error(400, f"malformed request: {exc}", [])
            self._answer(start, method, path, status, extra, payload, ids)

        def _answer(self, start, method, path, status, extra, payload, ids):
            # Noted before the answer goes out: a client that has read its answer finds the request in the log
            # (noted after it, a test reading the log as soon as its client returned could miss the last one).
            self._record(start, method, path, status, ids)
            self.send_response(status)
            for key, value in extra.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(payload)))
            self.send_header("OData-Version", "4.0")
            self.end_headers()
            if payload:
                self.wfile.write(payload)

        def _record(self, start, method, path, status, ids):
            if server.keep_log:
                with server._lock:
                    server.log.append(Record(start, time.monotonic(), method, path, status, ids))

        do_GET = do_POST = do_PATCH = do_DELETE = _serve

    return Handler


def main() -> int:
    """Serve until stdin closes; print the base URL and a valid token first (used by the benchmark)."""
    server = LoopbackDataverse().start()
    server.keep_log = False
    print(json.dumps({"base_url": server.base_url, "org_url": server.org_url, "token": server.issue_token()}))
    sys.stdout.flush()
    sys.stdin.read()
    server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
