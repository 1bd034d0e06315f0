"""Runs are governed: the connections a run needs are resolved as the user who launched it, before data moves.

Real pieces throughout: the `ci-pipeline` command line, a Dagster instance on disk (its storage searched for the
secret), the loopback Dataverse Web API server as the sink, and the governance store of the project.
"""

from __future__ import annotations

import pytest
import yaml

from ci_pipeline.cli import main
from ci_pipeline.dataverse import webapi
from ci_pipeline.dataverse.loopback import LoopbackDataverse
from ci_pipeline.governance.runtime import LAUNCHED_BY_TAG, run_actor
from ci_pipeline_tests.publish.test_webapi import ServerCredential

SECRET = "DataverseClientSecret0042xyz"
MARKERS = "msdynci_pipelineattachments"


class Project:
    """A small project (one source owned by alice) whose sink is a governed Dataverse connection."""

    def __init__(self, folder, capfd, monkeypatch, server):
        self.dir, self.capfd, self.monkeypatch, self.server = folder, capfd, monkeypatch, server
        (folder / "crm").mkdir(parents=True)
        (folder / "crm" / "contacts.csv").write_text("contact_id,email\nc1,ann@example.com\nc2,bob@example.com\n")
        self.config = folder / "ci_pipeline.yaml"
        self.write({"kind": "dataverse", "connection": "dv-prod", "dataverse": {"max_retries": 1}})
        #: The connections the sink was built from (their secret resolved), as the credential factory saw them.
        self.used: list[dict] = []

        def factory(connection):
            self.used.append(dict(connection))
            return lambda: ServerCredential(server)

        monkeypatch.setattr(webapi, "connection_credential_factory", factory)

    def write(self, sink: dict, **extra) -> None:
        config = {
            "lake": {"url": "lake"},
            "sources": {
                "crm": {
                    "owner": "alice",
                    "tables": {"contacts": {"format": "csv", "path": "crm/contacts.csv", "primary_key": "contact_id"}},
                }
            },
            "publish": {"sink": sink},
            **extra,
        }
        self.config.write_text(yaml.safe_dump(config))

    def cli(self, *args: str, user: str = "root") -> tuple[int, str]:
        self.capfd.readouterr()
        code = main(["--config", str(self.config), *args, "--as", user])
        out, err = self.capfd.readouterr()
        return code, out + err

    def run(self, user: str, *args: str) -> tuple[int, str]:
        self.monkeypatch.setenv("CI_PIPELINE_USER", user)
        self.capfd.readouterr()
        code = main(["--config", str(self.config), "run", *args])
        self.out, self.err = self.capfd.readouterr()
        return code, self.out + self.err

    @property
    def ingested(self) -> bool:
        return (self.dir / "lake" / "ci_pipeline" / "crm").exists()


@pytest.fixture
def governed(tmp_path, capfd, monkeypatch, dagster_home):
    """Root is admin, alice a contributor; dv-prod (the loopback Dataverse) is shared with alice."""
    for name in ("CI_PIPELINE_USER", "CI_PIPELINE_METADATA_URL", "CI_PIPELINE_SECRET_ROOTS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("CI_DV_SECRET", SECRET)
    with LoopbackDataverse() as server:
        project = Project(tmp_path / "project", capfd, monkeypatch, server)
        assert project.cli("init")[0] == 0
        assert project.cli("roles", "grant", "alice", "contributor")[0] == 0
        assert project.cli("roles", "grant", "vera", "viewer")[0] == 0
        add = ["connections", "add", "dv-prod", "--type", "dataverse", "--org-url", server.org_url]
        add += ["--tenant-id", "t1", "--client-id", "c1", "--client-secret", "env:CI_DV_SECRET"]
        code, text = project.cli(*add)
        assert code == 0, text
        assert project.cli("connections", "share", "dv-prod", "alice")[0] == 0
        yield project


def stored_files_with(home, value: str) -> list[str]:
    return [str(p) for p in home.rglob("*") if p.is_file() and value.encode() in p.read_bytes()]


def test_a_contributor_with_the_connection_shared_publishes_through_it_and_the_secret_stays_out(governed, dagster_home):
    code, text = governed.run("alice")
    assert code == 0, text
    # The sink used the connection's URL and its secret, resolved through the governance layer as alice.
    assert governed.used and governed.used[0]["client_secret"] == SECRET
    assert governed.used[0]["org_url"] == governed.server.org_url
    assert governed.server.rows("msdynci_customerprofiles") == {}
    assert len(governed.server.records("PATCH", MARKERS)) == 1
    # The marker names this environment and the lake's storage (a local folder here).
    (marker,) = governed.server.rows(MARKERS).values()
    assert marker["msdynci_storageaccount"] == "file://" + (governed.dir / "lake").resolve().as_posix()
    # The secret is in no output, no file of the Dagster instance (run and event storage, compute logs).
    assert SECRET not in text
    assert stored_files_with(dagster_home, SECRET) == []
    # The capacity report is recorded for the Dataverse environment and shown with the connection.
    code, shown = governed.cli("connections", "show", "dv-prod", "--json")
    assert code == 0 and '"capacity"' in shown and '"published_rows": 0' in shown
    assert SECRET not in shown


def summary(out: str) -> str:
    """The summary `ci-pipeline run` prints at the end (after the progress lines)."""
    return out[out.index("\nasset ") :]


def test_an_unshared_connection_fails_the_run_before_ingest_writes_anything(governed, dagster_home):
    assert governed.cli("connections", "unshare", "dv-prod", "alice")[0] == 0
    code, text = governed.run("alice")
    assert code == 1
    assert "publish.sink.connection: connection 'dv-prod' is not shared with 'alice'" in text
    assert "ci-pipeline connections share dv-prod alice" in text
    # The summary says why (a whole run is refused before its first step), and the console holds no stack trace.
    reason = "governance: publish.sink.connection: connection 'dv-prod' is not shared with 'alice'"
    assert f"FAILED before any step started:\n  {reason}" in summary(governed.out)
    # Said once while the run goes (the run's failure repeats its resources'), once in the summary.
    assert text.count("is not shared with 'alice'") == 2, text
    assert "Stack Trace" not in governed.err and 'File "' not in governed.err, governed.err
    assert not governed.ingested
    assert governed.used == []
    assert SECRET not in text and stored_files_with(dagster_home, SECRET) == []
    code, log = governed.cli("audit", "list", "--json")
    assert '"outcome": "refused"' in log and "connections.use" in log


def test_a_refused_one_asset_run_says_why_at_that_asset_in_its_summary_without_a_stack_trace(governed):
    assert governed.cli("connections", "unshare", "dv-prod", "alice")[0] == 0
    code, _ = governed.run("alice", "--select", "publish/sink_customer_profile")
    assert code == 1
    reason = "governance: publish.sink.connection: connection 'dv-prod' is not shared with 'alice'"
    where = "FAILED publish/sink_customer_profile (step publish__sink_customer_profile):"
    assert f"{where}\n  {reason}" in summary(governed.out)
    assert "Stack Trace" not in governed.err and 'File "' not in governed.err, governed.err
    assert reason in governed.err


def test_a_secret_that_cannot_be_read_fails_the_run_with_the_reason_in_its_summary(governed, monkeypatch):
    monkeypatch.delenv("CI_DV_SECRET")
    code, _ = governed.run("root")
    assert code == 1
    reason = "connection 'dv-prod' client_secret: environment variable CI_DV_SECRET is not set"
    assert reason in summary(governed.out)
    assert "Stack Trace" not in governed.err and 'File "' not in governed.err, governed.err
    assert not governed.ingested


def test_a_removed_connection_fails_the_run_naming_it_and_the_fix(governed):
    assert governed.cli("connections", "remove", "dv-prod")[0] == 0
    code, text = governed.run("root")
    assert code == 1
    assert "publish.sink.connection: connection 'dv-prod' does not exist (removed?)" in text
    assert "ci-pipeline connections add dv-prod --type dataverse" in text
    assert not governed.ingested


@pytest.mark.parametrize(
    ("user", "reason"),
    [("mallory", "'mallory' has no role in this environment"), ("vera", "runs.launch needs the admin or contributor")],
)
def test_a_launcher_without_rights_is_refused_before_ingest_and_audited(governed, user, reason):
    code, text = governed.run(user)
    assert code == 1 and reason in text
    assert not governed.ingested
    assert '"outcome": "refused"' in governed.cli("audit", "list", "--json")[1]


def test_a_contributor_refreshes_only_the_sources_it_owns(governed):
    assert governed.cli("sources", "set-owner", "crm", "root")[0] == 0
    code, text = governed.run("alice", "--job", "ingest_crm")
    assert code == 1 and "source 'crm' is managed by 'root'; only they or an admin may refresh it: ask them" in text
    assert "ci-pipeline run --job ingest_<your source>" in text
    assert not governed.ingested
    # A run that ingests nothing of root's is alice's to launch.
    code, text = governed.run("alice", "--select", "group:publish")
    assert code == 0, text


def test_what_a_run_needs_follows_its_assets(governed):
    import dagster as dg

    from ci_pipeline.config import load_config
    from ci_pipeline.defs.resources import run_needs

    config = load_config(governed.config)
    needs = run_needs(config, {dg.AssetKey(["crm", "contacts"]), dg.AssetKey(["unify", "customer_profile"])})
    assert needs.sources == {"crm"} and not needs.sink and not needs.exports
    assert run_needs(config, {dg.AssetKey(["publish", "sink_customer_profile"])}).sink
    everything = run_needs(config, None)
    assert everything.sources == {"crm"} and everything.sink


def test_a_detached_export_is_skipped_not_failed(governed):
    assert (
        governed.cli("connections", "add", "lake2", "--type", "adls", "--account", "acct", "--container", "c")[0] == 0
    )
    assert governed.cli("connections", "share", "lake2", "alice")[0] == 0
    code, text = governed.cli("exports", "add", "weekly", "--connection", "lake2", user="alice")
    assert code == 0, text
    governed.write(
        {"kind": "sqlite"},
        publish={"sink": {"kind": "sqlite"}, "exports": [{"name": "weekly", "connection": "lake2"}]},
    )
    assert governed.cli("connections", "remove", "lake2", "--detach")[0] == 0
    code, text = governed.run("alice")
    assert code == 0, text
    assert "skipped: export 'weekly' is detached (from lake2)" in text
    assert "ci-pipeline exports attach weekly" in text
    # Not materialized in this run (the summary lists materialized assets), and nothing was written.
    assert "publish/export_weekly" not in text.split("skipped:")[0].split("succeeded in")[-1]
    assert "done  publish/export_weekly" not in text
    assert not (governed.dir / "lake" / "exports").exists()


def test_a_run_needing_a_governed_connection_in_an_uninitialised_environment_says_to_run_init(
    tmp_path, capfd, monkeypatch, dagster_home
):
    with LoopbackDataverse() as server:
        project = Project(tmp_path, capfd, monkeypatch, server)
        code, text = project.run("alice")
    assert code == 1
    assert "this environment is not initialised" in text and "publish.sink.connection 'dv-prod'" in text
    assert not project.ingested


def test_who_a_run_acts_as():
    assert run_actor({LAUNCHED_BY_TAG: "alice"}, "svc") == ("alice", "launched by")
    assert run_actor({"dagster/schedule_name": "nightly"}, "svc:ci")[0] == "svc:ci"
    assert run_actor({"dagster/sensor_name": "new_files"}, None)[0] is None


def test_schedules_and_sensors_act_as_the_service_principal(governed):
    from ci_pipeline.config import load_config
    from ci_pipeline.errors import UserError
    from ci_pipeline.governance.runtime import RunNeeds, authorise_run

    nightly = {"dagster/schedule_name": "nightly"}
    needs = RunNeeds(sources=frozenset({"crm"}), sink=True)
    sink = {"kind": "dataverse", "connection": "dv-prod"}
    governed.write(sink, governance={"service_principal": None})
    with pytest.raises(UserError, match="governance.service_principal is not set"):
        authorise_run(load_config(governed.config), nightly, needs, "job x, run y")
    # The default service principal got the contributor role from init; it uses only what is shared with it.
    governed.write(sink)
    config = load_config(governed.config)
    with pytest.raises(UserError, match="connection 'dv-prod' is not shared with 'ci-pipeline-scheduler'"):
        authorise_run(config, nightly, needs, "job x, run y")
    assert governed.cli("connections", "share", "dv-prod", "ci-pipeline-scheduler")[0] == 0
    # The system refresh refreshes every source, alice's included.
    access = authorise_run(config, nightly, needs, "job x, run y")
    assert access.actor == "ci-pipeline-scheduler"
    assert access.connection("publish.sink.connection")["client_secret"] == SECRET
    assert SECRET not in repr(access)


def test_an_ungoverned_environment_runs_as_before(tmp_path, capfd, monkeypatch, dagster_home):
    with LoopbackDataverse() as server:
        project = Project(tmp_path, capfd, monkeypatch, server)
        project.write({"kind": "sqlite"})
        code, text = project.run("anyone", "--job", "ingest_crm")
    assert code == 0, text
    assert not (tmp_path / "lake" / "_governance").exists()


def test_a_second_environment_publishing_to_the_same_sink_is_refused_until_the_first_detaches(
    tmp_path, capfd, monkeypatch, dagster_home
):
    monkeypatch.delenv("CI_PIPELINE_METADATA_URL", raising=False)
    shared = {"kind": "sqlite", "path": str(tmp_path / "shared.sqlite")}
    first, second = (Project(tmp_path / name, capfd, monkeypatch, None) for name in ("first", "second"))
    for project in (first, second):
        project.write(shared, **{"publish": {"sink": shared, "allow_outside_project": True}})
        assert project.cli("init")[0] == 0
    code, text = first.run("root")
    assert code == 0, text
    code, text = second.run("root")
    assert code == 1 and "is already attached to another environment" in text
    code, text = first.cli("connections", "detach-dataverse")
    assert code == 0 and f"Removed this environment's attachment marker from {tmp_path / 'shared.sqlite'}" in text
    code, text = second.run("root")
    assert code == 0, text


def test_a_sink_connection_other_than_the_attached_dataverse_environment_is_refused(governed):
    assert governed.cli("connections", "attach-dataverse", "dv-prod")[0] == 0
    add = ["connections", "add", "dv-other", "--type", "dataverse", "--org-url", "https://fabrikam.crm.dynamics.com"]
    assert governed.cli(*add, "--tenant-id", "t", "--client-id", "c", "--client-secret", "env:CI_DV_SECRET")[0] == 0
    governed.write({"kind": "dataverse", "connection": "dv-other"})
    code, text = governed.run("root")
    assert code == 1 and "this environment is already attached to another environment" in text
    assert "ci-pipeline connections detach-dataverse" in text
    assert not governed.ingested and governed.used == []


def test_an_ungoverned_run_needs_no_user_name(tmp_path, capfd, monkeypatch):
    import getpass

    from ci_pipeline.config import load_config
    from ci_pipeline.governance.runtime import RunNeeds, authorise_run

    def nameless():
        raise KeyError("uid 1000770000 has no name")  # a container started with an arbitrary user id

    monkeypatch.delenv("CI_PIPELINE_USER", raising=False)
    monkeypatch.delenv("CI_PIPELINE_METADATA_URL", raising=False)
    monkeypatch.setattr(getpass, "getuser", nameless)
    project = Project(tmp_path, capfd, monkeypatch, None)
    project.write({"kind": "sqlite"})
    access = authorise_run(load_config(project.config), {}, RunNeeds(sources=frozenset({"crm"}), sink=True), "x")
    assert access.governed is False and access.actor is None
