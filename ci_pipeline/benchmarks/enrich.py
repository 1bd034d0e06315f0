"""`ci-pipeline bench enrich --people N`: brand and interest affinity on generated data, and the first-party
enrichments' speed and memory.

The web shop's order lines of a generated data set (``ci-pipeline generate``, kept in the benchmark cache that
``bench pipeline`` uses, or in ``--data``) are read through ingestion and the activities stage's timeline, each
web-shop account taken as its own customer (as ``bench predictions`` does). Quality: the affinities are fitted on
the purchases before a cutoff and rank, for each brand (interest), which customers buy it in the holdout period
after the cutoff; the figure is the AUC, averaged over brands, over the customers who exist at the cutoff (a
ranking made then cannot know later accounts), and among them over those with and without purchases before it,
against two baselines: the prior of customers like them alone (the reference product's approach: affinity by
demographic segment) and "repeat the last brand". Every account, those opened after the cutoff included (cold
starts, ranked by their segment prior), is evaluated apart (``every_account``). Speed: every first-party
enrichment (brand and interest affinity, standardized addresses, e-mail classes) run as the stage runs it, on the
timeline stored as Parquet and read as a dataset, in a fresh child process so that its peak memory (RSS) is the
enrichments' own. ``--synthetic-lines N`` times the same on N random order lines of ``--people`` customers
instead (no quality figures). One JSON line.
"""

from __future__ import annotations

import json
import multiprocessing
import resource
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import rankdata

from ci_pipeline.benchmarks.pipeline import cached_data
from ci_pipeline.benchmarks.predictions import load_activities
from ci_pipeline.config import load_config
from ci_pipeline.config.enrich import EnrichmentSpec
from ci_pipeline.enrich import (
    EnrichmentInputs,
    ProviderContext,
    build_provider,
    enrichment_rows,
    flat_fields,
    shared_memo,
)
from ci_pipeline.enrich.affinity import (
    AffinityModel,
    fit_affinity,
    name_sql,
    profile_customers,
    purchase_pairs,
    settings_from,
)
from ci_pipeline.ingest import ingest_table
from ci_pipeline.lake import Lake

#: Web-shop customer columns -> the unified profile attributes the enrichments read.
PROFILE = {
    "address_line1": "Address1",
    "city": "City",
    "state": "State",
    "zip": "PostalCode",
    "country": "Country",
    "email": "Email",
    # Not read by any enrichment: the benchmark tells the customers who exist at the cutoff by it.
    "signup_date": "SignupDate",
}
#: Enrichments timed, as a configuration would list them.
TIMED = {
    "brand_affinity": EnrichmentSpec(provider="brand_affinity"),
    "interest_affinity": EnrichmentSpec(provider="interest_affinity"),
    "address": EnrichmentSpec(provider="address"),
    "email": EnrichmentSpec(provider="email"),
}


def register(subparsers) -> None:
    parser = subparsers.add_parser("enrich", help="brand and interest affinity quality and enrichment speed")
    parser.add_argument("--people", type=int, default=20_000, help="people to generate (default 20000)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--data",
        help="generated data set to use (or create) instead of the cache folder ($XDG_CACHE_HOME/ci-pipeline/bench)",
    )
    parser.add_argument(
        "--holdout-days", type=int, default=180, help="days after the cutoff whose purchases are predicted"
    )
    parser.add_argument(
        "--synthetic-lines",
        type=int,
        default=0,
        help="time the enrichments on this many random order lines of --people customers instead",
    )
    parser.set_defaults(func=run)


def run(args) -> int:
    figures: dict = {"benchmark": "enrich", "people": args.people}
    with tempfile.TemporaryDirectory(prefix="ci-bench-enrich-") as tmp:
        facts_path, profile_path = Path(tmp) / "activity_facts.parquet", Path(tmp) / "profile.parquet"
        started = time.perf_counter()
        if args.synthetic_lines:
            latest = synthetic(args.people, args.synthetic_lines, args.seed, facts_path, profile_path)
            figures |= {"synthetic_lines": args.synthetic_lines, "make_s": round(time.perf_counter() - started, 1)}
        else:
            folder, generate_s = cached_data(args.people, args.seed, args.data)
            figures["generate_s"] = round(generate_s, 1)
            started = time.perf_counter()
            facts, customers, latest = load_activities(folder)
            profile = _profile(folder, customers)
            figures |= {"customers": len(customers), "load_s": round(time.perf_counter() - started, 1)}
            figures["order_lines"] = int((facts["Activity"] == "order_lines").sum())
            cutoff = latest - pd.Timedelta(days=args.holdout_days)
            # A ranking made at the cutoff can only rank the customers who exist then: they are the evaluated
            # population. Accounts opened later are cold starts, reported apart (scored by their segment prior).
            known = known_at(profile, cutoff)
            figures["customers_at_cutoff"] = len(known)
            for provider in ("brand_affinity", "interest_affinity"):
                figures[provider] = evaluate(facts, known, provider, cutoff, latest)
                figures[provider]["every_account"] = _every_account(evaluate(facts, profile, provider, cutoff, latest))
            facts.to_parquet(facts_path)
            profile.to_parquet(profile_path)
            del facts, profile
        # A fresh interpreter, not a fork: its peak memory counts the enrichments only.
        with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as child:
            figures["timing"] = child.submit(timing, str(facts_path), str(profile_path), latest).result()
        figures["bench_peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
        print(json.dumps(figures, default=str))
        sys.stdout.flush()
    return 0


def synthetic(people: int, lines: int, seed: int, facts_path: Path, profile_path: Path) -> pd.Timestamp:
    """Random order lines (50 brands, 10 categories, three years) of ``people`` customers with US addresses."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)
    ids = np.char.add("C", np.char.zfill(np.arange(people).astype("U8"), 8))
    latest = pd.Timestamp("2026-06-30", tz="UTC")
    brand = rng.integers(0, 50, lines)
    seconds = rng.integers(0, 3 * 365 * 86_400, lines)
    # Built as Arrow columns: 20M lines as Python strings would take gigabytes before the enrichments start.
    facts = pa.table(
        {
            "CustomerId": pa.array(ids).take(pa.array(rng.integers(0, people, lines))),
            "Activity": pa.array(["order_lines"]).take(pa.array(np.zeros(lines, dtype=np.int64))),
            "ActivityTimeStamp": pa.array(latest.value - seconds * 10**9, pa.timestamp("ns", tz="UTC")),
            "brand": pa.DictionaryArray.from_arrays(brand, [f"Brand {i:02d}" for i in range(50)]),
            "category": pa.DictionaryArray.from_arrays(brand % 10, [f"Category {i}" for i in range(10)]),
            "amount": np.round(rng.lognormal(3, 1, lines), 2),
            "quantity": rng.integers(1, 4, lines),
        }
    )
    pq.write_table(facts, facts_path)
    del facts
    street = pd.Series(rng.integers(1, 9999, people)).astype(str) + " " + np.array(["Main", "Oak", "Elm"])[
        rng.integers(0, 3, people)
    ] + " St"  # fmt: skip
    zips = pd.Series(rng.integers(1000, 99999, people)).astype(str).str.zfill(5)
    profile = pd.DataFrame(
        {
            "CustomerId": ids,
            "Address1": street,
            "City": "Springfield",
            "State": "IL",
            "PostalCode": zips,
            "Country": "US",
            "Email": pd.Series(ids).str.lower()
            + np.array(["@gmail.com", "@acme.com", "@mailinator.com"])[rng.integers(0, 3, people)],  # fmt: skip
        }
    ).astype("string")
    profile.to_parquet(profile_path)
    return latest


def _profile(folder: Path, customers: pd.Series) -> pd.DataFrame:
    """The web-shop accounts as profiles: CustomerId plus the attributes the shop holds (no gender or birth date)."""
    config = load_config(folder / "ci_pipeline.yaml")
    with tempfile.TemporaryDirectory(prefix="ci-bench-ingest-") as scratch:
        frame = ingest_table(config, Lake.local(scratch), "ecommerce", "customers").data
    key = config.sources["ecommerce"].tables["customers"].primary_key
    renamed = frame.rename(columns=PROFILE)
    profile = renamed[[c for c in PROFILE.values() if c in renamed.columns]].astype("string")
    profile.insert(0, "CustomerId", frame[key].astype("string"))
    return profile[profile["CustomerId"].isin(customers)].drop_duplicates("CustomerId").reset_index(drop=True)


def evaluate(facts: pd.DataFrame, profile: pd.DataFrame, provider: str, cutoff, latest) -> dict:
    """AUC of the affinity, the prior alone and "repeat the last name" for next-period purchases of each name:
    over all customers, over those with purchases before the cutoff and over those without."""
    settings = settings_from({}, provider, provider)
    customers = profile_customers(profile)
    started = time.perf_counter()
    pairs = purchase_pairs(facts, customers, settings, cutoff, {}, {})
    model = fit_affinity(pairs, customers, profile, settings, cutoff)
    fit_s = round(time.perf_counter() - started, 1)
    bought, last = _holdout_and_last(facts, settings, model, cutoff, latest)
    columns = np.arange(len(model.names))
    scores = {
        "affinity": model.affinity(columns),
        "segment_prior": model.prior[model.group][:, columns],
        "last_name": last,
    }
    with_history = model.lines > 0
    # Among customers who buy anything in the holdout, the AUC asks only "which brand", not "will they buy at all".
    buyers = bought.any(axis=1)
    report: dict = {
        "names": len(model.names),
        "fit_s": fit_s,
        "positives": int(bought.sum()),
        "customers_with_history": int(with_history.sum()),
        "buyers_with_history": int(bought[with_history].any(axis=1).sum()),
        "buyers_without_history": int(bought[~with_history].any(axis=1).sum()),
    }
    groups = {"all": slice(None), "customers_with_history": with_history, "customers_without_history": ~with_history}
    if "SignupDate" in profile.columns:
        signed = profile.set_index(profile["CustomerId"].astype("string"))["SignupDate"]
        signed = pd.to_datetime(signed[~signed.index.duplicated()], errors="coerce", utc=True).reindex(model.customers)
        later = (signed >= pd.Timestamp(cutoff)).to_numpy()
        if later.any():
            report |= {
                "accounts_opened_after_cutoff": int(later.sum()),
                "their_buyers": int(bought[later].any(1).sum()),
            }
            groups["accounts_opened_after_cutoff"] = later
    for name, score in scores.items():
        report[name] = {
            ("auc" if group == "all" else f"auc_{group}"): _mean_auc(score[rows], bought[rows])
            for group, rows in groups.items()
        }
        report[name]["auc_among_holdout_buyers"] = _mean_auc(score[buyers], bought[buyers])
        report[name]["pooled_auc"] = _auc(score.ravel(), bought.ravel())
    best = max(report["segment_prior"]["auc"], report["last_name"]["auc"])
    report["auc_over_best_baseline"] = round(report["affinity"]["auc"] - best, 4)
    return report


def known_at(profile: pd.DataFrame, cutoff) -> pd.DataFrame:
    """The profiles that exist at ``cutoff``: opened before it, or of unknown opening date (kept)."""
    if "SignupDate" not in profile.columns:
        return profile
    signed = pd.to_datetime(profile["SignupDate"], errors="coerce", utc=True)
    return profile[~(signed >= pd.Timestamp(cutoff))].reset_index(drop=True)


def _every_account(report: dict) -> dict:
    """The AUCs of an evaluation over every account, those opened after the cutoff included."""
    keep = ("auc", "auc_customers_without_history", "auc_accounts_opened_after_cutoff")
    methods = ("affinity", "segment_prior", "last_name")
    counts = {k: report[k] for k in ("accounts_opened_after_cutoff", "their_buyers") if k in report}
    return counts | {m: {k: v for k, v in report[m].items() if k in keep} for m in methods}


def _holdout_and_last(facts: pd.DataFrame, settings, model: AffinityModel, cutoff, latest):
    """customers x names: whether the customer bought the name in [cutoff, latest]; and 1 for the name of the
    customer's last purchase before the cutoff (ties in time: the last name in sort order)."""
    import duckdb

    weight = settings.amount if settings.weight == "spend" else settings.quantity
    lines = f"""SELECT CAST("CustomerId" AS VARCHAR) AS cid, {name_sql(settings.field)} AS name,
        epoch_ns("ActivityTimeStamp") AS t FROM facts
        WHERE "Activity" = '{settings.activity}' AND TRY_CAST("{weight}" AS DOUBLE) > 0"""
    start, end = (pd.Timestamp(x).tz_convert("UTC").as_unit("ns").value for x in (cutoff, latest))
    with duckdb.connect() as con:
        con.register("facts", facts)
        later = con.execute(
            f"SELECT DISTINCT cid, name FROM ({lines}) WHERE name IS NOT NULL AND t >= {start} AND t <= {end}"
        ).df()
        last = con.execute(
            f"""SELECT cid, name FROM ({lines}) WHERE name IS NOT NULL AND t < {start}
            QUALIFY row_number() OVER (PARTITION BY cid ORDER BY t DESC, name DESC) = 1"""
        ).df()
    out = []
    for found, dtype in ((later, bool), (last, float)):
        customer = model.customers.get_indexer(found["cid"].astype("string"))
        name = pd.Index(model.names).get_indexer(found["name"])
        keep = (customer >= 0) & (name >= 0)
        grid = np.zeros((len(model.customers), len(model.names)), dtype=dtype)
        grid[customer[keep], name[keep]] = 1
        out.append(grid)
    return out[0], out[1]


def _mean_auc(score: np.ndarray, label: np.ndarray) -> float:
    """The AUC of each column (customers ranked for one name), averaged over names with buyers and non-buyers."""
    positives = label.sum(axis=0)
    negatives = len(label) - positives
    usable = (positives > 0) & (negatives > 0)
    if not usable.any():
        return float("nan")
    ranks = rankdata(score[:, usable], method="average", axis=0)
    rank_sum = (ranks * label[:, usable]).sum(axis=0)
    pos, neg = positives[usable], negatives[usable]
    return round(float(np.mean((rank_sum - pos * (pos + 1) / 2) / (pos * neg))), 4)


def _auc(score: np.ndarray, label: np.ndarray) -> float:
    return _mean_auc(score[:, None], label[:, None])


def timing(facts_path: str, profile_path: str, latest) -> dict:
    """Seconds of each first-party enrichment run as the stage runs it (the provider, its rows with the Values as
    JSON text and its segment fields), the timeline read as a dataset, and the peak memory of this process."""
    import pyarrow.dataset as ds

    started = time.perf_counter()
    profile = pd.read_parquet(profile_path).astype("string")
    dataset = ds.dataset(facts_path, format="parquet")
    out: dict = {"profiles": len(profile), "activity_rows": dataset.count_rows()}
    out["read_profile_s"] = round(time.perf_counter() - started, 1)
    as_of = latest + pd.Timedelta(seconds=1)
    shared = shared_memo(TIMED)
    total = 0.0
    for name, spec in TIMED.items():
        built = build_provider(spec.provider, spec.params, ProviderContext(enrichment=name))
        needs = getattr(built, "needs", frozenset())
        inputs = EnrichmentInputs(
            profile, activity_dataset=dataset if "activity_dataset" in needs else None, as_of=as_of, shared=shared
        )
        started, cpu = time.perf_counter(), time.process_time()
        result = built.enrich(inputs)
        # What the stage does with each result: the rows with Values as JSON text, and the segment fields.
        rows, _ = enrichment_rows(result, built.name, profile["CustomerId"], name)
        if result.fields is None:
            flat_fields(rows)
        seconds = time.perf_counter() - started
        total += seconds
        out[name] = {"seconds": round(seconds, 1), "cpu_s": round(time.process_time() - cpu, 1)}
        out[name]["rows"] = len(result.values)
    out["total_s"] = round(total, 1)
    out["peak_rss_mb"] = _own_peak_mb()
    return out


def _own_peak_mb() -> int:
    """This process's peak RSS since it started its program. ``ru_maxrss`` survives fork and exec (a spawned child
    starts with its parent's peak); the kernel's high-water mark (VmHWM) belongs to the program's own memory."""
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024)
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
