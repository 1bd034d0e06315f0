"""An on-demand export runs only when asked for by name, never with a refresh."""

from __future__ import annotations

import dagster as dg
import yaml

from ci_pipeline.config import load_config
from ci_pipeline.defs import build_definitions
from ci_pipeline.defs.launch import choose_job

EXPORT = dg.AssetKey(["publish", "export_warehouse"])
#: The export's data files of one table, written ahead of its metadata: on demand with it.
PROFILE_FILES = dg.AssetKey(["publish", "customer_profile_to_warehouse"])


def _defs(sample_copy, refresh: str) -> dg.Definitions:
    path = sample_copy / "ci_pipeline.yaml"
    raw = yaml.safe_load(path.read_text())
    raw["publish"]["exports"][0]["refresh"] = refresh
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return build_definitions(load_config(path))


def _keys(job: dg.JobDefinition) -> set[dg.AssetKey]:
    return set(job.asset_layer.selected_asset_keys)


def test_on_demand_export_is_left_out_of_every_refresh(sample_copy):
    defs = _defs(sample_copy, "on_demand")
    for name in ("full_refresh", "incremental_refresh", "unify_and_downstream", "publish_only"):
        assert EXPORT not in _keys(defs.resolve_job_def(name)), name
        assert PROFILE_FILES not in _keys(defs.resolve_job_def(name)), name
    job, mode = choose_job(defs, None, None)
    assert job.name == "full_refresh" and mode == "full"
    assert EXPORT not in _keys(job) and PROFILE_FILES not in _keys(job)
    assert dg.AssetKey(["publish", "sink_customer_profile"]) in _keys(job)
    asked, _ = choose_job(defs, None, "publish/export_warehouse")
    assert EXPORT in _keys(asked)
    # Reached through a group or `+` only, an on-demand asset is left out; named by its key, it runs.
    group, _ = choose_job(defs, None, "group:publish")
    assert EXPORT not in _keys(group) and dg.AssetKey(["publish", "sink_customer_profile"]) in _keys(group)
    assert EXPORT not in _keys(choose_job(defs, None, "group:unify+")[0])
    assert EXPORT in _keys(choose_job(defs, None, "key:publish/export_warehouse or group:unify")[0])


def test_every_refresh_export_runs_with_the_refresh(sample_copy):
    defs = _defs(sample_copy, "every_refresh")
    assert {EXPORT, PROFILE_FILES} <= _keys(defs.resolve_job_def("full_refresh"))
