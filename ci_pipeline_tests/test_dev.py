"""`dev.py`, the README's two commands: install progress, and what `dev.py test` needs when services are missing."""

from __future__ import annotations

import base64
import hashlib
import http.server
import importlib.util
import os
import sys
import threading
import zipfile
from functools import partial

import pytest

from ci_pipeline_tests.conftest import ROOT, SERVE


@pytest.fixture
def dev(monkeypatch):
    spec = importlib.util.spec_from_file_location("dev_script", ROOT / "dev.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _wheel(folder, name: str) -> None:
    """A minimal valid wheel of one empty module."""
    files = {
        f"{name}.py": b"",
        f"{name}-0.1.dist-info/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n".encode(),
        f"{name}-0.1.dist-info/WHEEL": b"Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = [
        f"{path},sha256={base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b'=').decode()},{len(data)}"
        for path, data in files.items()
    ]
    files[f"{name}-0.1.dist-info/RECORD"] = ("\n".join([*record, f"{name}-0.1.dist-info/RECORD,,"]) + "\n").encode()
    with zipfile.ZipFile(folder / f"{name}-0.1-py3-none-any.whl", "w") as archive:
        for path, data in files.items():
            archive.writestr(path, data)


def test_pip_install_lists_each_download_with_its_size(dev, tmp_path, monkeypatch, capsys):
    # A package index on loopback, as pip sees PyPI: it downloads and the script reports name and size.
    index = tmp_path / "index"
    (index / "simple" / "tinypkg").mkdir(parents=True)
    _wheel(index, "tinypkg")
    link = '<a href="/tinypkg-0.1-py3-none-any.whl">tinypkg-0.1-py3-none-any.whl</a>'
    (index / "simple" / "tinypkg" / "index.html").write_text(f"<html><body>{link}</body></html>")
    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(index))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, kwargs=SERVE, daemon=True).start()
    monkeypatch.setattr(dev, "PY", sys.executable)
    # Only this index: no pip configuration file or extra index of the machine.
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    for name in ("PIP_FIND_LINKS", "PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL"):
        monkeypatch.delenv(name, raising=False)
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/simple"
        target = tmp_path / "target"
        dev.pip_install("--no-cache-dir", "--index-url", url, "--target", str(target), "tinypkg")
        out = capsys.readouterr().out
        assert out.splitlines()[0].startswith("[dev]   tinypkg (") and out.splitlines()[0].endswith(" bytes)")
        assert "[dev]   unpacking 1 package(s) into .venv" in out and "[dev]   fetched 1 package(s), 0.0 MB" in out
        assert (target / "tinypkg.py").exists() and "Collecting" not in out
        with pytest.raises(SystemExit, match="pip install --index-url .* failed"):
            dev.pip_install("--index-url", url, "--target", str(target), "--no-cache-dir", "nopkg")
        assert "nopkg" in capsys.readouterr().err  # pip's own reason is printed in full
    finally:
        server.shutdown()


def test_test_services_need_no_root_when_present(dev, tmp_path, monkeypatch):
    node = tmp_path / "node" / "node_modules"
    (node / ".bin").mkdir(parents=True)
    (node / ".bin" / "azurite-blob").write_text("")
    (node / "playwright-core").mkdir()
    (node / "playwright-core" / "package.json").write_text("{}")
    monkeypatch.setattr(dev, "NODE_DIR", tmp_path / "node")
    present = {"node": "/usr/bin/node", "initdb": "/usr/bin/initdb", "chromium-browser": "/opt/bin/chromium-browser"}
    monkeypatch.setattr(dev.shutil, "which", present.get)
    monkeypatch.setattr(dev.os, "geteuid", lambda: 1000)
    monkeypatch.setattr(dev, "sh", lambda *args, **kwargs: pytest.fail(f"ran {args}"))
    assert dev.test_services() == {"CI_PIPELINE_CHROMIUM": "/opt/bin/chromium-browser"}


def test_test_services_say_what_is_missing_and_how_to_install_it(dev, tmp_path, monkeypatch):
    monkeypatch.setattr(dev, "NODE_DIR", tmp_path / "node")
    monkeypatch.setattr(dev.shutil, "which", {"node": "/usr/bin/node", "npm": "/usr/bin/npm", "apt-get": "x"}.get)
    monkeypatch.setattr(dev.os, "geteuid", lambda: 1000)
    monkeypatch.setattr(dev, "Path", lambda *a: tmp_path / "nowhere")
    with pytest.raises(SystemExit) as exc:
        dev.test_services()
    message = str(exc.value)
    assert "chromium (the browser of the UI test)" in message and "postgresql (" in message
    assert "sudo apt-get install -y chromium postgresql" in message and "needs no root once" in message


@pytest.mark.parametrize(
    ("argv", "expected"), [(["run"], ["--full"]), (["run", "--job", "unify_only"], ["--job", "unify_only"])]
)
def test_the_first_command_runs_the_whole_pipeline_each_time_unless_told_otherwise(
    dev, tmp_path, monkeypatch, argv, expected
):
    class Done:
        returncode = 0

    calls = []
    monkeypatch.setattr(dev, "python_env", lambda: None)
    monkeypatch.setattr(dev, "dagster_env", lambda home: {})
    monkeypatch.setattr(dev.subprocess, "run", lambda args, **kwargs: calls.append(args[1:]) or Done())
    assert dev.main(argv) == 0
    assert calls == [["init"], ["run", *expected]]


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["test"], []),
        (["test", "-k", "lake"], ["-k", "lake"]),
        # Given after the defaults, the user's own choice wins: one process, or another number of workers.
        (["test", "-n", "0", "ci_pipeline_tests/test_lake.py"], ["-n", "0", "ci_pipeline_tests/test_lake.py"]),
    ],
)
def test_the_second_command_runs_the_suite_on_one_worker_per_core_with_the_users_arguments_last(
    dev, monkeypatch, argv, expected
):
    class Done:
        returncode = 0

    calls = []
    monkeypatch.setattr(dev, "python_env", lambda: None)
    monkeypatch.setattr(dev, "test_services", lambda: {})
    monkeypatch.setattr(dev.subprocess, "run", lambda args, **kwargs: calls.append(args[1:]) or Done())
    assert dev.main(argv) == 0
    assert calls == [["-m", "pytest", "--numprocesses", "auto", "--dist", "loadgroup", *expected]]
