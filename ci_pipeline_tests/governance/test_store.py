"""The metadata store: where it lives, its migrations, and the append-only, hash-chained audit log."""

from __future__ import annotations

import sqlite3

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import text

from ci_pipeline.config import load_config
from ci_pipeline.errors import UserError
from ci_pipeline.governance import audit, metadata_url, open_store
from ci_pipeline.governance.models import Base
from ci_pipeline.governance.store import MetadataStore

SOURCES = "sources:\n  crm:\n    owner: a\n    tables:\n      t: {format: csv, path: t.csv, primary_key: id}\n"


def test_a_fresh_database_is_migrated_to_the_newest_version_matching_the_models(tmp_path):
    store = open_store(f"sqlite:///{tmp_path / 'm.sqlite'}")
    assert store.revision() == "0003"
    with store.engine.connect() as connection:
        diff = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    assert diff == []
    # Opening again is a no-op.
    open_store(f"sqlite:///{tmp_path / 'm.sqlite'}")
    assert store.revision() == "0003"


def test_a_database_at_the_previous_version_is_upgraded_keeping_its_rows(tmp_path):
    url = f"sqlite:///{tmp_path / 'm.sqlite'}"
    old = MetadataStore(url)
    old.upgrade("0001")
    assert old.revision() == "0001"
    with old.session() as session:
        audit.append(session, "root", "environment.init", "environment", after={"admin": "root"})
        session.execute(text("INSERT INTO principals (name, created_at) VALUES ('root', '2026-01-01 00:00:00')"))
    old.close()

    store = open_store(url)
    assert store.revision() == "0003"
    with store.session() as session:
        assert session.execute(text("SELECT name FROM principals")).scalars().all() == ["root"]
        assert session.execute(text("SELECT count(*) FROM consents")).scalar() == 0
        assert audit.verify_chain(session).ok
        audit.append(session, "root", "roles.grant", "alice")
    with store.session() as session:
        report = audit.verify_chain(session)
    assert report.ok and report.rows == 2


def test_a_database_from_a_newer_version_is_refused_with_a_clear_message(tmp_path):
    url = f"sqlite:///{tmp_path / 'm.sqlite'}"
    open_store(url).close()
    with sqlite3.connect(tmp_path / "m.sqlite") as db:
        db.execute("UPDATE alembic_version SET version_num = '0099'")
    with pytest.raises(UserError, match="newer ci_pipeline"):
        open_store(url)


def test_the_store_lives_in_the_local_lake_unless_a_url_is_configured(tmp_path, monkeypatch):
    monkeypatch.delenv("CI_PIPELINE_METADATA_URL", raising=False)
    (tmp_path / "c.yaml").write_text("lake: {url: data/lake}\n" + SOURCES)
    config = load_config(tmp_path / "c.yaml")
    assert metadata_url(config) == f"sqlite:///{tmp_path / 'data' / 'lake' / '_governance' / 'metadata.sqlite'}"
    monkeypatch.setenv("CI_PIPELINE_METADATA_URL", "sqlite:////srv/elsewhere.sqlite")
    assert metadata_url(config) == "sqlite:////srv/elsewhere.sqlite"


def test_a_remote_lake_needs_an_explicit_store_url(tmp_path, monkeypatch):
    monkeypatch.delenv("CI_PIPELINE_METADATA_URL", raising=False)
    (tmp_path / "c.yaml").write_text("lake: {url: 'abfss://lake@acct.dfs.core.windows.net/x'}\n" + SOURCES)
    with pytest.raises(UserError, match="CI_PIPELINE_METADATA_URL"):
        metadata_url(load_config(tmp_path / "c.yaml"))


def test_a_store_that_cannot_be_opened_is_a_clear_error(tmp_path):
    (tmp_path / "a-file").write_text("")
    with pytest.raises(UserError, match="cannot create its folder"):
        open_store(f"sqlite:///{tmp_path / 'a-file' / 'm.sqlite'}")
    with pytest.raises(UserError, match="cannot open it"):
        open_store(f"sqlite:///{tmp_path}")  # a folder, not a database file


def test_an_unreachable_postgres_is_a_clear_error_without_its_password():
    from ci_pipeline.redact import redact

    # Nothing listens on port 1: the driver's refusal is reported, the password is not.
    with pytest.raises(UserError, match="cannot open it") as raised:
        open_store("postgresql+psycopg2://ci:Pa55-word-in-url@127.0.0.1:1/ci_governance")
    assert "Pa55-word-in-url" not in str(raised.value)
    assert "127.0.0.1" in str(raised.value)
    assert redact("connecting with Pa55-word-in-url") == "connecting with ***"


def test_a_malformed_store_url_is_named(tmp_path):
    with pytest.raises(UserError, match="not a database URL"):
        MetadataStore("not a url at all")


def _chain(store, n):
    with store.session() as session:
        for i in range(n):
            audit.append(session, f"user{i}", "roles.grant", f"target{i}", before={"i": i}, after={"i": i + 1})


def test_the_database_refuses_to_change_or_delete_audit_rows(tmp_path):
    store = open_store(f"sqlite:///{tmp_path / 'm.sqlite'}")
    _chain(store, 3)
    with sqlite3.connect(tmp_path / "m.sqlite") as db:
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            db.execute("UPDATE audit_log SET actor = 'mallory' WHERE id = 2")
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            db.execute("DELETE FROM audit_log WHERE id = 2")


@pytest.mark.parametrize(
    ("tamper", "broken"),
    [
        ("UPDATE audit_log SET actor = 'mallory' WHERE id = 3", 3),
        ("UPDATE audit_log SET after = '{\"i\": 99}' WHERE id = 2", 2),
        ("DELETE FROM audit_log WHERE id = 2", 3),
        ("UPDATE audit_log SET at = '2020-01-01 00:00:00' WHERE id = 4", 4),
    ],
)
def test_verify_finds_the_first_tampered_row(tmp_path, tamper, broken):
    store = open_store(f"sqlite:///{tmp_path / 'm.sqlite'}")
    _chain(store, 5)
    with store.session() as session:
        assert audit.verify_chain(session).ok
    # Someone with write access to the file can drop the triggers first; the chain still shows the change.
    with sqlite3.connect(tmp_path / "m.sqlite") as db:
        db.execute("DROP TRIGGER audit_log_no_update")
        db.execute("DROP TRIGGER audit_log_no_delete")
        db.execute(tamper)
    with store.session() as session:
        report = audit.verify_chain(session)
    assert not report.ok
    assert report.broken_id == broken


def test_a_second_writer_cannot_fork_the_chain(tmp_path):
    store = open_store(f"sqlite:///{tmp_path / 'm.sqlite'}")
    _chain(store, 1)
    with sqlite3.connect(tmp_path / "m.sqlite") as db, pytest.raises(sqlite3.IntegrityError, match="UNIQUE"):
        db.execute(
            "INSERT INTO audit_log (id, at, actor, action, target, outcome, prev_hash, hash) "
            "VALUES (5, '2026-01-01', 'x', 'y', 'z', 'ok', ?, 'h')",
            (audit.GENESIS,),
        )


def test_concurrent_writers_keep_one_unbroken_chain(tmp_path):
    import threading

    url = f"sqlite:///{tmp_path / 'm.sqlite'}"
    open_store(url).close()
    errors = []

    def writer(n: int) -> None:
        store = MetadataStore(url)  # one engine per writer, as separate processes would have
        try:
            for i in range(15):
                with store.session() as session:
                    audit.append(session, f"writer{n}", "roles.grant", f"t{i}")
        except Exception as exc:  # collected: an assertion in a thread would not fail the test
            errors.append(exc)
        finally:
            store.close()

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    with open_store(url).session() as session:
        report = audit.verify_chain(session)
    assert report.ok and report.rows == 60
