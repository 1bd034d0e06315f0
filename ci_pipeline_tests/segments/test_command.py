"""`ci-pipeline segment preview` and `segment refresh` over tables in a local lake."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import pytest

from ci_pipeline import cli
from ci_pipeline.commands import segment
from ci_pipeline.config import ProjectConfig
from ci_pipeline.lake import Lake
from ci_pipeline.measures.facts import StoredFacts

CONFIG = """
lake: {url: lake}
sources:
  shop:
    owner: me
    tables:
      customers: {format: csv, path: c.csv, primary_key: id}
"""


@pytest.fixture
def project(tmp_path):
    (tmp_path / "ci_pipeline.yaml").write_text(CONFIG)
    lake = Lake.local(tmp_path / "lake")
    lake.write_parquet(
        segment.PROFILE, pd.DataFrame({"CustomerId": ["A", "B", "C", "D"], "City": ["Oslo", "Rome", "Oslo", None]})
    )
    lake.write_parquet(
        segment.VALUES, pd.DataFrame({"CustomerId": ["A", "B", "C", "D"], "spend": [5.0, 50, 500, None]})
    )
    return tmp_path


def preview(project, capsys, *args) -> tuple[int, str, str]:
    code = cli.main(["--config", str(project / "ci_pipeline.yaml"), "segment", "preview", *args])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_preview_prints_the_estimated_size(project, capsys):
    assert preview(project, capsys, "--field", "measure.spend", "--op", ">=", "--value", "50", "--sample", "0")[1] == (
        "estimated size: 2 of 4 customers (50.0%)\n"
    )
    assert "1 of 4" in preview(project, capsys, "--field", "profile.City", "--op", "is null")[1]
    assert "3 of 4" in preview(project, capsys, "--field", "measure.spend", "--op", "between", "--value", "[1, 500]")[1]
    assert "2 of 4" in preview(project, capsys, "--field", "profile.City", "--op", "in", "--value", "[Oslo, Paris]")[1]


def test_preview_reads_a_number_in_exponent_form_as_a_number_as_it_reads_underscores(project, capsys):
    """YAML reads 1_000 as 1000 and 1e3 as text: preview said 'spend is a number but the value '1e3' is not'."""
    args = ("--field", "measure.spend", "--op", ">=", "--sample", "0")
    for value in ("5e1", "50", "5_0", "5.0e+1"):
        assert preview(project, capsys, *args, "--value", value)[1].startswith("estimated size: 2 of 4"), value
    assert (
        "3 of 4" in preview(project, capsys, "--field", "measure.spend", "--op", "between", "--value", "[1e0, 5E2]")[1]
    )
    assert segment.cli_value(["1e3", "e3", "1e3x", "2.5e-1"]) == [1000, "e3", "1e3x", 0.25]


def test_preview_reads_the_prediction_fields_of_the_last_run(project, capsys):
    Lake.local(project / "lake").write_parquet(
        segment.PREDICTIONS, pd.DataFrame({"CustomerId": ["A", "C"], "ChurnScore": [0.9, 0.2]})
    )
    assert "1 of 4" in preview(project, capsys, "--field", "prediction.ChurnScore", "--op", ">", "--value", "0.5")[1]


def test_preview_reads_the_enrichment_fields_of_the_last_run(project, capsys):
    """As the run does: it read none and put no one in a segment on an enrichment field (the run put 1,824)."""
    fields = pd.DataFrame({"CustomerId": ["A", "B", "C"], "email.Class": ["FreeMail", "Business", "FreeMail"]})
    Lake.local(project / "lake").write_parquet(segment.ENRICHMENTS, fields)
    args = ["--field", "enrichment.email.Class", "--op", "=", "--value", "FreeMail"]
    assert "estimated size: 2 of 4 customers" in preview(project, capsys, *args)[1]


def test_preview_errors_are_clear_and_never_execute_the_value(project, capsys):
    code, _, err = preview(project, capsys, "--field", "measure.spend", "--op", "~", "--value", "1")
    assert code == 2 and "unknown operator '~'" in err
    code, _, err = preview(project, capsys, "--field", "measure.spend", "--op", ">", "--value", "__import__('os')")
    assert code == 2 and "measure.spend is a number but the value" in err
    code, _, err = preview(project, capsys, "--field", "profile.Nope", "--op", "=", "--value", "x")
    assert code == 2 and "unknown profile attribute 'Nope'" in err
    code, _, err = preview(project, capsys, "--segment", "nothing")
    assert code == 2 and "--segment nothing: unknown segment; defined: none" in err


def test_preview_without_a_run_says_what_to_do(tmp_path, capsys):
    (tmp_path / "ci_pipeline.yaml").write_text(CONFIG)
    code, _, err = preview(tmp_path, capsys, "--field", "measure.spend", "--op", ">", "--value", "1")
    assert code == 2 and "run `ci-pipeline run` first" in err


def with_segments(project, monkeypatch, definitions: dict) -> None:
    """The commands load a configuration of the project's lake with these segment definitions."""
    config = ProjectConfig.model_validate(
        {
            "lake": {"url": str(project / "lake")},
            "sources": {"shop": {"owner": "me", "tables": {"c": {"format": "csv", "path": "c", "primary_key": "id"}}}},
            "segments": {"definitions": definitions},
        }
    )
    monkeypatch.setattr("ci_pipeline.config.load_config", lambda path: config)


def test_refresh_releases_kept_members_of_static_segments(project, capsys, monkeypatch):
    with_segments(project, monkeypatch, {
        "frozen": {"type": "static", "rules": [{"field": "profile.City", "op": "=", "value": "Oslo"}]},
        "other": {"type": "static", "rules": [{"field": "profile.City", "op": "=", "value": "Rome"}]},
        "live": {"rules": [{"field": "profile.City", "op": "=", "value": "Rome"}]},
    })  # fmt: skip
    lake = Lake.local(project / "lake")
    lake.write_parquet(
        segment.STATIC,
        pd.DataFrame({"Segment": ["frozen", "frozen", "other"], "CustomerId": ["A", "C", "B"], "FrozenAt": pd.NaT}),
    )
    from ci_pipeline.orchestration.refresh import AssetState, Node, load_states, plan_refresh, save_state

    # The segments' records of the last run: nothing they read has changed since.
    nodes = {key: Node((), "cv-s") for key in segment.SEGMENT_ASSETS}
    for key in segment.SEGMENT_ASSETS:
        save_state(lake, key, AssetState("cv-s", "lv-1", {}))
    assert plan_refresh(nodes, load_states(lake, nodes)).stale == {}
    assert cli.main(["segment", "refresh", "frozen"]) == 0
    assert lake.read_parquet(segment.STATIC)["Segment"].tolist() == ["other"]
    # The next incremental run evaluates the segments again (it found nothing to do).
    plan = plan_refresh(nodes, load_states(lake, nodes))
    assert set(plan.stale.values()) == {"released by `ci-pipeline segment refresh`"}
    assert set(plan.stale) == set(segment.SEGMENT_ASSETS)
    assert cli.main(["segment", "refresh", "live"]) == 2
    assert "live is not a static segment" in capsys.readouterr().err
    assert cli.main(["segment", "refresh", "frozn"]) == 2
    assert "frozn is not a static segment (did you mean 'frozen'?)" in capsys.readouterr().err
    assert cli.main(["segment", "refresh", "--all"]) == 0
    assert lake.read_parquet(segment.STATIC).empty


def test_preview_shows_a_sample_of_members_with_the_previewed_value(project, capsys):
    code, out, _ = preview(project, capsys, "--field", "measure.spend", "--op", ">=", "--value", "50", "--sample", "1")
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == "estimated size: 2 of 4 customers (50.0%)"
    assert (
        "first 1 members by CustomerId:" in out and "spend" in lines[-2] and lines[-1].split() == ["B", "Rome", "50.0"]
    )
    code, out, _ = preview(project, capsys, "--field", "profile.City", "--op", "=", "--value", "Oslo")
    assert [line.split()[0] for line in out.splitlines()[-2:]] == ["A", "C"]


def test_preview_errors_name_the_flag_the_user_typed(project, capsys):
    code, _, err = preview(project, capsys, "--field", "measure.spend", "--op", "~", "--value", "1")
    assert code == 2 and err.startswith("error: --op '~': unknown operator") and "segments.definitions" not in err
    code, _, err = preview(project, capsys, "--field", "City", "--op", "=", "--value", "x")
    assert code == 2 and err.startswith("error: --field 'City': ")
    code, _, err = preview(project, capsys, "--field", "measure.spend", "--op", ">", "--value", "abc")
    assert code == 2 and "--value 'abc'" in err and "segments.definitions" not in err


@dataclass(frozen=True)
class _InPartsOfTwoRows(StoredFacts):
    """The stored facts read as the stage reads them, in parts of a few rows, so that a tiny table has several."""

    rows_per_part: int = 2


def test_preview_reads_the_stored_facts_in_parts_of_whole_customers(project, capsys, monkeypatch):
    config = ProjectConfig.model_validate(
        {
            "lake": {"url": str(project / "lake")},
            "sources": {"shop": {"owner": "me", "tables": {"c": {"format": "csv", "path": "c", "primary_key": "id"}}}},
            "measures": {"as_of": "2026-03-31"},
            "segments": {
                "definitions": {
                    "two_visits": {"rules": [{"activity": "visits", "count": {"op": ">=", "value": 2}}]},
                    "bought_lately": {"rules": [{"activity": "orders", "within": "30 days"}]},
                }
            },
        }
    )
    monkeypatch.setattr("ci_pipeline.config.load_config", lambda path: config)
    day = pd.Timestamp("2026-03-20", tz="UTC")
    Lake.local(project / "lake").write_parquet(
        segment.FACTS,
        pd.DataFrame(
            {
                # Rows of one customer apart from each other, and of someone who is no customer (Z).
                "CustomerId": ["C", "A", "C", "B", "A", "Z", "Z", "D", "B"],
                "Activity": ["visits", "visits", "visits", "orders", "visits", "visits", "visits", "orders", "orders"],
                "ActivityType": "Other",
                "ActivityTimeStamp": [day, day, day, day, day, day, day, day - pd.Timedelta(days=60), day],
            }
        ),
    )
    read_whole = Lake.read_parquet

    def refuse_the_facts(self, path, *args, **kwargs):
        assert path != segment.FACTS, "the preview loaded every activity at once"
        return read_whole(self, path, *args, **kwargs)

    monkeypatch.setattr(Lake, "read_parquet", refuse_the_facts)
    monkeypatch.setattr("ci_pipeline.measures.facts.StoredFacts", _InPartsOfTwoRows)
    code, out, err = preview(project, capsys, "--segment", "two_visits")
    assert code == 0, err
    assert out.splitlines()[0] == "estimated size: 2 of 4 customers (50.0%)"
    assert [line.split()[0] for line in out.splitlines()[-2:]] == ["A", "C"]
    # The order 60 days before the run date is outside the window: only B bought lately.
    code, out, _ = preview(project, capsys, "--segment", "bought_lately")
    assert code == 0 and out.splitlines()[0] == "estimated size: 1 of 4 customers (25.0%)"
    assert out.splitlines()[-1].split()[0] == "B"


def test_preview_of_a_measure_configured_since_the_last_run_says_to_run_first(project, capsys):
    (project / "ci_pipeline.yaml").write_text(CONFIG + "measures:\n  attributes:\n    fresh: {expression: '2 * 3'}\n")
    code, _, err = preview(project, capsys, "--field", "measure.fresh", "--op", ">", "--value", "1")
    assert code == 2
    assert (
        "measure.fresh is configured but not computed yet (the stored measures come from an earlier run): run the "
        in err
    )
    # A measure configured nowhere is still unknown.
    code, _, err = preview(project, capsys, "--field", "measure.stale", "--op", ">", "--value", "1")
    assert code == 2 and "unknown customer attribute measure 'stale'" in err


def test_the_tables_preview_reads_are_those_the_stages_store():
    from ci_pipeline.defs import activities, enrich, measures, predictions, unify
    from ci_pipeline.defs.resources import asset_path

    assert asset_path(unify.STAGE.key("customer_profile")) == segment.PROFILE
    assert asset_path(measures.STAGE.key("customer_measure_values")) == segment.VALUES
    assert asset_path(activities.STAGE.key("activity_facts")) == segment.FACTS
    assert asset_path(predictions.STAGE.key("prediction_fields")) == segment.PREDICTIONS
    assert asset_path(enrich.STAGE.key("enrichment_fields")) == segment.ENRICHMENTS
    assert asset_path(unify.STAGE.key("id_change")) == segment.ID_CHANGE


def test_preview_of_a_static_segment_counts_the_members_it_keeps_and_says_what_its_rules_select(
    project, capsys, monkeypatch
):
    with_segments(project, monkeypatch, {
        "frozen": {"type": "static", "rules": [{"field": "profile.City", "op": "=", "value": "Oslo"}]},
        "on_it": {"rules": [{"segment": "frozen"}]},
    })  # fmt: skip
    kept = pd.DataFrame({"Segment": ["frozen"] * 3, "CustomerId": ["A", "B", "D"], "FrozenAt": pd.NaT})
    Lake.local(project / "lake").write_parquet(segment.STATIC, kept)
    code, out, _ = preview(project, capsys, "--segment", "frozen", "--sample", "0")
    assert code == 0 and out.splitlines() == [
        "estimated size: 3 of 4 customers (75.0%)",
        "  (static: the members it keeps, which the next run publishes; its rules select 2 now, kept instead after "
        "`ci-pipeline segment refresh frozen`)",
    ]
    # A segment built on it reads the kept members, as the run does.
    assert preview(project, capsys, "--segment", "on_it", "--sample", "0")[1] == (
        "estimated size: 3 of 4 customers (75.0%)\n"
    )


def test_preview_warns_when_the_stored_measures_were_computed_with_other_settings(project, capsys):
    """A measure redefined since the last run: the preview counted the old values (255) without a word (the run: 6)."""
    from ci_pipeline.config import load_config
    from ci_pipeline.defs import STAGES
    from ci_pipeline.defs.refresh import stage_code_version
    from ci_pipeline.orchestration.refresh import AssetState, save_state

    lake, key = Lake.local(project / "lake"), ("measures", "customer_measure_values")
    args = ["--field", "measure.spend", "--op", ">=", "--value", "50"]
    save_state(lake, key, AssetState("cv-of-other-settings", "lv-1", {}))
    code, out, err = preview(project, capsys, *args)
    assert (
        code == 0
        and out.startswith("estimated size: 2 of 4")
        and err.startswith(
            "warning: the stored measure values were computed with other settings than the configuration's now"
        )
    )
    sections = [stage.section for stage in STAGES[: [s.name for s in STAGES].index("measures") + 1]]
    current = stage_code_version(load_config(project / "ci_pipeline.yaml"), sections)
    save_state(lake, key, AssetState(current, "lv-1", {}))
    assert preview(project, capsys, *args)[2] == ""
    # A rule that reads no measure says nothing of them.
    save_state(lake, key, AssetState("cv-of-other-settings", "lv-1", {}))
    assert preview(project, capsys, "--field", "profile.City", "--op", "=", "--value", "Oslo")[2] == ""
