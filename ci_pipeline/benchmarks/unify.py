"""`ci-pipeline bench unify --people N`: unification speed and quality against the generator's ground truth.

The data set is generated in a child process (so the peak memory printed is unification's own), the customer
tables are read through ingestion (faulty rows are quarantined as in a run), and unification runs exactly as the
pipeline runs it. One JSON line is printed: records, candidate pairs, seconds per phase, records/s, scored
pairs/s, peak RSS and pairwise and B-cubed precision / recall / F1.
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
from ci_pipeline.config.unify import UnifyConfig
from ci_pipeline.errors import UserError
from ci_pipeline.ingest import ingest_table
from ci_pipeline.lake import Lake
from ci_pipeline.outputs import identifiers
from ci_pipeline.side_by_side import each
from ci_pipeline.unify import unify
from ci_pipeline.unify.engine import make_normalizer, rule_matches
from ci_pipeline.unify.explain import pair_sides
from ci_pipeline.unify.incremental import STATE_DIR, read_state, write_state
from ci_pipeline.unify.normalize import default_normalizations
from ci_pipeline.unify.probabilistic_method import (
    ProbabilisticMatches,
    TrainingMatches,
    model_json,
    read_model,
    train_from_tables,
)
from ci_pipeline.unify.records import build_records

#: Fields whose sharing between two split customers is evidence a rule could use (names are not counted).
EVIDENCE = ("email", "phone", "birth_date", "postal_code", "street", "company")


def register(subparsers) -> None:
    parser = subparsers.add_parser("unify", help="unify generated data and score it against the ground truth")
    parser.add_argument("--people", type=int, help=f"people to generate (default {PEOPLE})")
    parser.add_argument("--seed", type=int, help=f"the generator's seed (default {SEED})")
    parser.add_argument("--data", help="use (or create) this folder for the generated data instead of a temporary one")
    parser.add_argument(
        "--misses",
        action="store_true",
        help="also break the missed pairs down by what the two split customers share, and the wrong links by rule",
    )
    parser.add_argument(
        "--method",
        choices=("rules", "probabilistic", "hybrid"),
        default="rules",
        help="rules: the configured match rules; probabilistic: a model trained on the data scores every pair (the "
        "match rules left out; dedup and attach rules kept); hybrid: the model and the match rules together",
    )
    parser.add_argument(
        "--save-model", help="with --method probabilistic or hybrid: store the trained model here (JSON)"
    )
    parser.add_argument(
        "--model", help="with --method probabilistic or hybrid: score with this stored model instead of training one"
    )
    parser.add_argument(
        "--compare-splink",
        action="store_true",
        help="instead, time whole processes side by side on the same data: ours and Splink (DuckDB), each training a "
        "model, then each reusing its saved model; with both sides' precision, recall and F1",
    )
    parser.add_argument(
        "--churn",
        action="store_true",
        help="instead, measure CustomerId churn over two nightly runs: new records arrive, some are deleted, the "
        "rows come in another order, then the second run is repeated; with --method probabilistic or hybrid, both "
        "nights score with the model trained on night 1, and night 2 is also run with a model retrained on it",
    )
    parser.add_argument(
        "--increment",
        type=float,
        metavar="PCT",
        help="instead, time an incremental unify against a full one after an increment: PCT percent of the records "
        "arrive, a tenth of that share changes and as many are deleted; both results are compared, output by output",
    )
    parser.set_defaults(func=run)


def run(args) -> int:
    with tempfile.TemporaryDirectory(prefix="ci-bench-unify-") as tmp:
        folder = Path(args.data) if args.data else Path(tmp)
        started = time.perf_counter()
        if args.people is not None and args.people < 1:
            raise UserError(f"--people {args.people}: give at least 1 person to generate")
        if not (folder / "ground_truth" / "records.parquet").exists():
            _generate(args.people or PEOPLE, SEED if args.seed is None else args.seed, folder)
        else:
            _check_reused(folder, args.people, args.seed)
        generate_s = time.perf_counter() - started
        if args.compare_splink:
            figures = compare_splink(folder)
        elif args.churn:
            figures = churn(folder, args.method)
        elif args.increment is not None:
            figures = increment(folder, args.increment / 100, args.method, args.model)
        else:
            figures = bench(folder, args.misses, args.method, args.model, args.save_model)
        figures = {"generate_s": round(generate_s, 1), **figures}
    print(json.dumps(figures))
    return 0


def _generate(people: int, seed: int, folder: Path) -> None:
    command = [sys.executable, "-m", "ci_pipeline", "generate", "--people", str(people), "--seed", str(seed)]
    done = subprocess.run([*command, "--out", str(folder)], capture_output=True, text=True)
    if done.returncode != 0:
        raise UserError(f"generating {people} people failed: {done.stderr.strip()[-2000:]}")
    (folder / GENERATED).write_text(json.dumps({"people": people, "seed": seed}))


def _check_reused(folder: Path, people: int | None, seed: int | None) -> None:
    """Refuse a ``--people`` or ``--seed`` that the data in ``--data`` were not generated with: they are reused as
    they are, so the figures would be another population's than the one asked for."""
    written = folder / GENERATED
    made = json.loads(written.read_text()) if written.exists() else {}
    if "people" not in made:
        made["people"] = len(pd.read_parquet(folder / "ground_truth" / "people.parquet", columns=[]))
    for name, asked in (("people", people), ("seed", seed)):
        if asked is not None and name in made and made[name] != asked:
            raise UserError(
                f"--data {folder} holds data generated with --{name} {made[name]}, reused as they are, so --{name} "
                f"{asked} would not apply: give another --data folder (or none) to generate them, or drop --{name}"
            )


#: Generated people and seed when not given.
PEOPLE, SEED = 10_000, 7
#: What a folder's data were generated with (written beside them by this benchmark).
GENERATED = "ground_truth/generated.json"


def method_config(config: UnifyConfig, method: str) -> UnifyConfig:
    """The unify section set to a bench ``method`` (``rules``, ``probabilistic`` or ``hybrid``)."""
    if method == "rules":
        return config
    update = {"method": "probabilistic"} | ({"rules": []} if method == "probabilistic" else {})
    return config.model_copy(update={"match": config.match.model_copy(update=update)})


def bench(
    folder: Path,
    misses: bool = False,
    method: str = "rules",
    model_path: str | None = None,
    save_model: str | None = None,
) -> dict:
    """Unify the generated data set in ``folder`` and score it against ``folder/ground_truth``.

    With ``probabilistic`` or ``hybrid``, a model is first trained on the same tables (``train_s``; stored at
    ``save_model`` when given), or read from ``model_path``, then the run scores with it, as a nightly run does
    with the stored model.
    """
    config = load_config(folder / "ci_pipeline.yaml")
    if config.unify is None:
        raise UserError(f"{config.path}: no 'unify' section to benchmark")
    ucfg = method_config(config.unify, method)
    t0 = time.perf_counter()
    frames, keys = read_customer_tables(config)
    read_s = time.perf_counter() - t0
    match_method = rule_matches
    if method != "rules" and model_path:
        model = read_model(Path(model_path).read_bytes(), model_path)
        match_method = ProbabilisticMatches(model)
    elif method != "rules":
        match_method = TrainingMatches(config.base_dir)  # trains within the run, as a run without a stored model
    t1 = time.perf_counter()
    result = unify(ucfg, frames, keys, base_dir=config.base_dir, match_method=match_method)
    extra: dict = {}
    if isinstance(match_method, TrainingMatches):
        extra = {"train_s": round(match_method.train_s, 2), "training_warnings": match_method.said}
        if save_model:
            Path(save_model).write_bytes(model_json(match_method.model))
    # Unification's own seconds: training (within the run when it trains) is reported apart.
    unify_s = time.perf_counter() - t1 - extra.get("train_s", 0.0)
    truth = pd.read_parquet(folder / "ground_truth" / "records.parquet")
    quality = score_against_truth(result.records[["source", "table", "key", "label"]], truth)
    candidates = sum(r["candidates"] for r in result.stats["rules"])
    compare_s = result.timings.get("dedup", 0) + result.timings.get("match", 0)
    return {
        "method": method,
        **extra,
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
        **_scoring(result.stats.get("match_method")),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "peak_rss_mb_after_phase": result.peak_rss_mb,
        "largest_cluster": result.stats["largest_cluster"],
        # customers of three or more records held by chains of single links (density below a half)
        "weakly_held_customers": result.stats["cluster_density"]["weakly_held"],
        "guard_events": len(result.stats["guard_events"]),
        # thin customers per attach rule and what became of them (attached, ambiguous, ...)
        "attach": {a["rule"]: {k: v for k, v in a.items() if k != "rule"} for a in result.stats["attach"]},
        **quality,
        **({"misses": miss_analysis(config, frames, keys, result, truth)} if misses else {}),
    }


def _child(command: list[str]) -> tuple[dict, float]:
    """Run a benchmark process; its JSON line and its wall-clock seconds, process start included."""
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise UserError(f"{' '.join(command[2:5])} failed: {done.stderr.strip()[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1]), round(seconds, 1)


QUALITY = ("pairwise_precision", "pairwise_recall", "pairwise_f1")


def compare_splink(folder: Path) -> dict:
    """Ours and Splink side by side on the generated data in ``folder``, each a whole process timed from its start:
    both training a model (ours saved, Splink's set up from its settings, see ``benchmarks.splink_side``), then
    both reusing their saved model. Ours is the whole ``bench unify --method probabilistic`` (the unification with
    its dedup and attach rules, guard, merge and ids); Splink's is predict and clustering."""
    with tempfile.TemporaryDirectory(prefix="ci-bench-splink-") as tmp:
        ours_model, splink_model = str(Path(tmp) / "ours.json"), str(Path(tmp) / "splink.json")
        ours = [sys.executable, "-m", "ci_pipeline", "bench", "unify", "--data", str(folder), "--method"]
        ours += ["probabilistic"]
        splink = [sys.executable, "-m", "ci_pipeline.benchmarks.splink_side", "--data", str(folder)]
        splink += ["--ours", ours_model, "--model", splink_model]
        # Interleaved, so a change in the machine's load between runs weighs on both sides alike.
        trained, trained_s = _child([*ours, "--save-model", ours_model])
        splink_trained, splink_trained_s = _child(splink)
        stored, stored_s = _child([*ours, "--model", ours_model])
        splink_stored, splink_stored_s = _child([*splink, "--stored"])
    return {
        "records": trained["records"],
        "both_train": {
            "ours_s": trained_s,
            "splink_s": splink_trained_s,
            "ours_share_of_splink": round(trained_s / splink_trained_s, 3),
        },
        "both_reuse_a_saved_model": {
            "ours_s": stored_s,
            "splink_s": splink_stored_s,
            "ours_share_of_splink": round(stored_s / splink_stored_s, 3),
        },
        "ours": {
            **{k: trained[k] for k in QUALITY},
            "train_s": trained["train_s"],
            "unify_s": trained["unify_s"],
            "scoring_pairs_per_s": trained.get("scoring_pairs_per_s"),
        },
        "ours_reusing_the_model": {k: stored[k] for k in QUALITY},
        "splink": {**{k: splink_trained[k] for k in QUALITY}, "seconds": splink_trained["seconds"]},
        "splink_reusing_the_model": {**{k: splink_stored[k] for k in QUALITY}, "seconds": splink_stored["seconds"]},
    }


def _scoring(report: dict | None) -> dict:
    """The model's own throughput: candidate pairs compared and weighed per second (blocking and preparing the
    records apart), from the match method's report."""
    if not report or not report.get("seconds", {}).get("score"):
        return {}
    seconds = report["seconds"]
    return {
        "model_candidate_pairs": report["candidate_pairs"],
        "model_seconds": seconds,
        "scoring_pairs_per_s": round(report["candidate_pairs"] / seconds["score"]),
    }


def churn(folder: Path, method: str = "rules", arriving: float = 0.05, deleted: float = 0.01, seed: int = 1) -> dict:
    """CustomerId churn over two nightly runs of the generated data set in ``folder``, against its ground truth.

    Night 1 unifies the tables without a ``arriving`` share of their rows. Night 2 sees those rows arrive, a
    ``deleted`` share of the others disappear, and every table in a new row order; it carries the ids forward
    from night 1. Night 2 is then repeated on the same rows in yet another order, which must change no id. Which
    rows arrive or go is a hash of each record's identifier, so the figures are reproducible.

    With ``probabilistic`` (or ``hybrid``), night 1 trains a model on its tables and both nights score with it, as
    nightly runs do with the stored model; then night 2 is run once more from night 1's ids with a model retrained
    on night 2's tables (``retrained``: the night the monthly retraining falls on), so the churn retraining adds is
    the difference between the two.

    The figures: how many of the records seen both nights changed CustomerId, the night-2 id changes by reason,
    and ``people_given_new_id``: people (ground truth) with a record seen both nights whose night-2 id none of
    their records had on night 1. That is the churn a downstream system notices: a person it already knew, under an
    id it never saw. (A merge hands a record the id of another of the person's customers, which it has seen.)
    """
    config = load_config(folder / "ci_pipeline.yaml")
    if config.unify is None:
        raise UserError(f"{config.path}: no 'unify' section to benchmark")
    ucfg = method_config(config.unify, method)
    frames, keys = read_customer_tables(config)
    truth = pd.read_parquet(folder / "ground_truth" / "records.parquet")
    night1, night2 = {}, {}
    rng = np.random.default_rng(seed)
    for (source, table), frame in frames.items():
        ident = identifiers(source, table, frame[keys[(source, table)]])
        # A stable fraction in [0, 1) per record: its identifier's hash.
        u = pd.util.hash_array(ident.to_numpy(object)) / 2.0**64
        night1[(source, table)] = frame[u >= arriving]
        kept = frame[(u < arriving) | (u >= arriving + deleted)]
        night2[(source, table)] = kept.iloc[rng.permutation(len(kept))]

    def matcher(tables):
        if method == "rules":
            return rule_matches
        return ProbabilisticMatches(train_from_tables(ucfg, tables, keys, config.base_dir)[0])

    def run(tables, previous=None, matches=rule_matches):
        return unify(
            ucfg,
            tables,
            keys,
            previous.identity.identity_map if previous else None,
            previous.identity.id_change if previous else None,
            base_dir=config.base_dir,
            match_method=matches,
        )

    stored = matcher(night1)
    t0 = time.perf_counter()
    first = run(night1, matches=stored)
    second = run(night2, first, stored)
    again = run({k: f.iloc[rng.permutation(len(f))] for k, f in night2.items()}, second, stored)
    seconds = time.perf_counter() - t0
    figures = {
        "method": method,
        "records_night1": int(len(first.records)),
        "records_night2": int(len(second.records)),
        "unify_s_three_runs": round(seconds, 2),
        **_churn(first, second, truth),
        "rerun_id_changes": int((again.identity.id_change["Run"] == again.identity.run).sum()),
        "rerun_records_changed_id": int((_ids(again).reindex(_ids(second).index) != _ids(second)).sum()),
    }
    if method != "rules":
        figures["retrained"] = _churn(first, run(night2, first, matcher(night2)), truth)
    return figures


def _ids(result) -> pd.Series:
    """Each record's CustomerId, indexed by ``source|table|key``."""
    r = result.records
    return pd.Series(r["CustomerId"].to_numpy(object), index=identifiers(r["source"], r["table"], r["key"]))


def _churn(first, second, truth: pd.DataFrame) -> dict:
    """The ids of the records both runs saw, from ``first`` to ``second`` (see :func:`churn`)."""
    before, after = _ids(first), _ids(second)
    both = before.index.intersection(after.index)
    changed = int((before.reindex(both) != after.reindex(both)).sum())
    log = second.identity.id_change
    reasons = log[log["Run"] == second.identity.run]["Reason"].value_counts()
    person = person_of(truth)
    had = pd.DataFrame({"person": person.reindex(before.index).to_numpy(), "id": before.to_numpy()})
    kept = pd.DataFrame({"person": person.reindex(both).to_numpy(), "id": after.reindex(both).to_numpy()})
    seen = kept.drop_duplicates().merge(had.drop_duplicates(), on=["person", "id"], how="left", indicator=True)
    unseen = seen[seen["_merge"] == "left_only"]
    return {
        "arrived": int(len(after.index.difference(before.index))),
        "deleted": int(len(before.index.difference(after.index))),
        "records_kept": int(len(both)),
        "records_kept_that_changed_id": changed,
        "changed_share": round(changed / len(both), 5) if len(both) else 0.0,
        "night2_id_changes": {k: int(v) for k, v in reasons.sort_index().items()},
        "people_seen_night1": int(had["person"].nunique()),
        "people_given_new_id": int(unseen["person"].nunique()),
    }


def increment(folder: Path, share: float, method: str = "rules", model_path: str | None = None) -> dict:
    """A full and an incremental unify of the same increment of the generated data set in ``folder``, timed.

    The last run unifies the tables without a ``share`` of their rows (chosen by a hash of each record's
    identifier). The increment brings those rows, changes the first mapped column of a tenth as many others and
    deletes as many again. Both runs carry the last run's ids; the incremental one also its state (stored and read
    back through a local lake, timed apart). ``differing_outputs`` names the outputs of the two runs that differ.
    With a model (``method`` probabilistic or hybrid), every run scores with the stored model at ``model_path``,
    else with one trained on the last run's tables (not timed), as nightly runs score with the stored model.
    """
    config = load_config(folder / "ci_pipeline.yaml")
    if config.unify is None:
        raise UserError(f"{config.path}: no 'unify' section to benchmark")
    ucfg = method_config(config.unify, method)
    frames, keys = read_customer_tables(config)
    before, after = {}, {}
    for t in config.unify.tables:
        frame = frames[(t.source, t.table)]
        u = pd.util.hash_array(identifiers(t.source, t.table, frame[keys[(t.source, t.table)]]).to_numpy(object))
        u = u / 2.0**64
        before[(t.source, t.table)] = frame[u >= share]
        changed = frame.copy()
        column = next(iter(t.columns))
        hit = (u >= 0.5) & (u < 0.5 + share / 10)
        changed.loc[hit, column] = changed.loc[hit, column].astype("string") + " x"
        after[(t.source, t.table)] = changed[(u < 0.6) | (u >= 0.6 + share / 10)]
    model = None
    if method != "rules" and model_path:
        model = read_model(Path(model_path).read_bytes(), model_path)
    elif method != "rules":
        model = train_from_tables(ucfg, before, keys, config.base_dir)[0]

    def unify_with(tables, *ids, **kwargs):
        method_of_run = rule_matches if model is None else ProbabilisticMatches(model)
        return unify(ucfg, tables, keys, *ids, base_dir=config.base_dir, match_method=method_of_run, **kwargs)

    last = unify_with(before)
    ids = (last.identity.identity_map, last.identity.id_change)
    with tempfile.TemporaryDirectory(prefix="ci-bench-state-") as scratch:
        lake = Lake.local(scratch)
        t0 = time.perf_counter()
        write_state(lake, last.state)
        t1 = time.perf_counter()
        state, _ = read_state(lake)
        t2 = time.perf_counter()
        state_bytes = sum(lake.info(p)["size"] for p in lake.find(STATE_DIR))
    del last  # its state was read back; a nightly run holds only that of the run before
    c3, t3 = time.process_time(), time.perf_counter()
    full = unify_with(after, *ids)
    c4, t4 = time.process_time(), time.perf_counter()
    inc = unify_with(after, *ids, state=state)
    c5, t5 = time.process_time(), time.perf_counter()
    return {
        "method": method,
        "records": int(len(inc.records)),
        "increment_share": share,
        "incremental": inc.stats["incremental"],
        "full_s": round(t4 - t3, 2),
        "incremental_s": round(t5 - t4, 2),
        "incremental_share_of_full": round((t5 - t4) / (t4 - t3), 3),
        # CPU seconds of the process: less swayed than wall time by other work on a shared machine.
        "full_cpu_s": round(c4 - c3, 2),
        "incremental_cpu_s": round(c5 - c4, 2),
        "phases_full_s": full.timings,
        "phases_incremental_s": inc.timings,
        "state_write_s": round(t1 - t0, 2),
        "state_read_s": round(t2 - t1, 2),
        "state_mb": round(state_bytes / 2**20, 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "differing_outputs": differing_outputs(full, inc),
    }


def differing_outputs(a, b) -> list[str]:
    """The outputs of two unify results that differ (none when the runs agree)."""
    frames = {
        "records": (a.records, b.records),
        "customer_profile": (a.customer_profile, b.customer_profile),
        "alternate_key": (a.alternate_key, b.alternate_key),
        "match_pairs": (a.match_pairs, b.match_pairs),
        "identity_map": (a.identity.identity_map, b.identity.identity_map),
        "id_change": (a.identity.id_change, b.identity.id_change),
        "state_records": (a.state.records, b.state.records),
        "state_pairs": (a.state.pairs, b.state.pairs),
        "state_profiles": (a.state.profiles, b.state.profiles),
        "state_model_pairs": (a.state.model_pairs, b.state.model_pairs),
        **{f"dedup {'.'.join(k)}": (a.dedup[k], b.dedup[k]) for k in a.dedup},
    }
    found = [name for name, (x, y) in frames.items() if not (x is y is None or (x is not None and x.equals(y)))]
    if a.found_stats() != b.found_stats():
        found.append("stats")
    return found + (["state_meta"] if a.state.meta != b.state.meta else [])


def read_customer_tables(config: ProjectConfig) -> tuple[dict, dict]:
    """The unify tables as ingestion accepts them (quarantined rows left out), as the pipeline hands them over: two
    tables at a time, as the pipeline's executor ingests them."""
    names = [(t.source, t.table) for t in config.unify.tables]
    keys = {(s, t): config.sources[s].tables[t].primary_key for s, t in names}
    with tempfile.TemporaryDirectory(prefix="ci-bench-ingest-") as scratch:
        lake = Lake.local(scratch)
        read = each(lambda name: ingest_table(config, lake, *name).data, names, 2, "bench-ingest")
    return dict(zip(names, read, strict=True)), keys


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


def person_of(truth: pd.DataFrame) -> pd.Series:
    """The ground truth's person of each record, indexed by ``source|table|key``."""
    ident = identifiers(truth["source"], truth["table"], truth["key"]).to_numpy(object)
    return pd.Series(truth["person_id"].to_numpy(), index=ident)


def miss_analysis(config: ProjectConfig, frames: dict, keys: dict, result, truth: pd.DataFrame) -> dict:
    """Where the errors are, against the ground truth.

    Missed pairs (two records of one person in two customers) are grouped by the normalized values the two
    customers share anywhere in their records: a split whose customers share nothing but a name can only be
    joined by a rule on names alone. ``recall_ceiling`` is the pairwise recall if every other split were joined,
    and ``f1_ceiling`` the F1 at that recall with no false links. Wrong links (linked pairs of two people) are
    counted per stage and rule.
    """
    records = build_records(config.unify, frames, keys)
    normalizer = make_normalizer(config.unify, config.base_dir)
    ident = identifiers(records["source"], records["table"], records["key"]).to_numpy(object)
    person = person_of(truth)
    m = pd.DataFrame({"person": person.reindex(ident).to_numpy(), "label": result.records["label"].to_numpy()})
    sizes = m.groupby(["person", "label"]).size().rename("n").reset_index()
    split = sizes[sizes.groupby("person")["label"].transform("size") > 1]
    pairs = split.merge(split, on="person", suffixes=("_a", "_b"))
    pairs = pairs[pairs["label_a"] < pairs["label_b"]].reset_index(drop=True)
    weight = pairs["n_a"].to_numpy(np.float64) * pairs["n_b"].to_numpy(np.float64)
    shared = pd.Series("", index=pairs.index, dtype=object)
    wanted = set(split["label"])
    for f in EVIDENCE:
        if f not in records.columns:
            continue
        values = normalizer.apply(records[f], default_normalizations(f))
        held = pd.DataFrame({"label": m["label"], "v": values.to_numpy()}).dropna()
        held = held[held["label"].isin(wanted)].drop_duplicates()
        hit = (
            pairs.reset_index()
            .merge(held, left_on="label_a", right_on="label")
            .merge(held, left_on=["label_b", "v"], right_on=["label", "v"])["index"]
            .unique()
        )
        shared.iloc[hit] = shared.iloc[hit] + "+" + f
    shared = shared.str.lstrip("+").replace("", "nothing but a name")
    by_shared = pd.Series(weight).groupby(shared.to_numpy()).sum().sort_values(ascending=False)
    missed = float(weight.sum())
    per_person = truth.groupby("person_id").size().to_numpy(np.float64)
    actual = float((per_person * (per_person - 1) / 2).sum())
    name_only = float(by_shared.get("nothing but a name", 0.0))
    ceiling = 1 - name_only / actual if actual else 1.0
    mp = result.match_pairs[result.match_pairs["Linked"]]
    left, right = (person.reindex(side.to_numpy(object)).to_numpy() for side in pair_sides(mp))
    wrong = mp[left != right]
    return {
        "missed_pairs": int(missed),
        "missed_by_shared_values": {k: int(v) for k, v in by_shared.head(12).items()},
        "recall_ceiling": round(ceiling, 4),
        "f1_ceiling": round(2 * ceiling / (1 + ceiling), 4),
        "wrong_links_by_rule": {
            f"{stage} {rule}": int(n) for (stage, rule), n in wrong.groupby(["Stage", "Rule"]).size().items()
        },
    }
