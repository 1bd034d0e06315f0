"""The unify assets run in Dagster against a real lake folder pre-filled with ingestion outputs."""

from __future__ import annotations

import dagster as dg
import pandas as pd
import yaml

from ci_pipeline.config import load_config
from ci_pipeline.defs import build_definitions
from ci_pipeline.defs import unify as unify_defs
from ci_pipeline.defs.resources import shared_resources
from ci_pipeline.lake import Lake
from ci_pipeline_tests.unify.helpers import KEYS, config, frames


def project(tmp_path, **unify):
    sources = {}
    for (source, table), pk in KEYS.items():
        sources.setdefault(source, {"owner": "me", "tables": {}})["tables"][table] = {
            "format": "csv",
            "path": f"{table}.csv",
            "primary_key": pk,
        }
    raw = {
        "lake": {"url": "lake"},
        "sources": sources,
        "unify": config(**unify).model_dump(mode="json", exclude_defaults=True),
    }
    (tmp_path / "ci_pipeline.yaml").write_text(yaml.safe_dump(raw))
    cfg = load_config(tmp_path / "ci_pipeline.yaml")
    lake = Lake.local(tmp_path / "lake")
    for (source, table), df in frames().items():
        lake.write_parquet(f"ci_pipeline/{source}/{table}.parquet", df)
    return cfg, lake


def run(cfg, selection=None):
    """Materialize the unify group; its upstream tables are read from the lake through the IO manager."""
    defs = build_definitions(cfg)
    assets = list(defs.assets or [])
    defined = {k for a in assets if isinstance(a, dg.AssetsDefinition) for k in a.keys}
    assets += [dg.SourceAsset(dg.AssetKey(list(k))) for k in KEYS if dg.AssetKey(list(k)) not in defined]
    selection = selection or dg.AssetSelection.groups("unify")
    return dg.materialize(assets, resources=shared_resources(cfg), selection=selection, raise_on_error=True)


def test_unify_assets_materialize_with_checks_and_stable_ids(tmp_path):
    cfg, lake = project(tmp_path)
    result = run(cfg)
    assert result.success
    checks = result.get_asset_check_evaluations()
    assert {c.check_name for c in checks} == {
        "every_record_one_customer",
        "customer_ids_unique",
        "no_customer_without_record",
        "cluster_size_guard",
    }
    assert all(c.passed for c in checks)
    profile = lake.read_parquet("ci_pipeline/unify/customer_profile.parquet")
    assert len(profile) == 5 and profile.CustomerId.is_unique
    assert len(lake.read_parquet("ci_pipeline/unify/alternate_key.parquet")) == 9
    dedup = lake.read_parquet("ci_pipeline/unify/dedup_records.parquet")
    assert len(dedup[(dedup.Source == "crm") & (dedup.Table == "contacts")]) == 4
    stats = [e for e in result.get_asset_materialization_events() if e.asset_key == unify_defs.key("unify_stats")]
    assert stats[0].materialization.metadata["customers"].value == 5
    # second run: same ids, nothing new in the change log
    log1 = lake.read_parquet("ci_pipeline/unify/id_change.parquet")
    run(cfg)
    again = lake.read_parquet("ci_pipeline/unify/customer_profile.parquet")
    assert sorted(again.CustomerId) == sorted(profile.CustomerId)
    assert len(lake.read_parquet("ci_pipeline/unify/id_change.parquet")) == len(log1)


def test_the_size_guard_check_warns_when_the_guard_cut_a_group_at_the_cap(tmp_path):
    """Bob Smith's three records with a cap of two: the guard cuts them, so the check warns (it could never fail
    when it only compared the largest customer with the cap the guard itself keeps)."""
    cfg, _ = project(tmp_path, guard={"max_cluster_size": 2})
    checks = {c.check_name: c for c in run(cfg).get_asset_check_evaluations()}
    guard = checks["cluster_size_guard"]
    assert not guard.passed and guard.severity == dg.AssetCheckSeverity.WARN
    assert guard.metadata["size_cap_groups"].value == 1 and guard.metadata["largest_cluster"].value == 2
    assert all(c.passed for name, c in checks.items() if name != "cluster_size_guard")
    # What the run's summary prints for it: how far to raise the cap, or what to look for.
    assert guard.description == (
        "the guard cut 1 group(s) of linked records at the size cap of 2, the largest of 3 records: where their "
        "records truly are one customer (a person listed under many names, an organisation), raise "
        "unify.guard.max_cluster_size above 3; else look for a placeholder value they share (match_pairs notes "
        "'over-merge guard: size cap')"
    )
    assert all(c.description is None for c in checks.values() if c.passed)


def test_match_only_mode_issues_no_ids(tmp_path):
    cfg, lake = project(tmp_path)
    selection = unify_defs.selections(cfg)["match"]
    result = run(cfg, selection)
    assert result.success
    assert lake.exists("ci_pipeline/unify/match_pairs.parquet")
    assert not lake.exists("ci_pipeline/unify/identity_map.parquet")
    assert not lake.exists("ci_pipeline/unify/customer_profile.parquet")


def test_no_unify_section_no_assets(tmp_path):
    cfg, _ = project(tmp_path)
    bare = cfg.model_copy(update={"unify": None})
    assert unify_defs.build(bare).assets is None or not list(unify_defs.build(bare).assets)
    assert unify_defs.selections(bare) == {}
    assert isinstance(pd.DataFrame(), pd.DataFrame)
