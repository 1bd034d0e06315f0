"""The environment metadata store: a SQLAlchemy database, SQLite by default, brought to the newest schema on open.

Where it lives, in order:

1. ``$CI_PIPELINE_METADATA_URL``: any SQLAlchemy URL (``sqlite:////srv/ci/metadata.sqlite``,
   ``postgresql+psycopg2://user@host/ci_governance``; the password belongs in the driver's own environment, such as
   ``PGPASSWORD``, never in the URL);
2. for a lake in a local folder: ``<lake>/_governance/metadata.sqlite``.

A lake in Azure has no local folder, and a silently chosen local file would let whoever runs ``init`` on a fresh
machine become administrator; so a remote lake requires the URL.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import ArgumentError, OperationalError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from ci_pipeline.errors import UserError
from ci_pipeline.redact import redact
from ci_pipeline.redact import register as register_secret

METADATA_URL_ENV = "CI_PIPELINE_METADATA_URL"
MIGRATIONS = Path(__file__).resolve().parent / "migrations"
#: The folder inside a local lake that holds the SQLite database.
LOCAL_FOLDER = "_governance"


def metadata_url(config) -> str:
    """The SQLAlchemy URL of the environment's metadata store (see the module docstring for the order)."""
    explicit = os.environ.get(METADATA_URL_ENV, "").strip()
    if explicit:
        return explicit
    lake_url = config.lake.url
    if lake_url.startswith("file://"):
        lake_url = lake_url.removeprefix("file://")
    elif "://" in lake_url:
        raise UserError(
            f"{config.path}: lake.url is not a local folder, so the governance metadata store has no default place; "
            f"set {METADATA_URL_ENV} to a database URL (postgresql+psycopg2://host/db or sqlite:////path/file.sqlite)"
        )
    lake = Path(lake_url).expanduser()
    if not lake.is_absolute():
        lake = config.base_dir / lake
    return f"sqlite:///{(lake.resolve() / LOCAL_FOLDER / 'metadata.sqlite').as_posix()}"


def _sqlite_pragmas(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record):
        # The driver's own transaction handling is turned off so that BEGIN IMMEDIATE below takes the write lock
        # at the start: two processes can then never read the same audit head and fork the chain.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection):
        connection.exec_driver_sql("BEGIN IMMEDIATE")


class MetadataStore:
    """An open metadata store: an engine, a session factory and its migrations."""

    def __init__(self, url: str):
        try:
            parsed = make_url(url)
        except ArgumentError:
            raise UserError(
                f"{METADATA_URL_ENV}: not a database URL; use sqlite:////path/file.sqlite or "
                "postgresql+psycopg2://host/database"
            ) from None
        self.url = parsed
        if parsed.password:
            # A URL given with its password must not print it anywhere later (driver errors quote URLs).
            register_secret(parsed.password)
        if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
            folder = Path(parsed.database).parent
            try:
                folder.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise UserError(
                    f"metadata store {parsed}: cannot create its folder {folder} ({exc.strerror}); fix the path or "
                    f"set {METADATA_URL_ENV}"
                ) from None
        try:
            self.engine = create_engine(parsed)
        except (ImportError, SQLAlchemyError) as exc:
            raise UserError(
                f"metadata store {parsed.render_as_string(hide_password=True)}: cannot open it "
                f"({redact(exc)}); install the database driver or fix the URL"
            ) from None
        if parsed.get_backend_name() == "sqlite":
            _sqlite_pragmas(self.engine)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    def __repr__(self) -> str:
        return f"MetadataStore({self.url.render_as_string(hide_password=True)})"

    def _alembic(self, connection):
        from alembic.config import Config

        cfg = Config()
        cfg.set_main_option("script_location", str(MIGRATIONS))
        cfg.attributes["connection"] = connection
        return cfg

    def upgrade(self, revision: str = "head") -> None:
        """Apply every migration up to ``revision`` that the database does not have yet."""
        from alembic import command
        from alembic.util.exc import CommandError

        try:
            connection = self.engine.connect()
        except OperationalError as exc:
            reason = redact(str(exc.orig).splitlines()[0] if exc.orig else exc)
            raise UserError(
                f"metadata store {self.url.render_as_string(hide_password=True)}: cannot open it ({reason}); check "
                f"the path or the server, or set {METADATA_URL_ENV}"
            ) from None
        with connection:
            try:
                command.upgrade(self._alembic(connection), revision)
            except CommandError as exc:
                raise UserError(
                    f"metadata store {self.url.render_as_string(hide_password=True)}: {exc}; it was written by a "
                    "newer ci_pipeline, upgrade this one"
                ) from None
            connection.commit()

    def revision(self) -> str | None:
        """The schema version the database is at (None for an empty database)."""
        from alembic.runtime.migration import MigrationContext

        with self.engine.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session in one transaction: committed when the block ends, rolled back if it raises."""
        with self._sessions.begin() as session:
            yield session

    def close(self) -> None:
        """Release the database connections."""
        self.engine.dispose()


def open_store(url: str) -> MetadataStore:
    """Open the store at ``url`` and bring its schema to the newest version (a no-op when it already is)."""
    store = MetadataStore(url)
    store.upgrade()
    return store
