"""`ci-pipeline bench generate --people N`: time and peak memory of the sample data generator."""

from __future__ import annotations

import json
import resource
import tempfile
import time
from pathlib import Path

from ci_pipeline.generate import generate


def register(subparsers) -> None:
    parser = subparsers.add_parser("generate", help="generate N people into a temporary folder and time it")
    parser.add_argument("--people", type=int, default=100_000, help="real people to simulate (default: 100000)")
    parser.add_argument("--seed", type=int, default=7)
    parser.set_defaults(func=run)


def run(args) -> int:
    with tempfile.TemporaryDirectory(prefix="ci-pipeline-bench-") as tmp:
        started, cpu_started = time.perf_counter(), time.process_time()
        counts = generate(people=args.people, seed=args.seed, out=tmp, progress=False)
        seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu_started
        size = sum(f.stat().st_size for f in Path(tmp).rglob("*") if f.is_file())
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    figures = {
        "benchmark": "generate",
        "people": args.people,
        "seconds": round(seconds, 2),
        # CPU time as well: on a shared machine wall time says more about the neighbours than about the code.
        "cpu_seconds": round(cpu_seconds, 2),
        "rows": counts,
        "bytes_written": size,
        "peak_rss_mb": round(peak_kb / 1024, 1),
    }
    print(json.dumps(figures))
    return 0
