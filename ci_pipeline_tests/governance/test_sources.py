"""`ci-pipeline sources`: Managed by me / Managed by others; only the owner or an admin manages a source."""

from __future__ import annotations

import json

import pytest

from ci_pipeline.governance import AccessDenied, Governance, SecretResolver, open_store

EVIL = "'; DROP TABLE x; --"


def test_sources_are_listed_in_sections_for_the_acting_user(team):
    mine = team.run("sources", "list", user="alice")
    assert mine.code == 0
    head, others = mine.out.split("Managed by others:")
    assert "Managed by me:" in head and "crm" in head and "shop" not in head
    assert "shop" in others and EVIL in others
    sections = json.loads(team.run("sources", "list", "--json", user="root").out)
    assert sections["mine"] == []
    assert [(s["name"], s["owner"]) for s in sections["others"]] == [("crm", "alice"), ("shop", EVIL)]
    assert json.loads(team.run("sources", "list", "--json", user="vera").out)["others"]
    assert team.run("sources", "list", user="stranger").code == 2


def test_only_the_owner_or_an_admin_changes_a_source_and_attempts_are_audited(team):
    assert team.run("roles", "grant", "bob", "contributor").code == 0
    refused = team.run("sources", "set-owner", "crm", "bob", user="bob")
    assert refused.code == 2 and "managed by 'alice'; only they or an admin may hand it over: ask them" in refused.err
    assert team.run("sources", "set-owner", "crm", "bob", user="vera").code == 2
    assert team.run("sources", "set-owner", "crm", "bob", user="alice").code == 0
    assert team.run("sources", "set-owner", "crm", "alice", user="alice").code == 2
    assert team.run("sources", "set-owner", "crm", "alice", user="root").code == 0
    rows = json.loads(team.run("audit", "list", "--json").out)
    refused_rows = [(r["actor"], r["action"], r["target"]) for r in rows if r["outcome"] == "refused"]
    assert refused_rows == [
        ("bob", "sources.set-owner", "crm"),
        ("vera", "sources.set-owner", "crm"),
        ("alice", "sources.set-owner", "crm"),
    ]
    assert team.run("audit", "verify", user="vera").code == 0


def test_a_source_still_in_use_cannot_be_removed(team):
    refused = team.run("sources", "remove", "crm", user="alice")
    assert refused.code == 2
    assert "sources.crm in" in refused.err and "unify table crm.contacts" in refused.err
    # Once the configuration no longer has it, its owner may forget it.
    team.config.write_text(
        team.config.read_text()
        .replace("    - {source: crm", "    - {source: shop")
        .replace("table: contacts", "table: orders")
    )
    text = team.config.read_text()
    crm_block = text[text.index("  crm:") : text.index("  shop:")]
    team.config.write_text(text.replace(crm_block, ""))
    assert "not in the configuration" in team.run("sources", "list", user="alice").out
    assert team.run("sources", "remove", "crm", user="vera").code == 2
    assert team.run("sources", "remove", "crm", user="alice").code == 0
    assert "crm" not in team.run("sources", "list", user="alice").out


def test_runs_can_ask_whether_the_user_may_refresh_a_source(team):
    store = open_store(f"sqlite:///{team.store_file}")
    Governance(store, "alice", SecretResolver([team.dir])).require_source_manager("crm", "sources.refresh")
    Governance(store, "root", SecretResolver([team.dir])).require_source_manager("shop", "sources.refresh")
    team.run("roles", "grant", "bob", "contributor")
    with pytest.raises(AccessDenied, match="managed by 'alice'"):
        Governance(store, "bob", SecretResolver([team.dir])).require_source_manager("crm", "sources.refresh")
    with pytest.raises(AccessDenied, match="'vera' is viewer"):
        Governance(store, "vera", SecretResolver([team.dir])).require_source_manager("crm", "sources.refresh")
