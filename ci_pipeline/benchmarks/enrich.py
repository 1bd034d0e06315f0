"""`ci-pipeline bench enrich --people N`: brand and interest affinity on generated data, and the first-party
enrichments' speed.

The web shop's order lines of a generated data set (``ci-pipeline generate``, cached with ``--data``) are read
through ingestion and the activities stage's timeline, each web-shop account taken as its own customer (as
``bench predictions`` does). Quality: the affinities are fitted on the purchases before a cutoff and rank, for
each brand (interest), which customers buy it in the holdout period after the cutoff; the figure is the AUC,
averaged over brands, against two baselines: the prior of customers like them alone (the reference product's
approach: affinity by demographic segment) and "repeat the last brand". Speed: every first-party enrichment
(brand and interest affinity, standardized addresses, e-mail classes) run as the stage runs it, with seconds and
peak memory (RSS of this process, cumulative). One JSON line.
"""

from __future__ import annotations

import json
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import rankdata

from ci_pipeline.benchmarks.predictions import _generate, load_activities
from ci_pipeline.config import load_config
from ci_pipeline.enrich import EnrichmentInputs, ProviderContext, build_provider
from ci_pipeline.enrich.affinity import AffinityModel, fit_affinity, purchase_lines, settings_from
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
}
#: Enrichments timed: name -> (provider, params).
TIMED = {
    "brand_affinity": ("brand_affinity", {}),
    "interest_affinity": ("interest_affinity", {}),
    "address": ("address", {}),
    "email": ("email", {}),
}


def register(subparsers) -> None:
    parser = subparsers.add_parser("enrich", help="brand and interest affinity quality and enrichment speed")
    parser.add_argument("--people", type=int, default=20_000, help="people to generate (default 20000)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--data", help="use (or create) this folder for the generated data instead of a temporary one")
    parser.add_argument(
        "--holdout-days", type=int, default=180, help="days after the cutoff whose purchases are predicted"
    )
    parser.set_defaults(func=run)


def run(args) -> int:
    with tempfile.TemporaryDirectory(prefix="ci-bench-enrich-") as tmp:
        folder = Path(args.data) if args.data else Path(tmp)
        started = time.perf_counter()
        if not (folder / "ci_pipeline.yaml").exists():
            _generate(args.people, args.seed, folder)
        figures: dict = {
            "benchmark": "enrich",
            "people": args.people,
            "generate_s": round(time.perf_counter() - started, 1),
        }
        started = time.perf_counter()
        facts, customers, latest = load_activities(folder)
        profile = _profile(folder, customers)
        figures |= {"customers": len(customers), "load_s": round(time.perf_counter() - started, 1)}
        figures["order_lines"] = int((facts["Activity"] == "order_lines").sum())
        cutoff = latest - pd.Timedelta(days=args.holdout_days)
        for provider in ("brand_affinity", "interest_affinity"):
            figures[provider] = evaluate(facts, profile, provider, cutoff, latest)
        figures["timing"] = timing(facts, profile, latest)
        figures["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
        print(json.dumps(figures, default=str))
        sys.stdout.flush()
    return 0


def _profile(folder: Path, customers: pd.Series) -> pd.DataFrame:
    """The web-shop accounts as profiles: CustomerId plus the attributes the shop holds (no gender or birth date)."""
    config = load_config(folder / "ci_pipeline.yaml")
    with tempfile.TemporaryDirectory(prefix="ci-bench-ingest-") as scratch:
        frame = ingest_table(config, Lake.local(scratch), "ecommerce", "customers").data
    key = config.sources["ecommerce"].tables["customers"].primary_key
    profile = frame.rename(columns=PROFILE)[[*PROFILE.values()]].astype("string")
    profile.insert(0, "CustomerId", frame[key].astype("string"))
    return profile[profile["CustomerId"].isin(customers)].drop_duplicates("CustomerId").reset_index(drop=True)


def evaluate(facts: pd.DataFrame, profile: pd.DataFrame, provider: str, cutoff, latest) -> dict:
    """AUC of the affinity, the prior alone and "repeat the last name" for next-period purchases of each name."""
    settings = settings_from({}, provider, provider)
    lines = purchase_lines(facts, settings, provider)
    started = time.perf_counter()
    model, _ = fit_affinity(lines, profile, settings, cutoff)
    fit_s = round(time.perf_counter() - started, 1)
    bought = _holdout(lines, model, cutoff, latest)
    columns = np.arange(len(model.names))
    scores = {
        "affinity": model.affinity(columns),
        "segment_prior": model.prior[model.group][:, columns],
        "last_name": _last(lines, model, cutoff),
    }
    with_history = model.lines > 0
    report: dict = {"names": len(model.names), "fit_s": fit_s, "positives": int(bought.sum())}
    for name, score in scores.items():
        report[name] = {
            "auc": _mean_auc(score, bought),
            "auc_customers_with_history": _mean_auc(score[with_history], bought[with_history]),
            "pooled_auc": _auc(score.ravel(), bought.ravel()),
        }
    best = max(report["segment_prior"]["auc"], report["last_name"]["auc"])
    report["auc_over_best_baseline"] = round(report["affinity"]["auc"] - best, 4)
    return report


def _holdout(lines: pd.DataFrame, model: AffinityModel, cutoff, latest) -> np.ndarray:
    """customers x names: whether the customer bought the name in [cutoff, latest]."""
    time_ = pd.to_datetime(lines["Time"], utc=True)
    later = lines[(time_ >= cutoff) & (time_ <= latest) & (lines["Value"] > 0)]
    customer = model.customers.get_indexer(later["CustomerId"])
    name = pd.Index(model.names).get_indexer(later["Name"])
    keep = (customer >= 0) & (name >= 0)
    out = np.zeros((len(model.customers), len(model.names)), dtype=bool)
    out[customer[keep], name[keep]] = True
    return out


def _last(lines: pd.DataFrame, model: AffinityModel, cutoff) -> np.ndarray:
    """customers x names: 1 for the name of the customer's last purchase before the cutoff."""
    before = lines[(pd.to_datetime(lines["Time"], utc=True) < cutoff) & (lines["Value"] > 0)].dropna(subset=["Name"])
    last = before.sort_values("Time", kind="stable").drop_duplicates("CustomerId", keep="last")
    customer = model.customers.get_indexer(last["CustomerId"])
    name = pd.Index(model.names).get_indexer(last["Name"])
    keep = (customer >= 0) & (name >= 0)
    out = np.zeros((len(model.customers), len(model.names)))
    out[customer[keep], name[keep]] = 1.0
    return out


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


def timing(facts: pd.DataFrame, profile: pd.DataFrame, latest) -> dict:
    """Seconds of each first-party enrichment run as the stage runs it (values JSON included)."""
    out = {}
    as_of = latest + pd.Timedelta(seconds=1)
    for name, (provider, params) in TIMED.items():
        built = build_provider(provider, params, ProviderContext(enrichment=name))
        needs = getattr(built, "needs", frozenset())
        inputs = EnrichmentInputs(profile, facts if "activities" in needs else None, None, as_of)
        started = time.perf_counter()
        result = built.enrich(inputs)
        out[name] = {"seconds": round(time.perf_counter() - started, 1), "rows": len(result.values)}
    out["total_s"] = round(sum(v["seconds"] for v in out.values()), 1)
    return out
