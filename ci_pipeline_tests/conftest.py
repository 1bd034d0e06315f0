"""Fixtures shared by every test layer: a tiny configuration, a temporary lake, and a real Azurite."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import pytest
from threadpoolctl import threadpool_limits

ROOT = Path(__file__).resolve().parents[1]
SAMPLE_DIR = ROOT / "data" / "sample"
AZURITE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


#: The xdist group of every test that uses the session's run of the bundled sample (:func:`_sample_run`): one
#: worker runs them all, so the sample runs once per test session, not once per worker.
SAMPLE_RUN_GROUP = "sample_run"
#: The costliest tests and groups on the 2-core CI machine, costliest first. On several workers (`dev.py test`)
#: they are sent first, so that no worker is still busy with a long test after the other ran out of work; the order
#: of everything else is kept. An entry names a group or the start of test ids.
COSTLIEST_FIRST = (
    "ci_pipeline_tests/orchestration/test_ui_browser.py",
    "ci_pipeline_tests/test_bench_pipeline.py",
    "ci_pipeline_tests/test_incremental_refresh.py",
    SAMPLE_RUN_GROUP,
    "ci_pipeline_tests/predictions/test_charts_browser.py",
)


#: A RAM-backed file system for the session's temporary files, used when it has at least this much room.
RAM_TEMP = Path("/dev/shm")
RAM_TEMP_MIN_FREE = 4 * 2**30


def _temporary_files_in_memory() -> None:
    """Put the test session's temporary files (pytest's tmp_path, Dagster homes, lakes, sinks, the product's own
    temporary folders) on :data:`RAM_TEMP`, when it is there with room and no temporary folder was chosen.

    Every run a test starts stores its events in SQLite under its Dagster home, committed (synced to the disk) one
    at a time, and the lake fsyncs each file it writes: on the 2-core CI machine's disk a run of the sample took
    10-40% longer than in memory (the more so when the other worker writes too). The tests read and write the same
    files either way. A TMPDIR that is set is kept. xdist workers inherit TMPDIR from the controller, so every
    process of a session (and the programs the tests start) use the same folder.
    """
    if os.environ.get("TMPDIR") or os.environ.get("PYTEST_DEBUG_TEMPROOT"):
        return
    try:
        if not (RAM_TEMP.is_dir() and os.access(RAM_TEMP, os.W_OK | os.X_OK)):
            return
        if shutil.disk_usage(RAM_TEMP).free < RAM_TEMP_MIN_FREE:
            return
        if os.statvfs(RAM_TEMP).f_flag & getattr(os, "ST_NOEXEC", 0):  # some tests run programs they write
            return
    except OSError:
        return
    os.environ["TMPDIR"] = str(RAM_TEMP)
    tempfile.tempdir = None  # gettempdir() looks again, at TMPDIR


_temporary_files_in_memory()


#: ``serve_forever`` keyword arguments for a test's HTTP server: its ``shutdown()`` waits until the serving loop
#: looks again, every 0.5 s by default, which added half a second to the end of each test with a server.
SERVE = {"poll_interval": 0.02}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _work_unit(item: pytest.Item) -> str | None:
    """The xdist group ``item`` must share with others, or None when any worker may run it on its own.

    Tests of one module that share a module-scoped fixture stay together, so the fixture is set up once; those
    that use the session's sample run form one group.
    """
    info = item._fixtureinfo
    if "_sample_run" in info.names_closure:
        return SAMPLE_RUN_GROUP
    scopes = {defs[-1].scope for name, defs in info.name2fixturedefs.items() if defs}
    if scopes & {"module", "package", "class"}:
        return item.nodeid.split("::", 1)[0]
    return None


def _cost_rank(unit: str) -> int:
    """The place of a work unit (a group or a test id) in :data:`COSTLIEST_FIRST`; after all of them if absent."""
    return next((rank for rank, name in enumerate(COSTLIEST_FIRST) if unit.startswith(name)), len(COSTLIEST_FIRST))


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    """On an xdist worker: group tests that share an expensive fixture and put the costliest first.

    Each worker collects the same items in the same order, which is the order in which work units are handed out
    (``--dist loadgroup``: a group is one unit, every other test is a unit of its own). A run in one process keeps
    the collection order and has no groups.
    """
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        return
    units = {}
    for item in items:
        group = _work_unit(item)
        if group is not None:
            item.add_marker(pytest.mark.xdist_group(group))
        units[item.nodeid] = group or item.nodeid
    first_seen = {}
    for unit in units.values():
        first_seen.setdefault(unit, len(first_seen))
    items.sort(key=lambda item: (_cost_rank(units[item.nodeid]), first_seen[units[item.nodeid]]))


@pytest.fixture(scope="session", autouse=True)
def _private_dagster_home(tmp_path_factory):
    """Every run a test starts goes into a throwaway Dagster home, never the project's own .dagster_home."""
    home = tmp_path_factory.mktemp("dagster_home")
    shutil.copyfile(ROOT / "dagster.yaml", home / "dagster.yaml")
    previous = os.environ.get("DAGSTER_HOME")
    os.environ["DAGSTER_HOME"] = str(home)
    yield home
    if previous is None:
        os.environ.pop("DAGSTER_HOME", None)
    else:
        os.environ["DAGSTER_HOME"] = previous


@pytest.fixture(scope="session", autouse=True)
def _one_native_thread():
    """Native code called straight from a test gets one thread, as the product gives it (predictions' threads).

    Each worker has a core of its own; OpenMP threads waiting for each other at every tree on a core the other
    worker holds made a 0.4 s test take 40 s.
    """
    with threadpool_limits(limits=1):
        yield


@pytest.fixture(autouse=True)
def _no_ambient_config(monkeypatch):
    # Tests choose their configuration explicitly; a developer's exported one must not leak in.
    monkeypatch.delenv("CI_PIPELINE_CONFIG", raising=False)


def _azurite_binary() -> Path:
    node_dir = Path(os.environ.get("CI_PIPELINE_NODE_DIR", ROOT / ".ci" / "node"))
    binary = node_dir / "node_modules" / ".bin" / "azurite-blob"
    if not binary.exists():
        pytest.fail(f"Azurite is not installed at {binary}; run the tests with `python3 dev.py test`")
    return binary


@pytest.fixture(scope="session")
def azurite(tmp_path_factory) -> dict:
    """A real Azure Blob emulator on loopback for the whole test session.

    Yields ``{"connection_string", "port"}``. Each test should use its own container.
    """
    port = free_port()
    workdir = tmp_path_factory.mktemp("azurite")
    process = subprocess.Popen(
        [
            str(_azurite_binary()),
            "--blobHost",
            "127.0.0.1",
            "--blobPort",
            str(port),
            "--inMemoryPersistence",
            "--extentMemoryLimit",
            "512",
            "--skipApiVersionCheck",
            "--loose",
            "--silent",
            "--disableTelemetry",
        ],
        cwd=workdir,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"Azurite exited at start: {process.stderr.read().decode()[:500]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                break
        except OSError:
            time.sleep(0.2)
    else:
        process.kill()
        pytest.fail("Azurite did not answer within 30 s")
    connection_string = (
        "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;"
        f"AccountKey={AZURITE_KEY};BlobEndpoint=http://127.0.0.1:{port}/devstoreaccount1;"
    )
    yield {"connection_string": connection_string, "port": port}
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()


@pytest.fixture
def azure_container(azurite, monkeypatch) -> str:
    """A fresh, empty container in Azurite; its connection string is exported as AZURE_TEST_CONNECTION."""
    import adlfs

    name = f"t{uuid.uuid4().hex[:12]}"
    fs = adlfs.AzureBlobFileSystem(connection_string=azurite["connection_string"])
    fs.mkdir(name)
    monkeypatch.setenv("AZURE_TEST_CONNECTION", azurite["connection_string"])
    return name


@pytest.fixture
def sample_copy(tmp_path) -> Path:
    """A private copy of the bundled sample folder (its config writes the lake next to itself)."""
    target = tmp_path / "sample"
    shutil.copytree(SAMPLE_DIR, target, ignore=shutil.ignore_patterns("lake"))
    return target


@pytest.fixture(scope="session")
def _sample_run(tmp_path_factory) -> dict:
    """The bundled sample after one `ci-pipeline run`, done once per session (a full run of the sample is the
    suite's most expensive setup).

    ``{"folder"}`` is the project that ran, handed to one module only (:func:`claim_sample_run`) so it can run
    again in place; ``{"snapshot"}`` is a copy taken right after the run, which nobody changes (copy it with
    :func:`sample_run_copy`).
    """
    from ci_pipeline.cli import main

    folder = tmp_path_factory.mktemp("sample_run") / "sample"
    shutil.copytree(SAMPLE_DIR, folder, ignore=shutil.ignore_patterns("lake", "sink.sqlite*"))
    assert main(["--config", str(folder / "ci_pipeline.yaml"), "run"]) == 0
    snapshot = tmp_path_factory.mktemp("sample_run_snapshot") / "sample"
    shutil.copytree(folder, snapshot, symlinks=True)
    return {"folder": folder, "snapshot": snapshot, "claimed": []}


@pytest.fixture(scope="module")
def claim_sample_run(_sample_run, request) -> Path:
    """The folder the sample ran in, for the one module that runs it again in place (its unchanged rerun must find
    the same paths and files, so it cannot be a copy)."""
    claimed = _sample_run["claimed"]
    if claimed and claimed != [request.module.__name__]:
        pytest.fail(f"the sample run is already claimed by {claimed[0]}; use sample_run_copy")
    claimed[:] = [request.module.__name__]
    return _sample_run["folder"]


@pytest.fixture
def sample_run_copy(_sample_run, tmp_path) -> Path:
    """A private copy of the bundled sample after one full `ci-pipeline run` (its lake and sink included)."""
    target = tmp_path / "sample"
    shutil.copytree(_sample_run["snapshot"], target, symlinks=True)
    return target
