"""A throwaway PostgreSQL server on loopback, from the server binaries on the machine (initdb, postgres).

PostgreSQL refuses to run as root; when the tests run as root the server runs as the ``postgres`` system user.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from ci_pipeline_tests.conftest import free_port


@contextmanager
def postgres_server() -> Iterator[str]:
    """Start a server with a fresh cluster; yield a SQLAlchemy URL of an empty database; stop and remove it."""
    initdb, postgres = server_binary("initdb"), server_binary("postgres")
    if not (initdb and postgres):
        pytest.fail(
            "the PostgreSQL server binaries (initdb, postgres) are missing; run the tests with `python3 dev.py test`"
        )
    as_other = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    # Not under pytest's temporary folder: that one is private to the test user, and the server may run as another.
    folder = tempfile.mkdtemp(prefix="ci-governance-pg-")
    if as_other:
        shutil.chown(folder, user="postgres")
    data, port = os.path.join(folder, "data"), free_port()
    subprocess.run(
        [*as_other, initdb, "-D", data, "-U", "ci", "--auth=trust", "-E", "UTF8", "--no-instructions"],
        check=True,
        capture_output=True,
    )
    server = subprocess.Popen(
        [*as_other, postgres, "-D", data, "-p", str(port), "-k", folder, "-c", "listen_addresses=127.0.0.1",
         "-c", "fsync=off"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        import psycopg2

        deadline = time.monotonic() + 60
        while True:
            try:
                connection = psycopg2.connect(host="127.0.0.1", port=port, user="ci", dbname="postgres")
                break
            except psycopg2.OperationalError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise
                time.sleep(0.2)
        connection.autocommit = True
        connection.cursor().execute("CREATE DATABASE ci_governance")
        connection.close()
        yield f"postgresql+psycopg2://ci@127.0.0.1:{port}/ci_governance"
    finally:
        server.terminate()
        server.wait(timeout=60)
        shutil.rmtree(folder, ignore_errors=True)


def server_binary(name: str) -> str | None:
    """A PostgreSQL server program: on PATH, else where Debian's packages keep it (not on PATH by default)."""
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"), key=lambda p: int(p.parts[-3]))
    return str(candidates[-1]) if candidates else None
