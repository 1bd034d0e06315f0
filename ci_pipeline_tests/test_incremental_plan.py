"""Incremental refresh rules on plain values: what is stale, table fingerprints, recorded provenance."""

from __future__ import annotations

import os
from datetime import UTC, datetime

import pytest
import yaml

from ci_pipeline.config import load_config
from ci_pipeline.lake import Lake
from ci_pipeline.orchestration.refresh import (
    AssetState,
    Node,
    load_states,
    logical_version,
    plan_refresh,
    record_step,
    table_fingerprint,
)

INGEST, CORRUPT, OTHER, UNIFY, MEASURES = (
    ("crm", "contacts"),
    ("crm", "contacts_corrupt"),
    ("shop", "orders"),
    (
        "unify",
        "profile",
    ),
    ("measures", "values"),
)


def _nodes(fingerprint="fp-1", other="fp-9", code="cv-u", today=None) -> dict:
    return {
        INGEST: Node((), "cv-i", fingerprint),
        CORRUPT: Node((), "cv-i", fingerprint),
        OTHER: Node((), "cv-o", other),
        UNIFY: Node((INGEST, OTHER), code),
        MEASURES: Node((UNIFY,), "cv-m", run_date=today),
    }


def _recorded(tmp_path, nodes) -> dict:
    lake = Lake.local(tmp_path / "lake")
    record_step(lake, [INGEST, CORRUPT], nodes, {INGEST: "fp-1", CORRUPT: "fp-1"}, "r1")
    record_step(lake, [OTHER], nodes, {OTHER: "fp-9"}, "r1")
    record_step(lake, [UNIFY], nodes, {}, "r1")
    record_step(lake, [MEASURES], nodes, {}, "r1")
    return load_states(lake, nodes)


def test_an_empty_lake_has_no_history_and_everything_is_stale():
    plan = plan_refresh(_nodes(), {})
    assert not plan.history and len(plan.stale) == 5
    assert "full refresh" in plan.summary()


def test_nothing_changed_means_nothing_to_run(tmp_path):
    states = _recorded(tmp_path, _nodes(today="2026-12-01"))
    plan = plan_refresh(_nodes(today="2026-12-01"), states)
    assert plan.history and plan.stale == {}
    assert plan.summary() == "all 5 assets are up to date: nothing to run"


def test_a_changed_table_is_recomputed_with_everything_downstream_and_nothing_else(tmp_path):
    states = _recorded(tmp_path, _nodes())
    plan = plan_refresh(_nodes(other="fp-10"), states)
    assert plan.stale == {
        OTHER: "source files changed",
        UNIFY: "input shop/orders is recomputed",
        MEASURES: "input unify/profile is recomputed",
    }
    assert plan.summary() == "3 of 5 assets to recompute: shop/orders (source files changed); 2 downstream of it"


def test_a_changed_setting_recomputes_its_stage_and_what_follows(tmp_path):
    states = _recorded(tmp_path, _nodes())
    plan = plan_refresh(_nodes(code="cv-u2"), states)
    assert list(plan.stale) == [UNIFY, MEASURES]
    assert plan.stale[UNIFY] == "configuration or code changed"


def test_a_step_that_did_not_finish_after_its_input_changed_is_stale(tmp_path):
    """A run stopped after re-ingesting a table: the table's record is new, unify's still names the old version."""
    nodes = _nodes()
    lake = Lake.local(tmp_path / "lake")
    _recorded(tmp_path, nodes)
    changed = _nodes(fingerprint="fp-2")
    record_step(lake, [INGEST, CORRUPT], changed, {INGEST: "fp-2", CORRUPT: "fp-2"}, "r2")
    plan = plan_refresh(changed, load_states(lake, changed))
    assert list(plan.stale) == [UNIFY, MEASURES]
    assert plan.stale[UNIFY] == "input crm/contacts changed since it was computed"
    # The summary names that cause (it said "2 of 5 assets to recompute: ; 1 downstream of it").
    assert plan.summary() == (
        "2 of 5 assets to recompute: unify/profile (input crm/contacts changed since it was computed); "
        "1 downstream of it"
    )


def test_a_dated_stage_computed_on_an_earlier_day_is_stale(tmp_path):
    states = _recorded(tmp_path, _nodes(today="2026-12-01"))
    plan = plan_refresh(_nodes(today="2026-12-02"), states)
    assert plan.stale == {MEASURES: "computed on 2026-12-01, the run date is 2026-12-02"}


def test_a_damaged_record_only_recomputes_its_asset(tmp_path):
    states = _recorded(tmp_path, _nodes())
    lake = Lake.local(tmp_path / "lake")
    lake.write_bytes("ci_pipeline/_state/refresh/measures/values.json", b"{not json")
    states = load_states(lake, _nodes())
    assert MEASURES not in states and UNIFY in states
    assert list(plan_refresh(_nodes(), states).stale) == [MEASURES]


def test_the_data_version_of_a_computed_asset_is_a_digest_of_its_code_and_inputs(tmp_path):
    states = _recorded(tmp_path, _nodes())
    inputs = {INGEST: "fp-1", OTHER: "fp-9"}
    assert states[UNIFY] == AssetState("cv-u", logical_version("cv-u", inputs), inputs, None, "r1")
    assert logical_version("cv-u", inputs) != logical_version("cv-u", {INGEST: "fp-2", OTHER: "fp-9"})
    assert logical_version("cv-u", inputs) != logical_version("cv-u2", inputs)


def test_a_model_stored_anew_outside_the_refresh_makes_what_reads_it_stale(tmp_path):
    """A model retrained by its own job is no asset the refresh runs: what scores with it is stale once the model
    file is new, up to date again once computed from it."""
    model = ("unify", "model")

    def nodes(version):
        return {**_nodes(), UNIFY: Node((INGEST, OTHER), "cv-u", outside=((model, version),))}

    states = _recorded(tmp_path, nodes("st-1"))
    assert states[UNIFY].inputs[model] == "st-1"
    assert plan_refresh(nodes("st-1"), states).stale == {}
    retrained = plan_refresh(nodes("st-2"), states)
    assert retrained.stale == {
        UNIFY: "unify/model was stored anew since it was computed",
        MEASURES: "input unify/profile is recomputed",
    }
    lake = Lake.local(tmp_path / "lake")
    record_step(lake, [UNIFY], nodes("st-2"), {}, "r2")
    assert list(plan_refresh(nodes("st-2"), load_states(lake, nodes("st-2"))).stale) == [MEASURES]


@pytest.fixture
def project(tmp_path):
    """A configuration with a plain CSV table and an incremental-layout table, and its lake."""
    (tmp_path / "people.csv").write_text("id,name\n1,Ann\n")
    (tmp_path / "changes" / "FullData").mkdir(parents=True)
    (tmp_path / "changes" / "FullData" / "part.csv").write_text("id,name\n1,Ann\n")
    config = {
        "name": "fp",
        "lake": {"url": "lake"},
        "sources": {
            "crm": {
                "owner": "crm@example.com",
                "tables": {
                    "people": {"format": "csv", "path": "people.csv", "primary_key": "id"},
                    "changes": {"format": "csv", "path": "changes", "primary_key": "id", "incremental": {}},
                },
            }
        },
    }
    path = tmp_path / "ci_pipeline.yaml"
    path.write_text(yaml.safe_dump(config))
    config["sources"]["crm"]["tables"]["people"]["csv"] = {"delimiter": ";"}
    (tmp_path / "other.yaml").write_text(yaml.safe_dump(config))
    return tmp_path, load_config(path), Lake.local(tmp_path / "lake")


def test_a_fingerprint_changes_with_the_files_and_the_settings_only(project):
    root, config, lake = project
    now = datetime(2026, 6, 30, 10, 30, tzinfo=UTC)
    first = table_fingerprint(lake, config, "crm", "people", now)
    assert table_fingerprint(lake, config, "crm", "people", now) == first
    (root / "people.csv.tmp").write_text("being copied")
    assert table_fingerprint(lake, config, "crm", "people", now) == first
    (root / "people.csv").write_text("id,name\n1,Ann\n2,Bob\n")
    second = table_fingerprint(lake, config, "crm", "people", now)
    assert second != first
    # the same bytes written again later: a new modified time is a change (the file may have been replaced)
    os.utime(root / "people.csv", (1_800_000_000, 1_800_000_000))
    assert table_fingerprint(lake, config, "crm", "people", now) != second
    other = load_config(root / "other.yaml")
    assert table_fingerprint(lake, other, "crm", "people", now) != table_fingerprint(lake, config, "crm", "people", now)


def test_an_hour_folder_counts_once_its_hour_is_over(project):
    root, config, lake = project
    hour = root / "changes" / "IncrementalData" / "2026" / "06" / "30" / "10" / "Upserts"
    before = table_fingerprint(lake, config, "crm", "changes", datetime(2026, 6, 30, 10, 30, tzinfo=UTC))
    hour.mkdir(parents=True)
    (hour / "u.csv").write_text("id,name\n1,Ann B\n")
    assert table_fingerprint(lake, config, "crm", "changes", datetime(2026, 6, 30, 10, 30, tzinfo=UTC)) == before
    assert table_fingerprint(lake, config, "crm", "changes", datetime(2026, 6, 30, 11, 0, tzinfo=UTC)) != before


def test_a_fingerprint_of_a_missing_location_is_that_of_no_files(project):
    root, config, lake = project
    (root / "people.csv").unlink()
    assert table_fingerprint(lake, config, "crm", "people").startswith("fp-")


def test_a_source_the_storage_refuses_to_list_is_a_clear_error_naming_it_and_the_fix(tmp_path, monkeypatch):
    """The SDK's own error (HttpResponseError: "Server failed to authenticate the request") reached the run raw."""
    from ci_pipeline.config import SAMPLE_CONFIG, load_config
    from ci_pipeline.errors import StorageError
    from ci_pipeline.orchestration import refresh

    class Refused(Exception):
        status_code = 403

    def refuse(fs, root):
        raise Refused("Server failed to authenticate the request.\nRequestId: 42")

    monkeypatch.setattr(refresh, "list_location", refuse)
    config = load_config(SAMPLE_CONFIG)
    with pytest.raises(StorageError) as caught:
        refresh.table_fingerprint(Lake.local(tmp_path / "lake"), config, "crm", "contacts")
    message = str(caught.value)
    assert message.startswith(config.resolve_location(config.sources["crm"].tables["contacts"].path))
    assert ": cannot list (Refused: Server failed to authenticate the request.); the storage account refused the " in (
        message
    )
    assert caught.value.__cause__ is None
