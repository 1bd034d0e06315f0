"""`ci-pipeline bench measures`: measures and segments over synthetic customers and activities.

Prints one JSON line: seconds per phase and peak memory. Defaults: 1M customers, 10 activities each, 50 measures,
200 segments. The frames are synthetic (numpy, seeded), so the figures isolate the measure and segment engines.
The activity facts are generated and stored as Parquet by a child process, and read back as the stages read them
(in parts of whole customers), so the peak memory is that of measures and segments, not of the generator.
"""

from __future__ import annotations

import datetime as dt
import json
import multiprocessing
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from ci_pipeline.config.measures import MeasuresConfig
from ci_pipeline.config.segments import SegmentsConfig
from ci_pipeline.lake import Lake
from ci_pipeline.measures.compute import compute_measures, customer_measure_table, run_end
from ci_pipeline.measures.facts import ROWS_PER_PART, StoredFacts
from ci_pipeline.segments.evaluate import SegmentEngine
from ci_pipeline.segments.membership import membership_table
from ci_pipeline.segments.run import parsed_rules

AS_OF = dt.date(2026, 6, 30)
ACTIVITIES = ("orders", "order_lines", "web_sessions", "points", "surveys")
TYPES = ("SalesOrder", "SalesOrderLine", "WebLog", "Loyalty", "Feedback")
SHARE = (0.35, 0.3, 0.25, 0.05, 0.05)
CHANNELS = ("web", "mobile_app", "phone", "store_pickup")
CATEGORIES = tuple(f"category_{i}" for i in range(12))


def register(subparsers) -> None:
    parser = subparsers.add_parser("measures", help="measures and segments on synthetic customers and activities")
    parser.add_argument("--people", type=int, default=1_000_000, help="customers (default 1,000,000)")
    parser.add_argument("--activities-per-person", type=float, default=10.0, help="average activities (default 10)")
    parser.add_argument("--measures", type=int, default=50, help="customer attribute measures (default 50)")
    parser.add_argument("--segments", type=int, default=200, help="segments (default 200)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--rows-per-part",
        type=int,
        default=ROWS_PER_PART,
        help=f"activity rows read at once (default {ROWS_PER_PART:,}, as the stages read them)",
    )
    parser.set_defaults(func=run)


def synthetic(people: int, per_person: float, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A profile and activity facts shaped like the activities stage's output."""
    rng = np.random.default_rng(seed)
    ids = pd.Series(np.char.add("C", np.arange(people).astype("U8")), dtype="string")
    profile = pd.DataFrame(
        {
            "CustomerId": ids,
            "Country": pd.Categorical.from_codes(rng.integers(0, 5, people), ["US", "CA", "GB", "DE", "FR"]).astype(
                "string"
            ),
            "BirthYear": rng.integers(1940, 2008, people),
        }
    )
    n = int(people * per_person)
    # Skewed activity per customer: a few customers are very active, many are not.
    owner = np.minimum((rng.pareto(1.5, n) * people / 8).astype(np.int64), people - 1)
    owner = rng.permutation(people)[owner]
    kind = rng.choice(len(ACTIVITIES), size=n, p=SHARE)
    seconds = rng.integers(0, 3 * 365 * 86400, n)
    stamps = pd.Timestamp(AS_OF, tz="UTC") + pd.Timedelta(days=1) - pd.to_timedelta(seconds, unit="s")
    sales = kind <= 1
    facts = pd.DataFrame(
        {
            "ActivityId": pd.RangeIndex(n).astype("string"),
            "CustomerId": ids.to_numpy()[owner],
            "Activity": pd.Categorical.from_codes(kind, ACTIVITIES),
            "ActivityType": pd.Categorical.from_codes(kind, TYPES),
            "ActivityTimeStamp": stamps,
            "amount": np.where(sales, np.round(rng.gamma(2.0, 40.0, n), 2), np.nan),
            "channel": pd.Categorical.from_codes(np.where(sales, rng.integers(0, 4, n), -1), CHANNELS),
            "category": pd.Categorical.from_codes(np.where(kind == 1, rng.integers(0, 12, n), -1), CATEGORIES),
            "is_return": np.where(sales, rng.random(n) < 0.04, False),
            "points": np.where(kind == 3, rng.integers(-50, 200, n), 0),
            "rating": np.where(kind == 4, rng.integers(1, 6, n), 0).astype(float),
        }
    )
    facts.loc[kind != 4, "rating"] = np.nan
    return profile, facts


def measure_config(count: int) -> MeasuresConfig:
    """``count`` attribute measures mixing aggregations, filters, windows, templates and expressions."""
    windows = [None, {"last": 30}, {"last": 90}, {"last": 12, "unit": "months"}, {"period": "this_year"}]
    bases = [
        {"activity": "orders", "aggregate": "sum", "field": "amount"},
        {"activity": "orders", "aggregate": "count"},
        {"activity": "orders", "aggregate": "average", "field": "amount"},
        {"activity": "orders", "aggregate": "max", "field": "amount"},
        {"activity": "order_lines", "aggregate": "count_distinct", "field": "category"},
        {"activity": "web_sessions", "aggregate": "count"},
        {"activity": "points", "aggregate": "sum", "field": "points"},
        {"activity": "surveys", "aggregate": "min", "field": "rating"},
        {"activity": "orders", "aggregate": "days_since_latest"},
        {
            "activity": "orders",
            "aggregate": "sum",
            "field": "amount",
            "where": [{"field": "channel", "op": "=", "value": "web"}],
        },
    ]
    specs: dict[str, dict] = {
        "spend": {"template": "total_transaction_value", "activity": "orders"},
        "orders_n": {"template": "transaction_count", "activity": "orders"},
        "aov": {"expression": "spend / orders_n"},
        "recency": {"template": "rfm_recency_score", "activity": "orders"},
        "frequency": {"template": "rfm_frequency_score", "activity": "orders"},
        "monetary": {"template": "rfm_monetary_score", "activity": "orders"},
        "lifespan": {"template": "active_lifespan", "activity": "orders"},
        "last_channel": {"activity": "orders", "aggregate": "last", "field": "channel"},
        "top_category": {"activity": "order_lines", "aggregate": "argmax", "field": "category", "order_by": "amount"},
    }
    i = 0
    while len(specs) < count:
        base, window = bases[i % len(bases)], windows[(i // len(bases)) % len(windows)]
        specs[f"m{i:03d}"] = {**base, **({"window": window} if window else {})}
        i += 1
    return MeasuresConfig.model_validate({"as_of": AS_OF, "attributes": dict(list(specs.items())[:count])})


def segment_config(count: int, measures: MeasuresConfig, seed: int) -> SegmentsConfig:
    """``count`` segments drawn from a pool of conditions (as real projects reuse fields and thresholds)."""
    rng = np.random.default_rng(seed)
    numeric = [n for n, s in measures.attributes.items() if s.result_type() == "number"]
    pool = [{"field": f"measure.{n}", "op": op, "value": v} for n in numeric[:30] for op, v in ((">=", 2), ("<", 50))]
    pool += [
        {"field": "profile.Country", "op": "in", "value": ["US", "CA"]},
        {"field": "profile.BirthYear", "op": "between", "value": [1970, 1990]},
    ]
    pool += [
        {"activity": a, "within": f"{d} days"} for a in ("orders", "web_sessions", "surveys") for d in (30, 90, 365)
    ]
    pool += [{"activity": "surveys", "within": "180 days", "where": [{"field": "rating", "op": "<=", "value": 2}]}]
    definitions = {}
    for i in range(count):
        picks = [pool[j] for j in rng.choice(len(pool), size=int(rng.integers(1, 4)), replace=False)]
        rules = [{"all" if rng.random() < 0.7 else "any": picks}]
        if i >= 10 and rng.random() < 0.2:
            rules.append({"combine": "except", "segment": f"s{int(rng.integers(0, 10)):03d}"})
        definitions[f"s{i:03d}"] = {"rules": rules}
    return SegmentsConfig.model_validate({"definitions": definitions})


def store(folder: str, people: int, per_person: float, seed: int) -> None:
    """Generate the profile and the facts and store them as Parquet in ``folder`` (run in a child process)."""
    lake = Lake.local(folder)
    profile, facts = synthetic(people, per_person, seed)
    lake.write_parquet("profile.parquet", profile)
    lake.write_parquet("facts.parquet", facts)


def run(args) -> int:
    figures: dict = {
        "benchmark": "measures",
        "people": args.people,
        "measures": args.measures,
        "segments": args.segments,
        "rows_per_part": args.rows_per_part,
    }
    clock = time.perf_counter()

    def phase(name: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        figures[f"{name}_seconds"] = round(now - clock, 2)
        # The peak so far (it only grows): what the phases up to this one needed at most.
        figures[f"{name}_peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
        clock = now

    with tempfile.TemporaryDirectory(prefix="ci-pipeline-bench-measures-") as folder:
        child = multiprocessing.get_context("fork").Process(
            target=store, args=(folder, args.people, args.activities_per_person, args.seed)
        )
        child.start()
        child.join()
        if child.exitcode != 0:
            raise RuntimeError(f"generating the synthetic data failed (exit code {child.exitcode})")
        lake = Lake.local(folder)
        profile = lake.read_parquet("profile.parquet")
        facts = StoredFacts(lake.dataset("facts.parquet"), rows_per_part=args.rows_per_part)
        figures["activities"] = facts.dataset.count_rows()
        figures["facts_parquet_mb"] = round(Path(folder, "facts.parquet").stat().st_size / 2**20, 1)
        phase("generate")
        start, cpu_start = time.perf_counter(), time.process_time()
        customers = pd.Index(sorted(profile["CustomerId"].unique()), dtype="string")
        measures = measure_config(args.measures)
        result = compute_measures(measures, profile["CustomerId"], facts, AS_OF)
        phase("measures")
        table = customer_measure_table(result.attributes)
        figures["customer_measure_rows"] = len(table)
        del table
        phase("customer_measure_json")
        segments = segment_config(args.segments, measures, args.seed)
        engine = SegmentEngine(customers, profile, result.attributes, facts, run_end(AS_OF), parsed_rules(segments))
        masks = engine.evaluate_all()
        figures["distinct_conditions"] = engine.conditions_evaluated
        phase("segments")
    membership = membership_table(customers, masks, "bench", "Customer", "Segments")
    figures["membership_rows"] = len(membership)
    phase("segment_membership")
    figures["measures_and_segments_seconds"] = round(time.perf_counter() - start, 2)
    # CPU time shows the work itself when other processes share the cores (wall time includes waiting).
    figures["measures_and_segments_cpu_seconds"] = round(time.process_time() - cpu_start, 2)
    figures["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    print(json.dumps(figures))
    sys.stdout.flush()
    return 0
