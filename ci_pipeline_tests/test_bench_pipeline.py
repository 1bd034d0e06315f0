"""`ci-pipeline bench pipeline`: the whole pipeline on a generated data set, figures per stage."""

from __future__ import annotations

import json

import pytest

from ci_pipeline.cli import main
from ci_pipeline.defs import STAGES


@pytest.mark.slow
def test_bench_pipeline_reports_every_stage_and_reuses_the_generated_data(tmp_path, capsys):
    data = tmp_path / "data"
    # Enough people for the sample's prediction models to train (predictions.minimums: 500 customers with a
    # purchase for churn, 1,000 for CLV); with 600 people the unchanged rerun recomputed 5 assets.
    argv = ["bench", "pipeline", "--people", "2000", "--data", str(data)]
    assert main(argv) == 0
    figures = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    stages = figures["stages"]
    assert list(stages) == [s.name for s in STAGES if s.name in stages]
    assert {"ingest", "unify", "activities", "measures", "segments", "publish"} <= set(stages)
    assert figures["generate_s"] > 0 and figures["people"] == 2000
    for name, stage in stages.items():
        assert stage["rows_out"] > 0 and stage["rows_in"] > 0 and stage["seconds"] >= 0, name
    # Ingest writes every row it reads: accepted into the table, the rest into its quarantine.
    assert stages["ingest"]["rows_in"] == stages["ingest"]["rows_out"]
    # A stage's seconds are its steps' own; steps run two at a time (orchestration.executor.max_concurrent), so
    # the stages' seconds add up to at most twice the run's.
    assert all(s["seconds"] <= figures["seconds"] for s in stages.values())
    assert sum(s["seconds"] for s in stages.values()) <= 2 * figures["seconds"]
    # CPU seconds are shared among the steps running at the time: each stage used some, all of them no more than
    # the run.
    assert all(s["cpu_seconds"] > 0 for s in stages.values())
    assert sum(s["cpu_seconds"] for s in stages.values()) <= figures["cpu_seconds"]
    assert all(0 < s["peak_rss_mb"] <= figures["peak_rss_mb"] for s in stages.values()), (
        figures["peak_rss_mb"],
        stages,
    )
    # The unchanged rerun recomputes nothing; the 1% append re-reads the grown tables and what depends on them.
    unchanged, append = figures["unchanged_rerun"], figures["append_1pct"]
    assert unchanged["seconds"] > 0 and unchanged["assets_recomputed"] == 0 and unchanged["stages_seconds"] == {}
    assert 0 < unchanged["share_of_full"] < 1
    assert append["rows_appended"] > 0 and 0 < append["assets_recomputed"] < figures["assets"]
    assert {"ingest", "unify", "publish"} <= set(append["stages_seconds"]) <= set(stages)
    assert set(append["stages_peak_rss_mb"]) == set(append["stages_seconds"])
    assert all(0 < peak <= append["peak_rss_mb"] for peak in append["stages_peak_rss_mb"].values())
    # The run wrote its lake, sink and 1% append in a folder of its own: the cached data set holds only what was
    # generated, unchanged (the next run reads as many rows as the first).
    assert not (data / "lake").exists() and not (data / "sink.sqlite").exists()


def test_a_generated_data_set_is_reused_not_generated_again(tmp_path, monkeypatch):
    """A folder holding a finished data set (its configuration written) is taken as it is, in no time; a partial one
    left by an interrupted generation is never taken for it."""
    from ci_pipeline.benchmarks import pipeline

    def no_generation(*args, **kwargs):
        raise AssertionError(f"generated again: {args}")

    monkeypatch.setattr(pipeline.subprocess, "run", no_generation)
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "ci_pipeline.yaml").write_text("name: x\n")
    assert pipeline.cached_data(2000, 7, str(tmp_path / "data")) == (tmp_path / "data", 0.0)
    (tmp_path / "fresh.partial").mkdir()
    (tmp_path / "fresh.partial" / "ci_pipeline.yaml").write_text("name: x\n")
    with pytest.raises(AssertionError, match="generated again"):
        pipeline.cached_data(2000, 7, str(tmp_path / "fresh"))
