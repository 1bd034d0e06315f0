"""Splink on the same generated records, for `ci-pipeline bench unify --compare-splink` (run in a child process).

The setup is the one Splink's documentation shows for an unsupervised model, with the DuckDB backend: the
comparisons and blocking rules of our model translated to Splink's comparison library and ``block_on`` (one
Splink comparison per comparison of ours), the probability that two random records match estimated from
deterministic rules, u by random sampling, m by expectation maximisation with one session per training blocking
rule of ours, then ``predict`` and connected-components clustering at the same threshold. The records are the ones
our model reads (ingested, mapped and normalized by the same code), so only the matching differs. Splink is a dev
dependency and is imported only here.

One JSON line is printed: seconds per step, the candidate pairs Splink scored, and pairwise precision / recall / F1
of its clusters against the ground truth.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import pandas as pd

from ci_pipeline.benchmarks.unify import method_config, read_customer_tables, score_against_truth
from ci_pipeline.config import load_config
from ci_pipeline.errors import UserError
from ci_pipeline.unify.engine import prepare
from ci_pipeline.unify.probabilistic import Key, Settings
from ci_pipeline.unify.probabilistic.comparisons import date_parts
from ci_pipeline.unify.probabilistic_method import model_records, read_model

#: Splink's recall estimate for the deterministic rules, as in its documentation's examples.
DETERMINISTIC_RECALL = 0.7


def _place(ours):
    """A place and the general places it implies (kind ``place``, or ``postal_code`` with ``then``) as a Splink
    custom comparison with the same levels: null when no place is known on both sides, exact, Jaro-Winkler
    thresholds (a postal code: one typing error), then each general place."""
    import splink.comparison_level_library as cll
    import splink.comparison_library as cl

    column = ours.column
    if ours.kind == "place":
        own = [cll.JaroWinklerLevel(column, t) for t in ours.thresholds]
    else:
        own = [cll.DamerauLevenshteinLevel(column, 1)]
    levels = [
        cll.And(*[cll.NullLevel(c) for c in ours.columns]),
        cll.ExactMatchLevel(column, term_frequency_adjustments=ours.term_frequency),
        *own,
        *[cll.ExactMatchLevel(c) for c in ours.then],
        cll.ElseLevel(),
    ]
    return cl.CustomComparison(levels, output_column_name=column)


def comparison(ours):
    """Splink's library comparison for one comparison of ours (same column and thresholds where it has them)."""
    import splink.comparison_library as cl

    column = ours.column
    if getattr(ours, "then", ()):
        return _place(ours)
    made = {
        "exact": lambda: cl.ExactMatch(column),
        "jaro_winkler": lambda: cl.JaroWinklerAtThresholds(column, list(ours.thresholds)),
        "levenshtein": lambda: cl.LevenshteinAtThresholds(column, list(ours.thresholds)),
        "damerau_levenshtein": lambda: cl.DamerauLevenshteinAtThresholds(column, list(ours.thresholds)),
        "name": lambda: cl.NameComparison(column, jaro_winkler_thresholds=list(ours.thresholds)),
        "date": lambda: cl.DateOfBirthComparison(column, input_is_string=True),
        "identifier": lambda: cl.DamerauLevenshteinAtThresholds(column, [1]),
        "email": lambda: cl.EmailComparison(column),
        "postal_code": lambda: cl.DamerauLevenshteinAtThresholds(column, [1]),
    }[ours.kind]()
    return made.configure(term_frequency_adjustments=True) if ours.term_frequency else made


def _key_sql(key: Key) -> list[str]:
    """SQL expressions (DuckDB) of one blocking key of ours."""
    if key.function is None:
        return [key.column]
    if key.function == "prefix":
        return [f"substr({key.column}, 1, {key.length})"]
    if key.function == "year":
        return [f"substr({key.column}, 1, 4)"]
    if key.function == "birthday":
        return [f"substr({key.column}, 6, 5)"]
    if key.function == "unordered":
        return [f"least({key.column}, {key.other})", f"greatest({key.column}, {key.other})"]
    # Soundex: DuckDB has no phonetic function; the first three letters stand in for it.
    return [f"substr({key.column}, 1, 3)"]


def blocking(rules) -> list:
    """Splink ``block_on`` rules for blocking rules of ours."""
    from splink import block_on

    return [block_on(*[sql for key in rule.keys for sql in _key_sql(key)]) for rule in rules]


def splink_settings(settings: Settings):
    """Splink settings translated from our model's settings (comparisons, blocking rules); the generated data
    are deduplicated, within and across tables alike."""
    from splink import SettingsCreator

    return SettingsCreator(
        link_type="dedupe_only",
        comparisons=[comparison(c) for c in settings.comparisons],
        blocking_rules_to_generate_predictions=blocking(settings.blocking),
        retain_intermediate_calculation_columns=False,
        retain_matching_columns=False,
    )


def em_sessions(settings: Settings) -> list:
    """Our training rules that Splink's EM runs on, as its documentation advises: as few sessions as leave no
    comparison untrained (a session cannot train the comparisons on its own blocking columns); greedily, the rule
    that trains the most comparisons not yet trained first."""
    untrained = {c.column: set(c.columns) for c in settings.comparisons}
    chosen = []
    while untrained:
        trains = [(_trained(rule, untrained), rule) for rule in settings.training_rules]
        names, best = max(trains, key=lambda found: len(found[0]))
        if not names:
            break
        chosen.append(best)
        untrained = {k: v for k, v in untrained.items() if k not in names}
    return chosen


def _trained(rule, untrained: dict[str, set[str]]) -> set[str]:
    """The comparisons (of ``untrained``: name -> columns read) an EM session blocked on ``rule`` trains."""
    used = set(rule.columns)
    return {name for name, columns in untrained.items() if not columns & used}


def deterministic_rules(settings: Settings) -> list:
    """Rules that admit almost no false links, for the prior: each EM session's rule with the first compared
    column it does not use added."""
    from splink import block_on

    compared = [c.column for c in settings.comparisons]
    rules = []
    for rule in em_sessions(settings):
        used = set(rule.columns)
        extra = [c for c in compared if c not in used][:1]
        rules.append(block_on(*[sql for key in rule.keys for sql in _key_sql(key)], *extra))
    return rules


def iso_dates(records: pd.DataFrame, settings: Settings) -> pd.DataFrame:
    """The date columns of ``records`` written ``YYYY-MM-DD`` (null when no date), as a Splink user would
    parse them before matching: its date comparison reads one format."""
    out = records.copy()
    for c in settings.comparisons:
        if c.kind == "date":
            parts = date_parts(out[c.column].to_numpy(object))
            text = pd.Series([f"{y:04d}-{m:02d}-{d:02d}" for y, m, d in parts], index=out.index, dtype="string")
            out[c.column] = text.where(parts[:, 0] >= 0)
    return out


def run_splink(folder: Path, ours_path: Path, model_path: Path, stored: bool) -> dict:
    """Match the generated data in ``folder`` with Splink, set up from our model stored at ``ours_path``: train
    (and save Splink's model to ``model_path``) or, with ``stored``, read the model saved there; cluster and score
    against the ground truth."""
    from splink import DuckDBAPI, Linker

    logging.getLogger("splink").setLevel(logging.WARNING)
    config = load_config(folder / "ci_pipeline.yaml")
    if config.unify is None:
        raise UserError(f"{config.path}: no 'unify' section to benchmark")
    ucfg = method_config(config.unify, "probabilistic")
    started = time.perf_counter()
    frames, keys = read_customer_tables(config)
    prepared = prepare(ucfg, frames, keys, config.base_dir)
    ours = read_model(ours_path.read_bytes(), str(ours_path)).settings
    records = iso_dates(model_records(ucfg, prepared.records, prepared.prep.normalizer), ours)
    records.insert(0, "unique_id", range(len(records)))
    seconds = {"read_and_normalize": round(time.perf_counter() - started, 2)}
    db = DuckDBAPI()
    frame = db.register(records.astype({c: "string" for c in records.columns if c != "unique_id"}))
    step = time.perf_counter()
    if stored:
        linker = Linker(frame, str(model_path), log_level=None)
    else:
        linker = Linker(frame, splink_settings(ours), log_level=None)
        linker.training.estimate_probability_two_random_records_match(
            deterministic_rules(ours), recall=DETERMINISTIC_RECALL
        )
        linker.training.estimate_u_using_random_sampling(max_pairs=ours.u_sample_pairs, seed=ours.seed)
        for rule in blocking(em_sessions(ours)):
            linker.training.estimate_parameters_using_expectation_maximisation(rule)
        linker.misc.save_model_to_json(str(model_path), overwrite=True)
        seconds["train"] = round(time.perf_counter() - step, 2)
        step = time.perf_counter()
    predictions = linker.inference.predict(threshold_match_probability=ours.threshold)
    pairs = len(predictions.as_pandas_dataframe())
    seconds["predict"] = round(time.perf_counter() - step, 2)
    step = time.perf_counter()
    clusters = linker.clustering.cluster_pairwise_predictions_at_threshold(predictions, ours.threshold)
    labels = clusters.as_pandas_dataframe()[["unique_id", "cluster_id"]]
    seconds["cluster"] = round(time.perf_counter() - step, 2)
    label = pd.Series(labels["cluster_id"].to_numpy(), index=labels["unique_id"].to_numpy()).reindex(
        range(len(records))
    )
    membership = prepared.records[["source", "table", "key"]].assign(label=label.astype("string").to_numpy())
    truth = pd.read_parquet(folder / "ground_truth" / "records.parquet")
    quality = score_against_truth(membership, truth)
    return {"records": len(records), "links_at_threshold": pairs, "seconds": seconds, **quality}


def main(argv: list[str] | None = None) -> int:
    """``python -m ci_pipeline.benchmarks.splink_side --data FOLDER --ours PATH --model PATH [--stored]``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--ours", required=True, help="our stored model (JSON): Splink is set up from its settings")
    parser.add_argument("--model", required=True, help="Splink model JSON: written after training, read with --stored")
    parser.add_argument("--stored", action="store_true", help="reuse the saved Splink model instead of training")
    args = parser.parse_args(argv)
    print(json.dumps(run_splink(Path(args.data), Path(args.ours), Path(args.model), args.stored)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
