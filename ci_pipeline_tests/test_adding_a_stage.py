"""A throwaway stage, written here the way docs/architecture.md ("Adding a stage") says, is picked up by publish,
the jobs and the run summary through the registry alone: nothing else in the project names it."""

from __future__ import annotations

import sqlite3

import dagster as dg
import pandas as pd
import pytest

from ci_pipeline import outputs
from ci_pipeline.commands.run import print_summary
from ci_pipeline.config import load_config
from ci_pipeline.defs import STAGES, available_tables, build_definitions
from ci_pipeline.defs import ingest as ingest_stage
from ci_pipeline.defs.orchestration import step_assets
from ci_pipeline.defs.registry import JobSpec, Stage, asset_key, stage_table
from ci_pipeline_tests.conftest import ROOT

CONFIG = """
name: contoso
sources:
  crm:
    owner: me
    tables:
      contacts: {format: csv, path: contacts.csv, primary_key: id}
publish:
  exports:
    - name: warehouse
"""


# -- the stage's package: pure pandas, no Dagster ----------------------------------------------------------------
def score_contacts(contacts: pd.DataFrame) -> pd.DataFrame:
    """One Prediction row per contact: a made-up score, built through the output contract."""
    content = pd.DataFrame(
        {
            "CustomerId": contacts["id"].astype("string"),
            "ModelProvider": "contoso",
            "Model": "Tiny",
            "Values": [{"score": len(name)} for name in contacts["name"]],
        }
    )
    return outputs.build("Prediction", content)


# -- the stage's defs module: its assets and its registry entry ---------------------------------------------------
PREDICTION = asset_key("scores", "prediction")


def build(config, produced) -> dg.Definitions:
    @dg.asset(
        key=PREDICTION,
        group_name="scores",
        ins={"contacts": dg.AssetIn(ingest_stage.table_key("crm", "contacts"))},
        description="One row per contact and model: its score (Prediction).",
        kinds={"pandas"},
    )
    def prediction(contacts: pd.DataFrame) -> pd.DataFrame:
        return score_contacts(contacts)

    return dg.Definitions(assets=[prediction])


def jobs(config, keys) -> list[JobSpec]:
    return [JobSpec("scores_only", dg.AssetSelection.groups("scores"), "Score the contacts again.", "partial")]


SCORES = Stage(
    name="scores",
    section="scores",
    front_door=score_contacts,
    build=build,
    summary="Prediction: a tiny score per contact",
    assets={"prediction": PREDICTION},
    produces={"Prediction": PREDICTION},
    jobs=jobs,
)
#: Registered before publish, as a line in ci_pipeline/defs/stages.py would.
REGISTERED = (*STAGES[:-1], SCORES, STAGES[-1])


@pytest.fixture
def config(tmp_path):
    (tmp_path / "ci_pipeline.yaml").write_text(CONFIG)
    (tmp_path / "contacts.csv").write_text("id,name\nC1,Ann\nC2,Bartholomew\n")
    return load_config(tmp_path / "ci_pipeline.yaml")


def test_a_registered_stage_is_published_run_and_summarised(config, capsys):
    assert available_tables(config, REGISTERED) == {"Prediction": PREDICTION}
    defs = build_definitions(config, REGISTERED)
    graph = defs.resolve_asset_graph()
    sink_prediction = dg.AssetKey(["publish", "sink_prediction"])
    assert graph.get(sink_prediction).parent_keys == {PREDICTION}
    prediction_files = dg.AssetKey(["publish", "prediction_to_warehouse"])
    assert graph.get(prediction_files).parent_keys == {PREDICTION}
    assert graph.get(dg.AssetKey(["publish", "export_warehouse"])).parent_keys == {prediction_files}
    assert defs.resolve_job_def("scores_only").asset_layer.selected_asset_keys == {PREDICTION}
    full = defs.resolve_job_def("full_refresh")
    assert PREDICTION in full.asset_layer.selected_asset_keys

    with dg.DagsterInstance.ephemeral() as instance:
        result = full.execute_in_process(instance=instance, raise_on_error=False)
        records = list(instance.all_logs(result.run_id))
    assert result.success
    groups = {key.to_user_string(): graph.get(key).group_name for key in graph.get_all_asset_keys()}
    print_summary(result, records, config, 1.0, groups, step_assets(graph), [s.name for s in REGISTERED])
    out = capsys.readouterr().out
    stages = [line.split()[0] for line in out.split("\nstage")[1].strip().splitlines()[1:] if line.strip()]
    assert stages[:3] == ["ingest", "scores", "publish"]

    with sqlite3.connect(config.base_dir / "sink.sqlite") as db:
        rows = db.execute("SELECT msdynci_identifier, msdynci_predictionid FROM msdynci_prediction").fetchall()
    assert sorted(rows) == sorted((f"Tiny|contoso|{c}", outputs.guid(f"Tiny|contoso|{c}")) for c in ["C1", "C2"])


def test_without_the_entry_nothing_names_the_stage(config):
    defs = build_definitions(config)
    assert PREDICTION not in defs.resolve_asset_graph().get_all_asset_keys()
    assert "scores_only" not in {job.name for job in defs.resolve_all_job_defs()}


def test_a_stage_cannot_claim_another_stage_s_key_or_an_unknown_table():
    with pytest.raises(ValueError, match="must start with the stage name"):
        Stage("scores", "scores", score_contacts, build, "x", assets={"p": dg.AssetKey(["unify", "p"])})
    with pytest.raises(ValueError, match="are not output tables"):
        Stage("scores", "scores", score_contacts, build, "x", produces={"Predictions": PREDICTION})
    with pytest.raises(KeyError, match="declares no asset 'nope'"):
        SCORES.key("nope")


def test_the_readme_stage_table_is_the_registry():
    readme = (ROOT / "README.md").read_text()
    assert stage_table(STAGES) in readme, "README's stage table must be registry.stage_table(STAGES) written out"
    for stage in STAGES:
        for table in stage.produces:
            assert table in stage.summary, f"stage {stage.name}: its summary must name {table}"
