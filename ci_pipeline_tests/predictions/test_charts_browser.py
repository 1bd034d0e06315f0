"""In a real browser: the churn model's asset page in `dagster dev` renders its drawn gain chart.

The bundled sample's configuration, its lake pre-filled with a generated shop's timeline, the training asset
materialised in-process into a private Dagster home, then `dagster dev` on that home and headless Chromium
(ui_charts.js) opening the asset's page, clicking the chart's "[Show Markdown]" and waiting for the image to load.
Needs the tools of the UI browser test (Node.js with playwright-core, a Chromium); missing tools fail the test
with the command that installs them. The screenshot is copied to `.artifacts/ui/prediction-chart.png`.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import dagster as dg
import pytest

from ci_pipeline.config import load_config
from ci_pipeline.defs import predictions
from ci_pipeline.defs.resources import shared_resources
from ci_pipeline.lake import Lake
from ci_pipeline_tests.conftest import ROOT
from ci_pipeline_tests.orchestration.test_ui_browser import ARTIFACTS, DagsterDev, require_tools
from ci_pipeline_tests.predictions.test_assets import UPSTREAM, facts

SCRIPT = Path(__file__).with_name("ui_charts.js")


def train_churn_into(config_file: Path, home: Path) -> None:
    """Materialise ``predictions/churn_model`` of the configuration into the Dagster instance at ``home``."""
    config = load_config(config_file)
    timeline = facts()
    # The sample's configuration reads returns from the orders' is_return field.
    timeline["is_return"] = False
    lake = Lake.local(config_file.parent / "lake")
    lake.write_parquet("ci_pipeline/activities/activity_facts.parquet", timeline)
    customers = timeline[["CustomerId"]].drop_duplicates().sort_values("CustomerId", ignore_index=True)
    lake.write_parquet("ci_pipeline/unify/customer_profile.parquet", customers)
    assets = [a for a in predictions.build(config).assets if not isinstance(a, dg.SourceAsset)]
    home.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(ROOT / "dagster.yaml", home / "dagster.yaml")
    with dg.DagsterInstance.from_config(str(home)) as instance:
        dg.materialize(
            [*assets, *(dg.SourceAsset(key=k) for k in UPSTREAM)],
            resources=shared_resources(config),
            selection=[predictions.model_key("churn")],
            instance=instance,
        )


@pytest.mark.slow
def test_the_churn_models_page_renders_its_drawn_gain_chart(sample_copy, tmp_path):
    chromium = require_tools()
    config_file = sample_copy / "ci_pipeline.yaml"
    home = tmp_path / "dagster_home"
    train_churn_into(config_file, home)
    shots = tmp_path / "screenshots"
    shots.mkdir()
    server = DagsterDev(ROOT / "workspace.yaml", config_file, home, tmp_path / "dagster-dev.log")
    try:
        server.wait_ready()
        server.graphql("mutation { setNuxSeen }")
        found = server.browse(SCRIPT, ["predictions/churn_model", "plot/gain"], chromium, shots, timeout=600)
    finally:
        server.stop()
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        for shot in shots.glob("*.png"):
            shutil.copyfile(shot, ARTIFACTS / shot.name)
    # The browser decoded the PNG at its own size: the chart is drawn, not a broken image or a text link.
    assert (found["natural_width"], found["natural_height"]) == (640, 400), found
    assert found["shown_width"] > 0 and found["alt"] == "gain chart of TransactionalChurn"
    assert Path(found["screenshot"]).stat().st_size > 10_000
