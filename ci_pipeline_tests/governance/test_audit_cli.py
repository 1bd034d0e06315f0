"""`ci-pipeline audit`: every change is listed; verify finds the first row someone changed."""

from __future__ import annotations

import json
import sqlite3


def test_every_change_is_in_the_log_and_the_chain_verifies(team):
    team.run("connections", "add", "lake2", "--type", "adls", "--account", "a", "--container", "c")
    team.run("connections", "share", "lake2", "alice")
    rows = json.loads(team.run("audit", "list", "--json", "--limit", "0").out)
    actions = [r["action"] for r in rows]
    assert actions == [
        "environment.init",
        "sources.register",
        "sources.register",
        "roles.grant",
        "roles.grant",
        "roles.grant",
        "connections.add",
        "connections.share",
    ]
    # init gave the service principal of schedules and sensors its role.
    service = {"user": "ci-pipeline-scheduler", "role": "contributor", "as": "governance.service_principal"}
    assert rows[3]["actor"] == "root" and json.loads(rows[3]["after"]) == service
    assert rows[4]["actor"] == "root" and json.loads(rows[4]["after"]) == {"user": "alice", "role": "contributor"}
    assert [r["id"] for r in json.loads(team.run("audit", "list", "--json", "--limit", "2").out)] == [7, 8]
    verified = team.run("audit", "verify", user="alice")
    assert verified.code == 0 and "8 rows, hash chain intact" in verified.out
    assert team.run("audit", "list", user="alice").code == 2  # the log itself is for admins


def test_verify_reports_the_first_changed_row(team):
    with sqlite3.connect(team.store_file) as db:
        db.execute("DROP TRIGGER audit_log_no_update")
        db.execute('UPDATE audit_log SET after = \'{"user": "alice", "role": "admin"}\' WHERE id = 4')
    result = team.run("audit", "verify")
    assert result.code == 1
    assert "BROKEN at row 4" in result.out
