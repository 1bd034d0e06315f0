"""`ci-pipeline connections`: admins manage, contributors use shared ones by name and type, secrets never shown."""

from __future__ import annotations

import json
import re
import sqlite3

import pytest
import yaml

from ci_pipeline.config import load_config
from ci_pipeline.errors import UserError
from ci_pipeline.governance import AccessDenied, Governance, SecretResolver, open_store
from ci_pipeline.governance.connections import consent_text
from ci_pipeline.governance.runtime import connection_problems

ENV_SECRET = "env-Secret-Value-4b7d2e9f13"
FILE_SECRET = "file-Secret-Value-8c1f5a3d77"
HOOK_URL = "https://hooks.example.com/services/T00000/B00000/hookTokenValue93a8f1e2"
DATAVERSE = [
    "--type", "dataverse", "--org-url", "https://contoso.crm.dynamics.com", "--tenant-id", "tenant-guid-1234",
    "--client-id", "client-guid-5678",
]  # fmt: skip


@pytest.fixture
def secrets(team, monkeypatch):
    monkeypatch.setenv("DV_SECRET", ENV_SECRET)
    monkeypatch.setenv("HOOK_URL", HOOK_URL)
    (team.dir / "secrets").mkdir()
    (team.dir / "secrets" / "api_key.txt").write_text(FILE_SECRET + "\n")
    return team


def audit_rows(project) -> list[dict]:
    result = project.run("audit", "list", "--limit", "0", "--json")
    assert result.code == 0, result.err
    return json.loads(result.out)


def test_consent_is_needed_for_a_connection_that_sends_data_outside(secrets):
    refused = secrets.run("connections", "add", "hook", "--type", "webhook", "--url", "env:HOOK_URL")
    assert refused.code == 2
    assert "--consent" in refused.err and consent_text() in refused.err
    assert secrets.run("connections", "list", "--json").out.strip() == "[]"

    added = secrets.run("connections", "add", "hook", "--type", "webhook", "--url", "env:HOOK_URL", "--consent")
    assert added.code == 0, added.err
    view = json.loads(secrets.run("connections", "show", "hook", "--json").out)
    assert view["consent"]["by"] == "root" and view["consent"]["text_version"] == "1"
    assert secrets.run("connections", "edit", "hook", "--rename", "hook2").code == 0
    assert json.loads(secrets.run("connections", "show", "hook2", "--json").out)["consent"]["by"] == "root"
    # Dataverse stays inside the organisation's own tenant: no consent asked.
    assert secrets.run("connections", "add", "dv", *DATAVERSE, "--client-secret", "env:DV_SECRET").code == 0
    assert json.loads(secrets.run("connections", "show", "dv", "--json").out)["consent"] is None
    with sqlite3.connect(secrets.store_file) as db:
        secrets.run("connections", "remove", "hook2")
        # The record outlives the connection, under the name it had when consent was given.
        assert db.execute(
            "SELECT connection_id, connection_name, principal, text_version FROM consents"
        ).fetchall() == [(None, "hook", "root", "1")]


def test_changing_where_an_outbound_connection_sends_data_needs_consent_again(secrets, monkeypatch):
    secrets.run("connections", "add", "hook", "--type", "webhook", "--url", "env:HOOK_URL", "--consent")
    monkeypatch.setenv("OTHER_HOOK", HOOK_URL + "x")
    assert secrets.run("connections", "edit", "hook", "--url", "env:OTHER_HOOK").code == 2
    assert secrets.run("connections", "edit", "hook", "--url", "env:OTHER_HOOK", "--consent").code == 0
    assert [r["action"] for r in audit_rows(secrets)].count("consent.record") == 2


def test_only_admins_add_edit_share_and_remove_and_every_refusal_is_audited(secrets):
    secrets.run("connections", "add", "dv", *DATAVERSE, "--client-secret", "env:DV_SECRET")
    attempts = [
        ("connections", "add", "mine", *DATAVERSE, "--client-secret", "env:DV_SECRET"),
        ("connections", "edit", "dv", "--client-id", "other"),
        ("connections", "share", "dv", "alice"),
        ("connections", "unshare", "dv", "alice"),
        ("connections", "remove", "dv"),
        ("roles", "grant", "alice", "admin"),
    ]
    for user in ("alice", "vera", "mallory"):
        for attempt in attempts:
            result = secrets.run(*attempt, user=user)
            assert result.code == 2, (user, attempt)
            assert "role" in result.err
    refused = [r for r in audit_rows(secrets) if r["outcome"] == "refused"]
    assert len(refused) == 3 * len(attempts)
    assert {r["actor"] for r in refused} == {"alice", "vera", "mallory"}
    assert secrets.run("roles", "list", "--json").out.count('"admin"') == 1
    assert secrets.run("audit", "verify").code == 0


def test_an_unknown_user_has_no_rights_at_all(secrets, monkeypatch):
    monkeypatch.setenv("CI_PIPELINE_USER", "nobody")
    for args in (("connections", "list"), ("sources", "list"), ("roles", "list"), ("audit", "verify")):
        result = secrets.run(*args, user=None)
        assert result.code == 2 and "'nobody' has no role" in result.err


def test_contributors_see_only_the_name_and_type_of_connections_shared_with_them(secrets):
    secrets.run("connections", "add", "dv", *DATAVERSE, "--client-secret", "env:DV_SECRET")
    secrets.run("connections", "add", "lake2", "--type", "adls", "--account", "acct", "--container", "c")
    assert secrets.run("connections", "share", "dv", "alice").code == 0

    outputs = [
        secrets.run("connections", "list", user="alice"),
        secrets.run("connections", "list", "--json", user="alice"),
        secrets.run("connections", "show", "dv", user="alice"),
        secrets.run("connections", "show", "dv", "--json", user="alice"),
        secrets.run("connections", "show", "dv", "--json", "--check", user="alice"),
    ]
    assert all(o.code == 0 for o in outputs), [o.err for o in outputs]
    assert json.loads(outputs[1].out) == [{"name": "dv", "type": "dataverse"}]
    assert json.loads(outputs[3].out) == {"name": "dv", "type": "dataverse"}
    for output in outputs:
        for detail in ("contoso.crm", "tenant-guid", "client-guid", "DV_SECRET", "env:", ENV_SECRET, "lake2"):
            assert detail not in output.text
    # A connection not shared with you does not exist for you; a viewer sees none.
    assert (
        "no connection named 'lake2' is shared with you"
        in secrets.run("connections", "show", "lake2", user="alice").err
    )
    assert json.loads(secrets.run("connections", "list", "--json", user="vera").out) == []
    admin = json.loads(secrets.run("connections", "show", "dv", "--json").out)
    assert admin["secrets"] == [{"setting": "client_secret", "reference": "env:DV_SECRET"}] and admin[
        "shared_with"
    ] == ["alice"]


def test_no_secret_value_reaches_any_output_the_audit_log_or_the_database(secrets):
    steps = [
        ("connections", "add", "dv", *DATAVERSE, "--client-secret", "env:DV_SECRET"),
        ("connections", "add", "enrich", "--type", "http-enrichment", "--url", "https://api.example.com/v1",
         "--api-key", "file:secrets/api_key.txt", "--consent"),
        ("connections", "add", "hook", "--type", "webhook", "--url", "env:HOOK_URL", "--consent"),
        ("connections", "show", "dv", "--check"),
        ("connections", "show", "enrich", "--check", "--json"),
        ("connections", "show", "hook", "--check"),
        ("connections", "list", "--json"),
        ("connections", "edit", "enrich", "--api-key", "env:DV_SECRET"),
        ("connections", "show", "enrich", "--check"),
        ("audit", "list", "--json"),
    ]  # fmt: skip
    texts = []
    for step in steps:
        result = secrets.run(*step)
        assert result.code == 0, (step, result.err)
        texts.append(result.text)
    # A secret pasted where a reference belongs is refused without being repeated.
    pasted = secrets.run("connections", "edit", "dv", "--client-secret", ENV_SECRET)
    assert pasted.code == 2 and "not a secret reference" in pasted.err
    texts.append(pasted.text)
    assert re.search(r"check client_secret +ok", texts[3])
    everything = "\n".join(texts) + secrets.store_file.read_bytes().decode("utf-8", "replace")
    for value in (ENV_SECRET, FILE_SECRET, HOOK_URL, "hookTokenValue93a8f1e2"):
        assert value not in everything


def test_a_failing_check_names_the_reference_without_the_value(secrets, monkeypatch):
    secrets.run("connections", "add", "dv", *DATAVERSE, "--client-secret", "env:DV_SECRET")
    monkeypatch.delenv("DV_SECRET")
    result = secrets.run("connections", "show", "dv", "--check")
    assert result.code == 1
    assert "environment variable DV_SECRET is not set" in result.out


@pytest.mark.parametrize(
    ("ref", "message"),
    [
        ("file:../outside.txt", "may not contain '..'"),
        ("file:secrets/../../outside.txt", "may not contain '..'"),
        ("file:/etc/hostname", "outside the allowed folders"),
        ("file:link.txt", "outside the allowed folders"),
        ("file:loop.txt", "cannot be resolved"),
        ("env:", "needs a variable name"),
        ("keyvault://kvault/bad_name!", "secret names"),
        ("keyvault://x/secret", "neither a Key Vault name"),
        ("keyvault://kv/a/b/c", "keyvault://<vault>/<secret>"),
        ("plain-text-secret", "not a secret reference"),
    ],
)
def test_malformed_references_and_files_outside_the_roots_are_refused(secrets, ref, message):
    outside = secrets.dir.parent / f"{secrets.dir.name}-outside.txt"
    outside.write_text("outside")
    # A link inside the root that leads outside it is followed before the check.
    (secrets.dir / "link.txt").symlink_to(outside)
    (secrets.dir / "loop.txt").symlink_to(secrets.dir / "loop.txt")
    result = secrets.run("connections", "add", "dv", *DATAVERSE, "--client-secret", ref)
    assert result.code == 2 and message in result.err
    if ref.startswith("file:") or ref.startswith("plain"):
        assert "outside\n" not in result.err
    assert secrets.run("connections", "list", "--json").out.strip() == "[]"


def test_extra_roots_allow_files_elsewhere(secrets, monkeypatch, tmp_path_factory):
    elsewhere = tmp_path_factory.mktemp("vault-files")
    (elsewhere / "key").write_text(FILE_SECRET)
    assert secrets.run("connections", "add", "dv", *DATAVERSE, "--client-secret", f"file:{elsewhere}/key").code == 2
    monkeypatch.setenv("CI_PIPELINE_SECRET_ROOTS", str(elsewhere))
    assert secrets.run("connections", "add", "dv", *DATAVERSE, "--client-secret", f"file:{elsewhere}/key").code == 0
    result = secrets.run("connections", "show", "dv", "--check")
    assert result.code == 0 and FILE_SECRET not in result.text


def test_settings_are_checked_per_type(secrets):
    cases = [
        (("--type", "webhook", "--url", "https://hooks.example.com/x", "--consent"), "not a secret reference"),
        (("--type", "webhook", "--url", "env:HOOK_URL", "--container", "c", "--consent"), "--container: not a setting"),
        (("--type", "adls", "--account", "a"), "need --container"),
        (("--type", "adls", "--account", "a", "--container", "c", "--account-key", "env:A", "--sas-token", "env:B"),
         "only one of"),
        (("--type", "http-enrichment", "--url", "http://api.example.com", "--api-key", "env:K", "--consent"),
         "https://"),
        (("--type", "http-enrichment", "--url", "https://api.example.com/?key=abc", "--api-key", "env:K",
          "--consent"), "query string"),
        (("--type", "http-enrichment", "--url", "https://api.example.com/v1#token=abc", "--api-key", "env:K",
          "--consent"), "a fragment (#...)"),
        (("--type", "dataverse", "--org-url", "https://o.crm.dynamics.com", "--tenant-id", "t", "--client-id", "c"),
         "--client-secret or --certificate"),
    ]  # fmt: skip
    for args, message in cases:
        result = secrets.run("connections", "add", "c1", *args)
        assert result.code == 2 and message in result.err, (args, result.err)


def test_a_url_fragment_is_refused_when_added_or_edited_and_never_stored(secrets):
    add = ["connections", "add", "frag", "--type", "http-enrichment", "--api-key", "env:K", "--consent"]
    result = secrets.run(*add, "--url", "https://api.acme.example/v1#token=Sx9-frag-7781")
    assert result.code == 2 and "--url: the URL carries credentials, a query string or a fragment" in result.err
    assert "Sx9-frag-7781" not in result.text
    assert secrets.run(*add, "--url", "https://api.acme.example/v1").code == 0
    edit = secrets.run("connections", "edit", "frag", "--url", "https://api.acme.example/v2#t=1", "--consent")
    assert edit.code == 2 and "a fragment (#...)" in edit.err
    assert "#" not in secrets.run("connections", "show", "frag").out


def test_an_admin_asking_for_a_connection_that_does_not_exist_is_told_so(secrets):
    secrets.run("connections", "add", "dv-prod", *DATAVERSE, "--client-secret", "env:DV_SECRET")
    result = secrets.run("connections", "show", "dv-prd")
    assert result.code == 2
    assert "no connection named 'dv-prd'; did you mean 'dv-prod'? `ci-pipeline connections list` shows them" in (
        result.err
    )
    assert "shared with you" not in result.err
    assert "did you mean" not in secrets.run("connections", "show", "nosuch").err


def test_edit_replaces_the_credential_and_renames(secrets):
    secrets.run("connections", "add", "dv", *DATAVERSE, "--client-secret", "env:DV_SECRET")
    assert "nothing to change" in secrets.run("connections", "edit", "dv").err
    assert secrets.run("connections", "edit", "dv", "--certificate", "file:secrets/api_key.txt").code == 0
    assert secrets.run("connections", "edit", "dv", "--rename", "dataverse-prod").code == 0
    view = json.loads(secrets.run("connections", "show", "dataverse-prod", "--json").out)
    assert view["secrets"] == [{"setting": "certificate", "reference": "file:secrets/api_key.txt"}]
    edit = [r for r in audit_rows(secrets) if r["action"] == "connections.edit"][0]
    assert json.loads(edit["before"])["secrets"] == [{"setting": "client_secret", "reference": "env:DV_SECRET"}]
    assert json.loads(edit["after"])["secrets"] == [{"setting": "certificate", "reference": "file:secrets/api_key.txt"}]


def governance(project, user: str) -> Governance:
    store = open_store(f"sqlite:///{project.store_file}")
    return Governance(store, user, SecretResolver([project.dir]))


def test_a_connection_in_use_cannot_be_removed_until_detached(secrets):
    secrets.run("connections", "add", "lake2", "--type", "adls", "--account", "acct", "--container", "c")
    secrets.run("connections", "add", "enrich", "--type", "http-enrichment", "--url", "https://api.example.com",
                "--api-key", "env:DV_SECRET", "--consent")  # fmt: skip
    alice = governance(secrets, "alice")
    with pytest.raises(AccessDenied, match="not shared with 'alice'"):
        alice.bind("export", "weekly", "lake2")
    secrets.run("connections", "share", "lake2", "alice")
    alice.bind("export", "weekly", "lake2")
    governance(secrets, "root").bind("enrichment", "brands", "lake2")
    governance(secrets, "root").bind("enrichment", "demographics", "enrich")

    refused = secrets.run("connections", "remove", "lake2")
    assert refused.code == 2
    assert "export 'weekly' (owner alice)" in refused.err and "enrichment 'brands' (owner root)" in refused.err
    assert "--detach" in refused.err

    assert governance(secrets, "alice").bindings() == [
        {"kind": "export", "name": "weekly", "connection": "lake2", "owner": "alice", "active": True,
         "detached_from": None}
    ]  # fmt: skip
    assert governance(secrets, "vera").bindings() == []
    unshared = secrets.run("connections", "unshare", "lake2", "alice")
    assert "export weekly" in unshared.out
    # No longer shared: alice still sees her export, not the connection's name.
    assert governance(secrets, "alice").bindings()[0]["connection"] is None

    removed = secrets.run("connections", "remove", "lake2", "--detach")
    assert removed.code == 0, removed.err
    bindings = {b["name"]: b for b in governance(secrets, "root").bindings()}
    assert bindings["weekly"] == {
        "kind": "export", "name": "weekly", "connection": None, "owner": "alice", "active": False,
        "detached_from": "lake2",
    }  # fmt: skip
    assert bindings["brands"]["active"] is False
    assert bindings["demographics"]["active"] is True
    actions = [r["action"] for r in audit_rows(secrets)]
    assert {"exports.detach", "enrichments.deactivate", "connections.remove"} <= set(actions)
    assert secrets.run("audit", "verify").code == 0


def test_connections_resolve_for_admins_and_for_contributors_they_are_shared_with(secrets):
    secrets.run("connections", "add", "dv", *DATAVERSE, "--client-secret", "env:DV_SECRET")
    assert governance(secrets, "root").resolve_connection("dv")["client_secret"] == ENV_SECRET
    with pytest.raises(AccessDenied):
        governance(secrets, "alice").resolve_connection("dv")
    with pytest.raises(AccessDenied):
        governance(secrets, "vera").resolve_connection("dv")
    secrets.run("connections", "share", "dv", "alice")
    resolved = governance(secrets, "alice").resolve_connection("dv")
    assert resolved["org_url"] == "https://contoso.crm.dynamics.com" and resolved["client_secret"] == ENV_SECRET


def test_an_unknown_connection_is_told_with_its_near_miss_and_not_audited(secrets):
    secrets.run("connections", "add", "dv-prod", *DATAVERSE, "--client-secret", "env:DV_SECRET")
    before = len(audit_rows(secrets))
    with pytest.raises(UserError, match=r"connection 'dv-prd' does not exist; did you mean 'dv-prod'\?"):
        governance(secrets, "root").resolve_connection("dv-prd")
    # A contributor is not told the names of connections it may not use.
    with pytest.raises(UserError, match="does not exist; `ci-pipeline connections list`"):
        governance(secrets, "alice").resolve_connection("dv-prd")
    assert len(audit_rows(secrets)) == before


def test_a_credential_typed_where_a_connection_name_belongs_never_reaches_the_audit_log(secrets):
    pasted = "https://user:sk_live_SUPERSECRET123@api.acme.example/x"
    assert secrets.run("connections", "share", pasted, "bob", user="alice").code == 2
    with pytest.raises(UserError, match="does not exist"):
        governance(secrets, "root").resolve_connection(pasted)
    refused = [r for r in audit_rows(secrets) if r["outcome"] == "refused"]
    assert [r["target"] for r in refused] == ["https://user:***@api.acme.example/x -> bob"]
    assert "SUPERSECRET" not in secrets.store_file.read_bytes().decode("utf-8", "replace")
    assert secrets.run("audit", "verify").code == 0


def test_validate_tells_a_connection_the_configuration_names_that_does_not_exist(secrets, monkeypatch):
    secrets.run("connections", "add", "acme", "--type", "http-enrichment", "--url", "https://api.example.com/v1",
                "--api-key", "file:secrets/api_key.txt", "--consent")  # fmt: skip
    secrets.run("connections", "add", "dv", *DATAVERSE, "--client-secret", "env:DV_SECRET")
    raw = yaml.safe_load(secrets.config.read_text())
    http = {"provider": "http", "params": {"type": "Demographics", "fields": ["Email"], "mapping": {"X": "x"}}}
    raw["enrich"] = {"enrichments": {"demo": {**http, "connection": "acm"}, "ok": {**http, "connection": "acme"}}}
    raw["publish"] = {"sink": {"kind": "dataverse", "connection": "acme"}}
    secrets.config.write_text(yaml.safe_dump(raw))
    before = len(audit_rows(secrets))
    monkeypatch.setenv("CI_PIPELINE_USER", "root")
    assert connection_problems(load_config(secrets.config)) == [
        "publish.sink.connection: connection 'acme' is a http-enrichment connection; this needs a dataverse one",
        "enrich.enrichments.demo.connection: connection 'acm' does not exist (did you mean 'acme'?); an admin adds "
        "it with `ci-pipeline connections add acm --type http-enrichment ...`, or change "
        "enrich.enrichments.demo.connection",
    ]
    # A contributor is told of the connections shared with it only; a viewer, who runs nothing, is not checked.
    monkeypatch.setenv("CI_PIPELINE_USER", "alice")
    told = connection_problems(load_config(secrets.config))
    assert "enrich.enrichments.ok.connection: no connection named 'acme' is shared with 'alice';" in told[2]
    monkeypatch.setenv("CI_PIPELINE_USER", "vera")
    assert connection_problems(load_config(secrets.config)) == []
    assert len(audit_rows(secrets)) == before


def test_connections_are_shared_with_contributors_only(secrets):
    secrets.run("connections", "add", "dv", *DATAVERSE, "--client-secret", "env:DV_SECRET")
    for user in ("vera", "stranger"):
        result = secrets.run("connections", "share", "dv", user)
        assert result.code == 2 and "roles grant" in result.err


def test_one_dataverse_environment_per_pipeline_environment(secrets):
    secrets.run("connections", "add", "dv", *DATAVERSE, "--client-secret", "env:DV_SECRET")
    secrets.run("connections", "add", "dv2", "--type", "dataverse", "--org-url", "https://fabrikam.crm.dynamics.com",
                "--tenant-id", "t", "--client-id", "c", "--client-secret", "env:DV_SECRET")  # fmt: skip
    assert secrets.run("connections", "attach-dataverse", "dv").code == 0
    assert secrets.run("connections", "attach-dataverse", "dv").code == 0  # the same one again: nothing changes
    second = secrets.run("connections", "attach-dataverse", "dv2")
    assert second.code == 2
    assert "already attached to another environment" in second.err and "detach-dataverse" in second.err
    assert secrets.run("connections", "attach-dataverse", "dv2", user="alice").code == 2
    # The attached connection is in use: it cannot be pointed elsewhere or removed while attached.
    moved = secrets.run("connections", "edit", "dv", "--org-url", "https://other.crm.dynamics.com")
    assert moved.code == 2 and "detach-dataverse" in moved.err
    assert "Dataverse attachment" in secrets.run("connections", "remove", "dv").err
    assert secrets.run("connections", "edit", "dv", "--rename", "dv-prod").code == 0
    assert governance(secrets, "vera").dataverse_attachment()["connection"] == "dv-prod"
    assert "contoso" in secrets.run("connections", "detach-dataverse").out
    assert secrets.run("connections", "attach-dataverse", "dv2").code == 0
    assert governance(secrets, "vera").dataverse_attachment()["org_url"] == "https://fabrikam.crm.dynamics.com"
    removed = secrets.run("connections", "remove", "dv2", "--detach")
    assert removed.code == 0 and "Dataverse attachment https://fabrikam" in removed.out
    assert governance(secrets, "vera").dataverse_attachment() is None


def test_sql_shaped_names_are_stored_as_given_and_harm_nothing(secrets):
    evil = "'; DROP TABLE x; --"
    evil2 = 'Robert"); DROP TABLE connections; --'
    assert secrets.run("roles", "grant", evil2, "contributor").code == 0
    assert secrets.run("connections", "add", evil, *DATAVERSE, "--client-secret", "env:DV_SECRET").code == 0
    assert secrets.run("connections", "share", evil, evil2).code == 0
    listed = json.loads(secrets.run("connections", "list", "--json", user=evil2).out)
    assert listed == [{"name": evil, "type": "dataverse"}]
    assert secrets.run("connections", "list", user=evil).code == 2  # a name with no role, not an injection
    with sqlite3.connect(secrets.store_file) as db:
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        assert {"connections", "principals", "audit_log", "data_sources"} <= tables
        assert db.execute("SELECT name FROM connections").fetchall() == [(evil,)]
    assert secrets.run("audit", "verify").code == 0


def test_control_characters_in_names_are_refused(secrets):
    result = secrets.run("connections", "add", "bad\x1b[31mname", *DATAVERSE, "--client-secret", "env:DV_SECRET")
    assert result.code == 2 and "control characters" in result.err


def test_a_refused_edit_changes_nothing(secrets):
    secrets.run("connections", "add", "dv", *DATAVERSE, "--client-secret", "env:DV_SECRET")
    secrets.run("connections", "add", "dv2", *DATAVERSE, "--client-secret", "env:DV_SECRET")
    rows = len(audit_rows(secrets))
    result = secrets.run("connections", "edit", "dv", "--client-id", "changed", "--rename", "dv2")
    assert result.code == 2 and "a connection named 'dv2' exists" in result.err
    assert (
        json.loads(secrets.run("connections", "show", "dv", "--json").out)["fields"]["client_id"] == "client-guid-5678"
    )
    assert len(audit_rows(secrets)) == rows  # a mistake, not an access attempt: nothing to audit


def test_json_check_exits_non_zero_when_a_reference_does_not_resolve(secrets, monkeypatch):
    secrets.run("connections", "add", "dv", *DATAVERSE, "--client-secret", "env:DV_SECRET")
    monkeypatch.delenv("DV_SECRET")
    result = secrets.run("connections", "show", "dv", "--json", "--check")
    assert result.code == 1
    assert json.loads(result.out)["check"][0]["setting"] == "client_secret"


def test_a_key_with_a_line_break_around_it_is_stripped_and_one_an_http_header_cannot_carry_is_told(
    secrets, monkeypatch
):
    """`export K=$(cat key.txt)` brings a line break: stripped as a file's is. A key with a letter outside ASCII
    or a line break inside cannot be sent in a header: `--check` says so now, not the run later."""
    add = ("connections", "add", "enrich", "--type", "http-enrichment", "--url", "https://api.example.com/v1")
    secrets.run(*add, "--api-key", "env:ENRICH_KEY", "--consent")
    monkeypatch.setenv("ENRICH_KEY", "k-Value-1234\n")
    assert re.search(r"check api_key +ok", secrets.run("connections", "show", "enrich", "--check").out)
    monkeypatch.setenv("ENRICH_KEY", "k-Valué-1234")
    result = secrets.run("connections", "show", "enrich", "--check")
    assert result.code == 1
    assert "holds a character an HTTP header cannot carry at position 7" in result.out
    assert "k-Valu" not in result.out
    monkeypatch.setenv("ENRICH_KEY", "k-Value\n-1234")
    result = secrets.run("connections", "show", "enrich", "--check")
    assert result.code == 1 and "holds a control character (a line break or tab) at position 8" in result.out


def test_check_tells_a_connection_string_that_names_no_account(secrets, monkeypatch):
    add = ("connections", "add", "box", "--type", "adls", "--account", "acct", "--container", "c")
    secrets.run(*add, "--connection-string", "env:BOX_CONNECTION")
    monkeypatch.setenv("BOX_CONNECTION", "sv=2022-11-02&sp=rw&sig=NotAConnStr0123")
    result = secrets.run("connections", "show", "box", "--check")
    assert result.code == 1 and "names neither AccountName nor BlobEndpoint" in result.out
    assert "NotAConnStr0123" not in result.out
