"""The sample rules on the bundled sample: quality against the generator's ground truth, and nothing lost."""

from __future__ import annotations

import pandas as pd
import pytest

from ci_pipeline.benchmarks.unify import bench, churn, increment, read_customer_tables, score_against_truth
from ci_pipeline.config import SAMPLE_CONFIG, load_config
from ci_pipeline.unify import unify


@pytest.mark.slow
def test_sample_rules_unify_the_sample_well():
    config = load_config(SAMPLE_CONFIG)
    frames, keys = read_customer_tables(config)
    result = unify(config.unify, frames, keys, base_dir=config.base_dir)
    assert len(result.alternate_key) == sum(len(f) for f in frames.values())
    truth = pd.read_parquet(SAMPLE_CONFIG.parent / "ground_truth" / "records.parquet")
    quality = score_against_truth(result.records[["source", "table", "key", "label"]], truth)
    # measured 0.973 / 0.986, precision 0.996 on the sample; a rule change that loses more than a little fails here
    assert quality["pairwise_f1"] >= 0.965, quality
    assert quality["bcubed_f1"] >= 0.98, quality
    assert quality["pairwise_precision"] >= 0.99, quality
    attach = result.stats["attach"][0]
    assert attach["attached"] > 0 and attach["thin_customers"] == sum(
        v for k, v in attach.items() if k not in ("rule", "thin_customers")
    )
    assert result.stats["largest_cluster"] <= config.unify.guard.max_cluster_size


@pytest.mark.slow
def test_bench_breaks_the_missed_pairs_down_consistently():
    figures = bench(SAMPLE_CONFIG.parent, misses=True)
    misses = figures["misses"]
    truth = pd.read_parquet(SAMPLE_CONFIG.parent / "ground_truth" / "records.parquet")
    n = truth.groupby("person_id").size()
    actual = float((n * (n - 1) / 2).sum())
    assert 1 - misses["missed_pairs"] / actual == pytest.approx(figures["pairwise_recall"], abs=1e-4)
    assert sum(misses["missed_by_shared_values"].values()) <= misses["missed_pairs"]
    assert "nothing but a name" in misses["missed_by_shared_values"]
    assert figures["pairwise_recall"] < misses["recall_ceiling"] < 1
    assert misses["wrong_links_by_rule"] and all(v > 0 for v in misses["wrong_links_by_rule"].values())
    phases = list(figures["peak_rss_mb_after_phase"].values())
    assert list(figures["peak_rss_mb_after_phase"]) == list(figures["phases_s"])
    assert phases == sorted(phases) and 0 < phases[-1] <= figures["peak_rss_mb"]
    assert figures["attach"]["sole_namesake"]["attached"] > 0


@pytest.mark.slow
@pytest.mark.parametrize("method", ["rules", "probabilistic"])
def test_bench_churn_two_nights_on_the_sample(method):
    figures = churn(SAMPLE_CONFIG.parent, method)
    assert figures["arrived"] > 0 and figures["deleted"] > 0
    assert figures["records_night2"] == figures["records_night1"] + figures["arrived"] - figures["deleted"]
    assert figures["records_kept"] == figures["records_night1"] - figures["deleted"]
    # Repeating a night on the same rows in another order changes no id.
    assert figures["rerun_id_changes"] == 0 and figures["rerun_records_changed_id"] == 0
    # New records and deletions move few of the records already known (measured: 4 of 3,712 with the rules, and 4
    # with the stored model).
    assert figures["records_kept_that_changed_id"] <= 0.01 * figures["records_kept"], figures
    assert figures["night2_id_changes"]["new"] > 0 and figures["night2_id_changes"]["removed"] > 0
    if method == "probabilistic":
        # The same night with a model retrained on it: the same records, and a few more ids moved (measured: 10).
        retrained = figures["retrained"]
        assert retrained["records_kept"] == figures["records_kept"] and retrained["arrived"] == figures["arrived"]
        assert retrained["records_kept_that_changed_id"] <= 0.02 * retrained["records_kept"], retrained


@pytest.mark.slow
@pytest.mark.parametrize("method", ["rules", "probabilistic"])
def test_bench_increment_on_the_sample_unifies_incrementally_as_a_full_unify_does(method):
    figures = increment(SAMPLE_CONFIG.parent, 0.05, method)
    assert figures["incremental"]["incremental"], figures["incremental"]
    assert figures["differing_outputs"] == []
    assert figures["incremental"]["records_new"] > 0 and figures["incremental"]["records_deleted"] > 0
    if method == "probabilistic":
        assert figures["incremental"]["model_pairs_reused"] > 0
