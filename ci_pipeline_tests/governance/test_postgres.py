"""The metadata store on a real PostgreSQL server: migrations, the append-only audit log, concurrent writers."""

from __future__ import annotations

import threading

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from ci_pipeline.governance import AccessDenied, Governance, SecretResolver, audit, open_store
from ci_pipeline.governance.models import Base
from ci_pipeline.governance.store import MetadataStore
from ci_pipeline_tests.governance.postgres_server import postgres_server

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def postgres_url():
    with postgres_server() as url:
        yield url


@pytest.fixture
def store(postgres_url):
    store = open_store(postgres_url)
    yield store
    # Each test starts from an empty schema; the triggers stop row deletes, not dropping the tables.
    with store.engine.begin() as connection:
        connection.execute(text("DROP SCHEMA public CASCADE; CREATE SCHEMA public"))
    store.close()


def test_migrations_build_the_models_schema_on_postgres(store):
    assert store.revision() == "0003"
    with store.engine.connect() as connection:
        assert compare_metadata(MigrationContext.configure(connection), Base.metadata) == []


def test_the_audit_log_is_append_only_and_chained_on_postgres(store):
    with store.session() as session:
        audit.append(session, "root", "environment.init", "environment", after={"admin": "root"})
        audit.append(session, "root", "roles.grant", "alice", after={"role": "contributor"})
    with pytest.raises(DBAPIError, match="append-only"), store.session() as session:
        session.execute(text("UPDATE audit_log SET actor = 'mallory'"))
    with pytest.raises(DBAPIError, match="append-only"), store.session() as session:
        session.execute(text("DELETE FROM audit_log"))
    with store.session() as session:
        assert audit.verify_chain(session).ok
        session.execute(text("ALTER TABLE audit_log DISABLE TRIGGER audit_log_append_only"))
        session.execute(text("UPDATE audit_log SET target = 'bob' WHERE id = 2"))
    with store.session() as session:
        assert audit.verify_chain(session).broken_id == 2


def test_concurrent_writers_keep_one_chain_on_postgres(store, postgres_url):
    errors = []

    def writer(n: int) -> None:
        own = MetadataStore(postgres_url)
        try:
            for i in range(10):
                with own.session() as session:
                    audit.append(session, f"writer{n}", "roles.grant", f"t{i}")
        except Exception as exc:  # collected: an assertion in a thread would not fail the test
            errors.append(exc)
        finally:
            own.close()

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    with store.session() as session:
        report = audit.verify_chain(session)
    assert report.ok and report.rows == 40


def test_the_rules_hold_on_postgres(store, tmp_path):
    root = Governance(store, "root", SecretResolver([tmp_path]))
    alice = Governance(store, "alice", SecretResolver([tmp_path]))
    root.init({"crm": "alice", "shop": "'; DROP TABLE x; --"})
    root.grant_role("alice", "contributor")
    root.add_connection("lake2", "adls", {"account": "a", "container": "c"}, consent=False)
    with pytest.raises(AccessDenied):
        alice.share("lake2", "alice")
    root.share("lake2", "alice")
    assert alice.connections() == [{"name": "lake2", "type": "adls"}]
    alice.bind("export", "weekly", "lake2")
    assert root.remove_connection("lake2", detach=True) == ["export weekly"]
    assert [s["name"] for s in alice.sources({"crm": "alice"})["mine"]] == ["crm"]
    assert root.verify_audit().ok


def test_the_documented_instance_storage_block_opens_a_dagster_instance_on_postgres(postgres_url, tmp_path):
    """deploy/dagster-k8s.yaml's storage block (as docs/operations.md gives it) on a real server: Dagster creates its
    tables and keeps a run. A plain postgresql:// scheme fails: SQLAlchemy 2.1 reads it as psycopg 3."""
    from urllib.parse import urlparse

    import dagster as dg
    import yaml

    from ci_pipeline_tests.conftest import ROOT

    storage = yaml.safe_load((ROOT / "deploy" / "dagster-k8s.yaml").read_text())["storage"]
    where = urlparse(postgres_url)
    db = storage["postgres"]["postgres_db"]
    db.update(hostname=where.hostname, port=where.port, username=where.username, db_name=where.path.strip("/"))
    db.pop("password", None)
    db.pop("params", None)  # sslmode: the loopback server speaks no TLS
    (tmp_path / "dagster.yaml").write_text(yaml.safe_dump({"storage": storage, "telemetry": {"enabled": False}}))
    with dg.DagsterInstance.from_config(str(tmp_path)) as instance:

        @dg.asset
        def one() -> int:
            return 1

        assert dg.materialize([one], instance=instance).success
        assert len(instance.get_runs()) == 1
