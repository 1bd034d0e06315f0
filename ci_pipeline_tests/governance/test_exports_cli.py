"""`ci-pipeline exports`: contributors bind exports to shared connections only; detached ones stay, inactive."""

from __future__ import annotations

import json

import pytest

from ci_pipeline.governance import Governance, SecretResolver, open_store
from ci_pipeline_tests.governance.test_connections import audit_rows

EVIL = "'; DROP TABLE x; --"


@pytest.fixture
def storage(team):
    """Two adls connections; lake2 is shared with alice, lake3 is not. carol is another contributor."""
    for name in ("lake2", "lake3"):
        assert (
            team.run("connections", "add", name, "--type", "adls", "--account", "acct", "--container", name).code == 0
        )
    assert team.run("connections", "share", "lake2", "alice").code == 0
    assert team.run("roles", "grant", "carol", "contributor").code == 0
    return team


def exports(project, user: str) -> list[dict]:
    result = project.run("exports", "list", "--json", user=user)
    assert result.code == 0, result.err
    return json.loads(result.out)


def test_a_contributor_binds_exports_to_shared_connections_only(storage):
    refused = storage.run("exports", "add", "weekly", "--connection", "lake3", user="alice")
    assert refused.code == 2
    assert "connection 'lake3' is not shared with 'alice'; contributors bind exports to shared connections only" in (
        refused.err
    )
    assert storage.run("exports", "add", "weekly", "--connection", "lake2", user="vera").code == 2
    added = storage.run("exports", "add", "weekly", "--connection", "lake2", user="alice")
    assert added.code == 0 and "publish.exports add (or change) {name: weekly, connection: lake2}" in added.out
    again = storage.run("exports", "add", "weekly", "--connection", "lake2", user="alice")
    assert again.code == 2 and "bound already" in again.err
    [row] = exports(storage, "alice")
    assert (row["name"], row["connection"], row["owner"], row["active"]) == ("weekly", "lake2", "alice", True)
    refused_rows = [r for r in audit_rows(storage) if r["outcome"] == "refused"]
    assert {(r["actor"], r["action"]) for r in refused_rows} == {("alice", "exports.bind"), ("vera", "exports.bind")}


def test_detach_attach_and_remove_by_the_owner_only(storage):
    assert storage.run("exports", "add", "weekly", "--connection", "lake2", user="alice").code == 0
    other = storage.run("exports", "detach", "weekly", user="carol")
    assert other.code == 2 and "export 'weekly' belongs to 'alice'; only they or an admin change it" in other.err
    assert storage.run("exports", "detach", "weekly", user="alice").code == 0
    listed = storage.run("exports", "list", user="alice")
    assert "detached from lake2: skipped" in listed.out
    assert storage.run("exports", "attach", "weekly", "lake2", user="alice").code == 0
    assert exports(storage, "alice")[0]["active"] is True
    # Unshared, the contributor can no longer move it there, and the admin is told what now cannot run.
    unshared = storage.run("connections", "unshare", "lake2", "alice")
    assert "export weekly" in unshared.out
    assert storage.run("exports", "attach", "weekly", "lake2", user="alice").code == 2
    assert exports(storage, "alice")[0]["connection"] is None  # no longer shared: not shown to alice
    assert storage.run("exports", "remove", "weekly", user="carol").code == 2
    assert storage.run("exports", "remove", "weekly", user="alice").code == 0
    assert exports(storage, "root") == []
    assert storage.run("audit", "verify").code == 0


def test_hostile_export_names_are_harmless(storage):
    assert storage.run("exports", "add", EVIL, "--connection", "lake2").code == 0
    assert [r["name"] for r in exports(storage, "root")] == [EVIL]
    assert storage.run("connections", "list").code == 0


def test_the_enrichment_api_is_active_follows_binding_and_removal(storage):
    store = open_store(f"sqlite:///{storage.store_file}")
    root = Governance(store, "root", SecretResolver([storage.dir]))
    assert root.is_active("enrichment", "brands") is False
    root.bind("enrichment", "brands", "lake2")
    assert root.is_active("enrichment", "brands") is True
    assert root.binding("enrichment", "brands")["connection"] == "lake2"
    root.remove_connection("lake2", detach=True)
    assert root.is_active("enrichment", "brands") is False
    assert root.binding("enrichment", "brands")["detached_from"] == "lake2"
    store.close()
