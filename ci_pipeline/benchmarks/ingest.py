"""`ci-pipeline bench ingest`: CSV and Parquet ingestion throughput on a synthetic table with some bad rows."""

from __future__ import annotations

import json
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd


def register(subparsers) -> None:
    parser = subparsers.add_parser("ingest", help="ingest a synthetic CSV and Parquet table; print rows/s as JSON")
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.set_defaults(func=run)


def _frame(rows: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    ids = np.arange(rows).astype(str)
    ids[rng.random(rows) < 0.01] = ids[0]  # 1% duplicate keys
    amount = np.round(rng.random(rows) * 100, 2).astype(str)
    amount[rng.random(rows) < 0.01] = "n/a"  # 1% malformed numbers
    days = pd.Timestamp("2020-01-01") + pd.to_timedelta(rng.integers(0, 2000, rows), unit="D")
    return pd.DataFrame(
        {
            "id": ids,
            "name": np.char.add("name ", rng.integers(0, 50_000, rows).astype(str)),
            "email": np.char.add(rng.integers(0, 10**6, rows).astype(str), "@example.com"),
            "amount": amount,
            "day": days.strftime("%m/%d/%Y"),
        }
    )


def run(args) -> int:
    from ci_pipeline.config import load_config
    from ci_pipeline.ingest import ingest_table
    from ci_pipeline.lake import Lake

    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        frame = _frame(args.rows, args.seed)
        frame.to_csv(root / "t.csv", index=False)
        frame.to_parquet(root / "t.parquet", index=False)
        columns = '{"amount": "double", "day": {"type": "date", "format": "%m/%d/%Y"}}'
        (root / "ci_pipeline.yaml").write_text(
            "sources:\n  bench:\n    owner: team:bench\n    tables:\n"
            f"      csv_table: {{format: csv, path: t.csv, primary_key: id, columns: {columns}}}\n"
            f"      parquet_table: {{format: parquet, path: t.parquet, primary_key: id, columns: {columns}}}\n"
        )
        config = load_config(root / "ci_pipeline.yaml")
        lake = Lake.local(root / "lake")
        figures = {"benchmark": "ingest", "rows": args.rows}
        for table in ("csv_table", "parquet_table"):
            started = time.perf_counter()
            result = ingest_table(config, lake, "bench", table)
            seconds = time.perf_counter() - started
            figures[f"{table}_seconds"] = round(seconds, 3)
            figures[f"{table}_rows_per_second"] = round(args.rows / seconds)
            figures[f"{table}_quarantined"] = result.rows_quarantined
        figures["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    print(json.dumps(figures))
    return 0
