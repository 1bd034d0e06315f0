"""`ci-pipeline bench predictions` end to end on a small generated data set: one JSON line per model."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from ci_pipeline.benchmarks import predictions as bench
from ci_pipeline.benchmarks import public_purchases
from ci_pipeline.errors import UserError


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    folder = tmp_path_factory.mktemp("predictions-bench")
    bench._generate(3000, 7, folder)
    return folder


@pytest.mark.slow
def test_bench_prints_every_metric_of_each_model_and_its_baselines(generated, capsys):
    args = SimpleNamespace(people=3000, seed=7, data=str(generated), signals=["web_sessions"])
    assert bench.run(args) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [line["model"] for line in lines] == ["churn", "clv", "recommendation"]
    churn, clv, recommendation = (line["evaluation"] for line in lines)
    assert {"auc", "brier", "calibration_error", "precision", "recall"} <= set(churn["model"])
    assert set(churn["baselines"]) == {f"rule_no_purchase_{churn['best_rule_days']}_days", "bgnbd_p_no_purchase"}
    assert "web_sessions.days_since_last" in churn["feature_importance"]
    assert {"top_capture", "normalized_gini", "interval_coverage"} <= set(clv["model"])
    assert set(clv["baselines"]) == {"reference_monthly_x_months_x_retention", "bgnbd_gamma_gamma"}
    assert recommendation["with_repeats"]["model"]["success_at_10"] > 0
    for line in lines:
        assert line["seconds"] > 0 and line["peak_rss_mb"] >= line["load_peak_rss_mb"] > 0 and line["profiles"] > 1000


@pytest.mark.slow
def test_bench_refuses_an_unknown_signal(generated):
    with pytest.raises(UserError, match="--signals: no activity clicks in .* web_sessions"):
        bench.load_activities(generated, ["clicks"])


def test_the_bench_seed_sets_the_models_seed_on_public_data(tmp_path):
    # On public data the figures move with the models' seed alone: --seed must reach them (it was ignored there).
    public_purchases.write_project(tmp_path, "cdnow_sample", customers=50)
    assert bench.configured(tmp_path)[0].seed == 7  # the configuration's
    assert bench.configured(tmp_path, 3)[0].seed == 3
