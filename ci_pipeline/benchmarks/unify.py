"""`ci-pipeline bench unify --people N`: unification speed and quality against the generator's ground truth.

The data set is generated in a child process (so the peak memory printed is unification's own), the customer
tables are read straight from the generated files, and unification runs exactly as the pipeline runs it. One JSON
line is printed: records, candidate pairs, seconds per phase, records/s, scored pairs/s, peak RSS and pairwise and
B-cubed precision / recall / F1.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from ci_pipeline.config import load_config
from ci_pipeline.config.model import ProjectConfig
from ci_pipeline.errors import UserError
from ci_pipeline.unify import unify


def register(subparsers) -> None:
    parser = subparsers.add_parser("unify", help="unify generated data and score it against the ground truth")
    parser.add_argument("--people", type=int, default=10_000, help="people to generate (default 10000)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--data", help="use (or create) this folder for the generated data instead of a temporary one")
    parser.set_defaults(func=run)


def run(args) -> int:
    with tempfile.TemporaryDirectory(prefix="ci-bench-unify-") as tmp:
        folder = Path(args.data) if args.data else Path(tmp)
        started = time.perf_counter()
        if not (folder / "ground_truth" / "records.parquet").exists():
            _generate(args.people, args.seed, folder)
        generate_s = time.perf_counter() - started
        figures = bench(folder)
        figures = {"generate_s": round(generate_s, 1), **figures}
    print(json.dumps(figures))
    return 0


def _generate(people: int, seed: int, folder: Path) -> None:
    command = [sys.executable, "-m", "ci_pipeline", "generate", "--people", str(people), "--seed", str(seed)]
    done = subprocess.run([*command, "--out", str(folder)], capture_output=True, text=True)
    if done.returncode != 0:
        raise UserError(f"generating {people} people failed: {done.stderr.strip()[-2000:]}")


def bench(folder: Path) -> dict:
    """Unify the generated data set in ``folder`` and score it against ``folder/ground_truth``."""
    config = load_config(folder / "ci_pipeline.yaml")
    if config.unify is None:
        raise UserError(f"{config.path}: no 'unify' section to benchmark")
    t0 = time.perf_counter()
    frames, keys = read_customer_tables(config)
    read_s = time.perf_counter() - t0
    t1 = time.perf_counter()
    result = unify(config.unify, frames, keys, base_dir=config.base_dir)
    unify_s = time.perf_counter() - t1
    truth = pd.read_parquet(folder / "ground_truth" / "records.parquet")
    quality = score_against_truth(result.records[["source", "table", "key", "label"]], truth)
    candidates = sum(r["candidates"] for r in result.stats["rules"])
    compare_s = result.timings.get("dedup", 0) + result.timings.get("match", 0)
    return {
        "people": quality["true_people"],
        "records": int(len(result.records)),
        "customers": int(result.stats["customers"]),
        "candidate_pairs": int(candidates),
        "accepted_pairs": int(sum(r["accepted"] for r in result.stats["rules"])),
        "read_s": round(read_s, 2),
        "unify_s": round(unify_s, 2),
        "phases_s": result.timings,
        "records_per_s": round(len(result.records) / unify_s),
        "pairs_per_s": round(candidates / compare_s) if compare_s else None,
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "largest_cluster": result.stats["largest_cluster"],
        "guard_events": len(result.stats["guard_events"]),
        **quality,
    }


def read_customer_tables(config: ProjectConfig) -> tuple[dict, dict]:
    """The unify tables as string frames, read directly from the generated CSV, Parquet and CDM files."""
    frames, keys = {}, {}
    for t in config.unify.tables:
        spec = config.sources[t.source].tables[t.table]
        path = Path(config.resolve_location(spec.path))
        if spec.format == "csv":
            frame = pd.read_csv(path, dtype="string", keep_default_na=False, na_values=[""])
        elif spec.format == "parquet":
            frame = pd.read_parquet(path).astype("string")
        elif spec.format == "cdm":
            frame = _read_model_json(path, spec.entity or t.table)
        else:
            raise UserError(f"bench unify: format {spec.format!r} of {t.ref} is not supported by the benchmark")
        frames[(t.source, t.table)] = frame
        keys[(t.source, t.table)] = spec.primary_key
    return frames, keys


def _read_model_json(path: Path, entity: str) -> pd.DataFrame:
    model = json.loads(path.read_text(encoding="utf-8"))
    for e in model["entities"]:
        if e["name"].lower() == entity.lower():
            names = [a["name"] for a in e["attributes"]]
            parts = [
                pd.read_csv(
                    path.parent / p["location"].split("/")[-1]
                    if not (path.parent / p["location"]).exists()
                    else path.parent / p["location"],
                    header=None,
                    names=names,
                    dtype="string",
                    keep_default_na=False,
                    na_values=[""],
                )
                for p in e.get("partitions", [])
            ]
            return pd.concat(parts, ignore_index=True)
    raise UserError(f"{path}: no entity {entity!r}")


def score_against_truth(membership: pd.DataFrame, truth: pd.DataFrame) -> dict:
    """Pairwise and B-cubed precision / recall / F1 of predicted clusters (``label``) against ``person_id``."""
    m = membership.astype({"source": "string", "table": "string", "key": "string"}).merge(
        truth.astype({"source": "string", "table": "string", "key": "string"}), on=["source", "table", "key"]
    )
    if len(m) != len(membership):
        raise UserError(f"ground truth covers {len(m)} of {len(membership)} records; regenerate the data set")
    cell = m.groupby(["label", "person_id"]).size()
    cluster = m.groupby("label").size()
    person = m.groupby("person_id").size()

    def pairs(s: pd.Series) -> float:
        v = s.to_numpy(dtype=np.float64)
        return float((v * (v - 1) / 2).sum())

    tp, predicted, actual = pairs(cell), pairs(cluster), pairs(person)
    p = tp / predicted if predicted else 1.0
    r = tp / actual if actual else 1.0
    cells = cell.reset_index(name="n")
    cells["c"] = cells["label"].map(cluster)
    cells["p"] = cells["person_id"].map(person)
    n = len(m)
    bp = float((cells["n"] ** 2 / cells["c"]).sum() / n)
    br = float((cells["n"] ** 2 / cells["p"]).sum() / n)
    return {
        "pairwise_precision": round(p, 4),
        "pairwise_recall": round(r, 4),
        "pairwise_f1": round(2 * p * r / (p + r), 4) if p + r else 0.0,
        "bcubed_precision": round(bp, 4),
        "bcubed_recall": round(br, 4),
        "bcubed_f1": round(2 * bp * br / (bp + br), 4) if bp + br else 0.0,
        "true_people": int(len(person)),
    }
