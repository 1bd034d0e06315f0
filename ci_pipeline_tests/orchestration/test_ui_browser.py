"""End to end in a real browser: `dagster dev` on loopback, headless Chromium clicks Materialize all, launches a
job, and checks and photographs what an operator looks at: an asset's columns and metadata plots, the job's run
history and every asset group's graph fitted to the window. The screenshots are kept under the test's tmp path and
copied to `.artifacts/ui/` in the checkout.

Needs Node.js with playwright-core (installed by `python3 dev.py test` into .ci/node) and a Chromium or Chrome
($CI_PIPELINE_CHROMIUM, else the first of chromium, chromium-browser, google-chrome on PATH; dev.py installs
Debian's). Missing tools fail the test with the command that installs them.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pyarrow.parquet as pq
import pytest
import yaml

from ci_pipeline.config import load_config
from ci_pipeline.defs import build_definitions
from ci_pipeline_tests.conftest import ROOT, free_port

SCRIPT = Path(__file__).with_name("ui_browser.js")
#: Where the screenshots are copied for people and CI to look at (ignored by git).
ARTIFACTS = ROOT / ".artifacts" / "ui"
#: The screenshots ui_browser.js takes besides one per asset group (group-<name>.png).
SCREENSHOTS = ("asset-columns.png", "asset-plots.png", "job-runs.png", "failure.png")
TEMPLATE = ROOT / "ci_pipeline" / "generate" / "templates" / "orchestration.yaml"
#: Names a Chromium or Chrome executable goes by on Linux distributions.
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
#: The daemon's look at the run queue, every 5 s by default: each run the scenario launches waited half of that on
#: average before it started. The server's instance is the project's dagster.yaml with only this interval shorter
#: (the runs still go through the queued run coordinator and its daemon).
DEQUEUE_INTERVAL_SECONDS = 1


def node_modules() -> Path:
    return Path(os.environ.get("CI_PIPELINE_NODE_DIR", ROOT / ".ci" / "node")) / "node_modules"


def find_chromium() -> str | None:
    """The browser to drive: $CI_PIPELINE_CHROMIUM (set by dev.py), else the first Chromium or Chrome on PATH."""
    return os.environ.get("CI_PIPELINE_CHROMIUM") or next(filter(None, map(shutil.which, CHROMIUM_NAMES)), None)


def require_tools() -> str:
    """Fail with the command that installs what is missing; returns the Chromium executable."""
    if shutil.which("node") is None:
        pytest.fail("node is not installed; run the tests with `python3 dev.py test` (it installs Node.js)")
    if not (node_modules() / "playwright-core").is_dir():
        pytest.fail(f"playwright-core is not installed in {node_modules()}; run `python3 dev.py test`")
    chromium = find_chromium()
    if chromium is None or not Path(chromium).exists():
        pytest.fail(
            f"no Chromium found (looked for {chromium or ', '.join(CHROMIUM_NAMES)}); install it with "
            "`apt-get install -y chromium` or `python3 dev.py test`, or set CI_PIPELINE_CHROMIUM to its path"
        )
    return chromium


class DagsterDev:
    """`dagster dev` in its own process group, with a private DAGSTER_HOME; stopped by its pid."""

    def __init__(self, workspace: Path, config: Path, home: Path, log: Path):
        home.mkdir(parents=True, exist_ok=True)
        instance = yaml.safe_load((ROOT / "dagster.yaml").read_text())
        instance["run_coordinator"]["config"]["dequeue_interval_seconds"] = DEQUEUE_INTERVAL_SECONDS
        (home / "dagster.yaml").write_text(yaml.safe_dump(instance, sort_keys=False))
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        env = {**os.environ, "DAGSTER_HOME": str(home), "CI_PIPELINE_CONFIG": str(config)}
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
        dagster = Path(sys.executable).with_name("dagster")
        self.process = subprocess.Popen(
            [str(dagster), "dev", "-w", str(workspace), "-h", "127.0.0.1", "-p", str(self.port)],
            cwd=ROOT,
            env=env,
            stdout=log.open("wb"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def wait_ready(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"dagster dev exited with {self.process.returncode}:\n{self.tail()}")
            try:
                if httpx.get(f"{self.url}/server_info", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        pytest.fail(f"dagster dev did not answer /server_info within {timeout:.0f} s:\n{self.tail()}")

    def graphql(self, query: str, variables: dict | None = None) -> dict:
        response = httpx.post(f"{self.url}/graphql", json={"query": query, "variables": variables or {}}, timeout=30)
        body = response.json()
        assert "errors" not in body, body["errors"]
        return body["data"]

    def browse(self, script: Path, args: list[str], chromium: str, shots: Path, timeout: float) -> dict:
        """Run the node ``script`` against this server; what it found (its last line of output, JSON)."""
        env = {**os.environ, "NODE_PATH": str(node_modules()), "CHROMIUM_PATH": chromium}
        browser = subprocess.run(
            ["node", str(script), self.url, *args, str(shots)],
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if browser.returncode != 0:
            pytest.fail(
                f"browser scenario failed (screenshots: {shots}):\n{browser.stderr[-3000:]}\n"
                f"--- dagster dev log ---\n{self.tail()}"
            )
        return json.loads(browser.stdout.strip().splitlines()[-1])

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)
        # Children that outlived the leader still belong to its group.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)


def drive_ui(workspace: Path, config_file: Path, work: Path, asset: str, job: str) -> dict:
    """Run the whole browser scenario; returns what it found (runs, columns, plots, groups, schedules, sensors).

    The screenshots land in ``work/screenshots`` and are copied to :data:`ARTIFACTS`, also when the scenario fails.
    """
    chromium = require_tools()
    shots = work / "screenshots"
    shots.mkdir(parents=True, exist_ok=True)
    server = DagsterDev(workspace, config_file, work / "dagster_home", work / "dagster-dev.log")
    try:
        server.wait_ready()
        server.graphql("mutation { setNuxSeen }")
        found = server.browse(SCRIPT, [asset, job], chromium, shots, timeout=900)
        repository = {"repositoryName": "__repository__", "repositoryLocationName": "ci_pipeline"}
        data = server.graphql(
            """query($repo: RepositorySelector!) {
                 schedulesOrError(repositorySelector: $repo) { ... on Schedules { results {
                   name cronSchedule executionTimezone description scheduleState { status } } } }
                 sensorsOrError(repositorySelector: $repo) { ... on Sensors { results {
                   name minIntervalSeconds sensorState { status } } } } }""",
            {"repo": repository},
        )
        found["schedules"] = {s["name"]: s for s in data["schedulesOrError"]["results"]}
        found["sensors"] = {s["name"]: s for s in data["sensorsOrError"]["results"]}
        return found
    finally:
        server.stop()
        keep_screenshots(shots)


def keep_screenshots(shots: Path) -> None:
    """Copy this scenario's screenshots to :data:`ARTIFACTS` in place of those of its previous run.

    Only its own names are replaced: another browser test keeps its screenshot in the same folder, and may be
    writing it at the same moment (the suite runs on several workers).
    """
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    for stale in [*ARTIFACTS.glob("group-*.png"), *(ARTIFACTS / name for name in SCREENSHOTS)]:
        stale.unlink(missing_ok=True)
    shutil.copytree(shots, ARTIFACTS, dirs_exist_ok=True)


@pytest.mark.slow
def test_materialize_all_from_the_ui(sample_copy, tmp_path):
    config_file = sample_copy / "ci_pipeline.yaml"
    settings = yaml.safe_load(config_file.read_text())
    # The sample runs with the orchestration section the generator ships (nightly refresh, weekly export).
    settings["orchestration"] = yaml.safe_load(TEMPLATE.read_text())["orchestration"]
    # One process for the whole run keeps this test short; the process-per-step default is tested in test_jobs.
    settings["orchestration"]["executor"] = {"kind": "in_process"}
    config_file.write_text(yaml.safe_dump(settings, sort_keys=False))
    config = load_config(config_file)
    asset = os.environ.get("CI_PIPELINE_UI_ASSET", "unify/customer_profile")
    keys = {key.to_user_string() for key in build_definitions(config).resolve_asset_graph().get_all_asset_keys()}
    if asset not in keys:
        pytest.fail(f"the sample configuration {config_file} defines no asset {asset}; its assets: {sorted(keys)}")

    found = drive_ui(ROOT / "workspace.yaml", config_file, tmp_path, asset, "unify_only")

    assert found["status"] == "SUCCESS" and found["rows"] > 0
    # The Columns panel lists the column schema, which is the stored table's columns.
    stored = pq.read_schema(sample_copy / "lake" / "ci_pipeline" / f"{asset}.parquet").names
    assert found["columns"] == stored and "CustomerId" in stored
    assert found["asset"]["columns_listed"] == len(stored)
    # Both runs materialized the asset, so its metadata plots have two points; the page draws them.
    assert found["materializations"] >= 2 and found["plots"]["charts"] >= 1
    assert found["job_runs"]["listed"] == found["job_run_id"][:8]
    groups = found["groups"]
    assert set(groups) >= {"ingest", "unify", "activities", "measures", "segments", "publish"}
    assert all(group["fits"] for group in groups.values()), groups
    screenshots = [found["asset"], found["plots"], found["job_runs"], *groups.values()]
    for shot in screenshots:
        name = Path(shot["screenshot"]).name
        assert Path(shot["screenshot"]).stat().st_size > 10_000 and (ARTIFACTS / name).is_file(), name

    refresh = found["schedules"]["refresh"]
    assert refresh["cronSchedule"] == config.orchestration.refresh.cron_schedules()[0] == "0 2 * * *"
    assert refresh["executionTimezone"] == "Europe/Amsterdam"
    assert refresh["description"].endswith("every day at 02:00 (Europe/Amsterdam).")
    assert refresh["scheduleState"]["status"] == "RUNNING"
    export = found["schedules"]["weekly_export"]
    assert (export["cronSchedule"], export["executionTimezone"]) == ("0 6 * * 1", "Europe/Amsterdam")
    assert export["description"].endswith("on Mondays at 06:00 (Europe/Amsterdam).")
    assert found["sensors"]["new_files"]["minIntervalSeconds"] == 60
    assert found["sensors"]["new_files"]["sensorState"]["status"] == "RUNNING"
    assert found["sensors"]["failure_notification"]["sensorState"]["status"] == "RUNNING"
