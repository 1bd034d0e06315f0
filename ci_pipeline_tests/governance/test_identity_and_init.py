"""Who is acting, and `ci-pipeline init`: the first caller becomes admin; running it again changes nothing."""

from __future__ import annotations

import getpass
import json

import pytest

from ci_pipeline.errors import UserError
from ci_pipeline.governance import acting_user


def test_the_acting_user_comes_from_as_then_the_environment_then_the_os(monkeypatch):
    monkeypatch.delenv("CI_PIPELINE_USER", raising=False)
    assert acting_user() == getpass.getuser()
    monkeypatch.setenv("CI_PIPELINE_USER", "  carol ")
    assert acting_user() == "carol"
    assert acting_user("dave") == "dave"


@pytest.mark.parametrize("name", ["", "   ", "x" * 201, "eve\nadmin", "bell\x07", "rtl\u202eoverride"])
def test_unusable_user_names_are_refused(name, monkeypatch):
    monkeypatch.setenv("CI_PIPELINE_USER", "carol")
    with pytest.raises(UserError, match="--as"):
        acting_user(name)


def test_init_makes_the_caller_admin_once_and_is_idempotent(project, monkeypatch):
    first = project.run("init", user="root")
    assert first.code == 0 and "root is its administrator" in first.out
    assert "Registered 2 source(s)" in first.out
    assert (
        "ci-pipeline-scheduler (governance.service_principal, who schedules and sensors act as) is a contributor"
        in (first.out)
    )
    assert project.store_file.exists()

    again = project.run("init", user="mallory")
    assert again.code == 0
    assert "Already initialised" in again.out and "admins: root" in again.out and "Nothing changed" in again.out
    assert "mallory has no role" in again.out
    roles = json.loads(project.run("roles", "list", "--json").out)
    assert [(r["user"], r["role"]) for r in roles] == [("ci-pipeline-scheduler", "contributor"), ("root", "admin")]
    assert project.run("roles", "list", user="mallory").code == 2


def test_init_by_an_admin_gives_a_newly_configured_service_principal_its_role(project):
    project.run("init", user="root")
    project.config.write_text(project.config.read_text() + "governance:\n  service_principal: svc:nightly\n")
    assert "svc:nightly" not in project.run("init", user="mallory").out  # no role: changes nothing
    assert "svc:nightly" not in json.dumps(json.loads(project.run("roles", "list", "--json").out))
    assert "svc:nightly (governance.service_principal" in project.run("init", user="root").out
    roles = {r["user"]: r["role"] for r in json.loads(project.run("roles", "list", "--json").out)}
    assert roles["svc:nightly"] == "contributor"


def test_init_registers_sources_the_configuration_gained(project):
    project.run("init")
    loyalty = "  loyalty:\n    owner: lena\n    tables:\n      members: {format: csv, path: m.csv, primary_key: id}\n"
    project.config.write_text(project.config.read_text().replace("unify:", loyalty + "unify:"))
    again = project.run("init", user="root")
    assert "Registered 1 source(s) with their configured owners: loyalty" in again.out


def test_commands_before_init_say_to_run_it(project):
    result = project.run("connections", "list")
    assert result.code == 2 and "not initialised yet; run `ci-pipeline init`" in result.err


def test_an_unknown_user_running_init_again_registers_nothing(project):
    project.run("init")
    loyalty = "  loyalty:\n    owner: lena\n    tables:\n      members: {format: csv, path: m.csv, primary_key: id}\n"
    project.config.write_text(project.config.read_text().replace("unify:", loyalty + "unify:"))
    assert "Registered" not in project.run("init", user="mallory").out
    assert "loyalty" in project.run("init", user="root").out


def test_the_environment_variable_names_the_user(project, monkeypatch):
    monkeypatch.setenv("CI_PIPELINE_USER", "ops-bot")
    assert "ops-bot is its administrator" in project.run("init", user=None).out
    assert project.run("roles", "grant", "alice", "viewer", user=None).code == 0


def test_roles_are_granted_replaced_and_revoked_but_never_the_last_admin(team):
    assert team.run("roles", "grant", "alice", "viewer").code == 0
    roles = {r["user"]: r["role"] for r in json.loads(team.run("roles", "list", "--json").out)}
    assert roles == {"root": "admin", "alice": "viewer", "vera": "viewer", "ci-pipeline-scheduler": "contributor"}
    assert "last admin" in team.run("roles", "revoke", "root").err
    assert "last admin" in team.run("roles", "grant", "root", "viewer").err
    assert team.run("roles", "grant", "alice", "admin").code == 0
    assert team.run("roles", "revoke", "root", user="alice").code == 0
    assert team.run("connections", "list", user="root").code == 2
    assert "has no role" in team.run("roles", "revoke", "nobody", user="alice").err


def test_a_problem_between_other_sections_does_not_lock_out_governance(team):
    team.config.write_text(team.config.read_text().replace("{source: crm, table: contacts", "{source: nope, table: t"))
    assert "no source named 'nope'" in team.run("validate", "--no-sources", user=None).err
    assert team.run("connections", "list").code == 0
    assert team.run("roles", "list").code == 0
