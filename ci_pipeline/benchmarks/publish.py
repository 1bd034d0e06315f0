"""`ci-pipeline bench publish --people N`: embedded sink and Web API client throughput, as one JSON line.

The Web API client runs against the loopback Dataverse server started in a separate process, so the CPU time of
this process is the client's own overhead.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from ci_pipeline.outputs import with_ids


def register(subparsers) -> None:
    parser = subparsers.add_parser("publish", help="embedded sink and Dataverse Web API client throughput")
    parser.add_argument("--people", type=int, default=100_000, help="customer profiles (default 100,000)")
    parser.add_argument("--keys-per-person", type=float, default=2.0, help="alternate keys per profile (default 2)")
    parser.add_argument(
        "--webapi-rows", type=int, help="alternate-key rows sent to the loopback server (default: --people)"
    )
    parser.add_argument("--concurrency", type=int, default=8, help="Web API senders (default 8)")
    parser.add_argument("--skip-webapi", action="store_true", help="measure the embedded sink only")
    parser.add_argument("--skip-sink", action="store_true", help="measure the Web API client only")
    parser.set_defaults(func=run)


def frames(people: int, keys_per_person: float) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Synthetic CustomerProfile and AlternateKey tables as unification hands them over (vectorised, deterministic):
    the keys carry their identifiers and GUIDs from the output contract, so publishing only checks and orders them."""
    ids = pd.Series(np.arange(people)).map("CU{:09d}".format)
    profiles = pd.DataFrame(
        {
            "CustomerId": ids,
            "FirstName": "First" + (ids.str[-4:]),
            "LastName": "Last" + (ids.str[-5:]),
            "Email": ids.str.lower() + "@example.com",
            "City": "Springfield",
            "crm_contacts_contact_id": "c-" + ids.str[2:],
        }
    )
    n_keys = int(people * keys_per_person)
    owner = np.arange(n_keys) % max(people, 1)
    keys = pd.DataFrame(
        {
            "DataSourceName": np.where(np.arange(n_keys) % 2 == 0, "crm", "ecommerce"),
            "EntityName": np.where(np.arange(n_keys) % 2 == 0, "contacts", "customers"),
            "AlternateValue": pd.Series(np.arange(n_keys)).map("k{:010d}".format),
            "KeyRing": "[]",
            "CustomerId": ids.to_numpy()[owner] if people else [],
        }
    ).astype("string")
    return profiles, with_ids("AlternateKey", keys)


def _timed(fn):
    wall, cpu = time.perf_counter(), time.process_time()
    value = fn()
    return value, time.perf_counter() - wall, time.process_time() - cpu


def run(args) -> int:
    profiles, keys = frames(args.people, args.keys_per_person)
    figures: dict = {"people": args.people, "alternate_keys": len(keys)}
    if not args.skip_sink:
        figures.update(_embedded(profiles, keys))
    if not args.skip_webapi:
        figures.update(_webapi(args, keys))
    print(json.dumps(figures))
    return 0


def _embedded(profiles: pd.DataFrame, keys: pd.DataFrame) -> dict:
    from ci_pipeline.dataverse.prepare import prepare
    from ci_pipeline.dataverse.sqlite import SqliteSink
    from ci_pipeline.export.cdm import write_export
    from ci_pipeline.lake import Lake

    figures: dict = {}
    (profile_table, key_table), shape_s, shape_cpu = _timed(
        lambda: (prepare("CustomerProfile", profiles), prepare("AlternateKey", keys))
    )
    figures["shape_seconds"] = round(shape_s, 2)
    with tempfile.TemporaryDirectory() as folder, SqliteSink(Path(folder) / "sink.sqlite") as sink:
        _, first_s, first_cpu = _timed(lambda: (sink.publish(profile_table), sink.publish(key_table)))
        _, again_s, _ = _timed(lambda: (sink.publish(profile_table), sink.publish(key_table)))
        rows = profile_table.rows + key_table.rows
        # A nightly run in which one customer's name changed: one row written.
        renamed = profile_table.frame.copy()
        renamed.iloc[len(renamed) // 2, renamed.columns.get_loc("msdynci_firstname")] = "Renamed"
        changed, changed_s, _ = _timed(lambda: sink.publish(profile_table.with_rows(renamed)))
        figures["sqlite_first_publish_seconds"] = round(first_s, 2)
        figures["sqlite_republish_seconds"] = round(again_s, 2)
        figures["sqlite_one_row_changed_seconds"] = round(changed_s, 2)
        figures["sqlite_one_row_changed_rows_written"] = changed.upserted
        figures["sqlite_rows_per_second"] = round(rows / first_s)
        figures["sqlite_total_seconds_with_shaping"] = round(shape_s + first_s, 2)
        # CPU seconds tell the cost apart from waiting for a busy machine.
        figures["sqlite_total_cpu_seconds_with_shaping"] = round(shape_cpu + first_cpu, 2)
        figures["sqlite_file_mb"] = round((Path(folder) / "sink.sqlite").stat().st_size / 1e6, 1)
    with tempfile.TemporaryDirectory() as folder:
        # The CDM CSV export of the same two tables (every field quoted), as a run writes it to the lake.
        tables = {"CustomerProfile": profiles, "AlternateKey": keys}
        stamp = datetime(2026, 1, 1, tzinfo=UTC)
        exported, export_s, export_cpu = _timed(lambda: write_export(Lake.local(folder), "bench", tables, stamp))
        figures["cdm_csv_export_seconds"] = round(export_s, 2)
        figures["cdm_csv_export_cpu_seconds"] = round(export_cpu, 2)
        figures["cdm_csv_export_mb"] = round(sum(t["bytes"] for t in exported.tables.values()) / 1e6, 1)
    return figures


def _webapi(args, keys: pd.DataFrame) -> dict:
    from azure.core.credentials import AccessToken

    from ci_pipeline.dataverse.prepare import prepare
    from ci_pipeline.dataverse.webapi import DataverseClient, WebApiSink
    from ci_pipeline.lake import Lake

    rows = args.webapi_rows or args.people
    table = prepare("AlternateKey", keys.head(rows))
    server = subprocess.Popen(
        [sys.executable, "-m", "ci_pipeline.dataverse.loopback"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        info = json.loads(server.stdout.readline())

        class StaticCredential:
            def get_token(self, *scopes, **kwargs):
                return AccessToken(info["token"], int(time.time()) + 3600)

        logging.getLogger("ci_pipeline.dataverse").setLevel(logging.WARNING)
        with tempfile.TemporaryDirectory() as folder:
            lake = Lake.local(folder)
            client = DataverseClient(info["org_url"], StaticCredential(), max_concurrency=args.concurrency)
            with WebApiSink(client, lake=lake) as sink:
                result, wall, cpu = _timed(lambda: sink.publish(table))
            # A nightly republish of unchanged rows: only the keys are read.
            client = DataverseClient(info["org_url"], StaticCredential(), max_concurrency=args.concurrency)
            with WebApiSink(client, lake=lake) as sink:
                again, again_wall, again_cpu = _timed(lambda: sink.publish(table))
    finally:
        server.stdin.close()
        server.wait(timeout=30)
    return {
        "webapi_rows": table.rows,
        "webapi_seconds": round(wall, 2),
        "webapi_rows_per_second": round(table.rows / wall),
        "webapi_requests": result.requests,
        "webapi_requests_per_second": round(result.requests / wall, 1),
        "webapi_client_cpu_ms_per_1000_rows": round(1000 * cpu / max(table.rows, 1) * 1000, 2),
        "webapi_client_cpu_share": round(cpu / wall, 3),
        "webapi_unchanged_republish_seconds": round(again_wall, 2),
        "webapi_unchanged_republish_requests": again.requests,
        "webapi_unchanged_republish_client_cpu_seconds": round(again_cpu, 2),
    }
