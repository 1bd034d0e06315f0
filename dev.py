#!/usr/bin/env python3
"""Set up the project and run it: the two commands of the README.

    python3 dev.py run     # install, initialise governance, then run the whole pipeline on the bundled sample
    python3 dev.py test    # install (with test services), then run the full test suite (one worker per core)

Only Python 3.11 is assumed. Everything else (the virtual environment, Python packages, the Azure Storage
emulator from npm, Chromium for the UI test, PostgreSQL for the metadata store tests) is installed here, once,
and skipped when already current. Installing system packages (Node.js, Chromium, PostgreSQL) needs root and
apt-get; when they are already present, `dev.py test` needs neither.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
PY = BIN / "python"
STAMP = VENV / ".dev-stamp"
DAGSTER_HOME = ROOT / ".dagster_home"
#: The local instance configuration, copied into DAGSTER_HOME (it is not kept in the project folder itself, where
#: `dg dev` would warn that a dagster.yaml outside DAGSTER_HOME "will not be used").
INSTANCE_YAML = ROOT / "dagster.yaml"
NODE_DIR = ROOT / ".ci" / "node"
#: Names a Chromium or Chrome executable goes by on Linux distributions; the UI test looks for the same ones.
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
#: The suite runs on one worker process per core (pytest-xdist). Tests that share an expensive fixture form a group
#: that one worker runs, and the costliest are handed out first (ci_pipeline_tests/conftest.py); arguments given to
#: `dev.py test` come after these, so `-n 0` runs everything in one process.
PARALLEL = ("--numprocesses", "auto", "--dist", "loadgroup")
#: pip's lines about a package it fetches: "Downloading pandas-3.1.1-....whl (12.4 MB)" or "Using cached ...".
_FETCH = re.compile(
    r"^\s*(?:Downloading|Using cached)\s+(\S+?)(?:-\d[^\s]*)?\.(?:whl|tar\.gz|zip)\s+\(([\d.]+)\s*(bytes|[kMG]B)\)"
)
_UNITS = {"bytes": 1e-6, "kB": 1e-3, "MB": 1.0, "GB": 1e3}


def say(message: str) -> None:
    print(f"[dev] {message}", flush=True)


def sh(*args: str | Path, **kwargs) -> None:
    subprocess.run([str(a) for a in args], check=True, **kwargs)


def python_env() -> None:
    """Create .venv and install the project with its dev extra, unless pyproject.toml has not changed."""
    if sys.version_info[:2] != (3, 11):
        sys.exit(f"[dev] Python 3.11 is required; this is {sys.version.split()[0]}. Run it with python3.11.")
    wanted = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()
    if STAMP.exists() and STAMP.read_text() == wanted and PY.exists():
        return
    if not PY.exists():
        say("creating .venv")
        sh(sys.executable, "-m", "venv", VENV)
    say("installing Python packages into .venv: Dagster, pandas, DuckDB, scikit-learn and their dependencies")
    say("(first time: a few minutes; each download is listed with its size)")
    pip_install("--upgrade", "pip")
    pip_install("-e", f"{ROOT}[dev]")
    STAMP.write_text(wanted)


def pip_install(*args: str) -> None:
    """``pip install``, printing one line per package fetched (name and size) and the total, not pip's log.

    The whole log is printed when pip fails, so the reason is never hidden.
    """
    env = {**os.environ, "PIP_ROOT_USER_ACTION": "ignore", "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    command = [str(PY), "-m", "pip", "install", "--progress-bar", "off", *args]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    log, total, count = [], 0.0, 0
    for line in process.stdout:
        log.append(line)
        fetched = _FETCH.match(line)
        if fetched:
            name, size, unit = fetched.groups()
            total, count = total + float(size) * _UNITS[unit], count + 1
            say(f"  {name} ({size} {unit})")
        elif line.startswith("Installing collected packages"):
            say(f"  unpacking {line.count(',') + 1} package(s) into .venv")
    if process.wait() != 0:
        print("".join(log), end="", file=sys.stderr)
        sys.exit(f"[dev] pip install {' '.join(args)} failed (its output is above)")
    if count:
        say(f"  fetched {count} package(s), {total:,.1f} MB")


def apt_install(packages: dict[str, str]) -> None:
    """Install Debian packages (name -> what the tests use it for) as root, or say exactly what is missing."""
    names = " ".join(packages)
    if shutil.which("apt-get") is None or os.geteuid() != 0:
        needs = "; ".join(f"{name} ({why})" for name, why in packages.items())
        sys.exit(
            f"[dev] the tests need system packages that are not installed: {needs}.\n"
            f"[dev] Installing them needs root: run `sudo apt-get install -y {names}` (Debian/Ubuntu; other systems: "
            "their package manager), then `python3 dev.py test` again; it needs no root once they are present."
        )
    say(f"installing {names} with apt-get (tens to a few hundred MB)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    sh("apt-get", "update", "-qq", env=env)
    sh("apt-get", "install", "-y", "-qq", *packages, env=env, stdout=subprocess.DEVNULL)


def find_chromium() -> str | None:
    """The Chromium (or Chrome) executable on PATH, or None."""
    return next(filter(None, map(shutil.which, CHROMIUM_NAMES)), None)


def test_services() -> dict[str, str]:
    """Azurite (Azure Blob emulator) from npm, Chromium for the browser test of the UI, and PostgreSQL.

    Returns the environment the tests find them by (the Chromium executable).
    """
    azurite = NODE_DIR / "node_modules" / ".bin" / "azurite-blob"
    playwright = NODE_DIR / "node_modules" / "playwright-core" / "package.json"
    node_modules = azurite.exists() and playwright.exists()
    system: dict[str, str] = {}
    if shutil.which("node") is None or (not node_modules and shutil.which("npm") is None):
        system.update({"nodejs": "runs Azurite and the UI test", "npm": "installs them"})
    if find_chromium() is None:
        system["chromium"] = "the browser of the UI test"
    # The metadata store's Postgres tests start a throwaway server from Debian's PostgreSQL binaries.
    if shutil.which("initdb") is None and not list(Path("/usr/lib/postgresql").glob("*/bin/initdb")):
        system["postgresql"] = "a throwaway server for the metadata store tests"
    if system:
        apt_install(system)
    if not node_modules:
        say("installing Azurite (Azure Storage emulator) and playwright-core (UI test driver) from npm (~200 MB)")
        # The versions of the committed lockfile: `npm install <name>@<range>` would rewrite package.json and the
        # lockfile of a fresh clone to whatever is newest that day.
        sh("npm", "ci", "--silent", "--no-audit", "--no-fund", "--prefix", NODE_DIR)
    # The UI test drives the system's Chromium (playwright cannot download its own browsers here).
    return {"CI_PIPELINE_CHROMIUM": find_chromium() or ""}


def dagster_env(home: Path | None) -> dict[str, str]:
    """The environment of the project's commands; ``home`` is the Dagster instance folder (None: unset)."""
    env = dict(os.environ)
    env.pop("DAGSTER_HOME", None)
    if home is not None:
        home.mkdir(exist_ok=True)
        shutil.copyfile(INSTANCE_YAML, home / "dagster.yaml")
        env["DAGSTER_HOME"] = str(home)
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env["CI_PIPELINE_NODE_DIR"] = str(NODE_DIR)
    return env


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in {"run", "test"}:
        print(__doc__)
        return 2
    python_env()
    if argv[0] == "run":
        env = dagster_env(DAGSTER_HOME)
        # Governance first: on a new environment the invoking user becomes its administrator (a no-op after that).
        initialised = subprocess.run([str(BIN / "ci-pipeline"), "init"], cwd=ROOT, env=env).returncode
        if initialised != 0:
            return initialised
        # The whole pipeline every time this command is given (`ci-pipeline run` alone recomputes only what changed
        # since its last run); extra arguments choose otherwise.
        args = argv[1:] or ["--full"]
        return subprocess.run([str(BIN / "ci-pipeline"), "run", *args], cwd=ROOT, env=env).returncode
    services = test_services()
    # The tests keep their runs out of the user's run history: each test session makes its own Dagster home.
    env = {**dagster_env(None), **services}
    return subprocess.run([str(PY), "-m", "pytest", *PARALLEL, *argv[1:]], cwd=ROOT, env=env).returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
