#!/usr/bin/env python3
"""Set up the project and run it: the two commands of the README.

    python3 dev.py run     # install, initialise governance, then run the whole pipeline on the bundled sample
    python3 dev.py test    # install (with test services), then run the full test suite

Only Python 3.11 is assumed. Everything else (the virtual environment, Python packages, the Azure Storage
emulator from npm, Chromium for the UI test, PostgreSQL for the metadata store tests) is installed here, once,
and skipped when already current.
"""

from __future__ import annotations

import hashlib
import os
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
NODE_DIR = ROOT / ".ci" / "node"


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
    say("installing Python packages (first time: a few minutes)")
    sh(PY, "-m", "pip", "install", "--quiet", "--upgrade", "pip")
    sh(PY, "-m", "pip", "install", "--quiet", "-e", f"{ROOT}[dev]")
    STAMP.write_text(wanted)


def apt_install(*packages: str) -> None:
    if shutil.which("apt-get") is None or os.geteuid() != 0:
        sys.exit(f"[dev] please install {' '.join(packages)} with your system's package manager")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    sh("apt-get", "update", "-qq", env=env)
    sh("apt-get", "install", "-y", "-qq", *packages, env=env, stdout=subprocess.DEVNULL)


def test_services() -> None:
    """Azurite (Azure Blob emulator) from npm, Chromium for the browser test of the UI, and PostgreSQL."""
    if shutil.which("npm") is None:
        say("installing Node.js and npm")
        apt_install("nodejs", "npm")
    azurite = NODE_DIR / "node_modules" / ".bin" / "azurite-blob"
    playwright = NODE_DIR / "node_modules" / "playwright-core" / "package.json"
    if not (azurite.exists() and playwright.exists()):
        say("installing Azurite (Azure Storage emulator) and playwright-core (UI test driver) from npm")
        NODE_DIR.mkdir(parents=True, exist_ok=True)
        sh(
            "npm",
            "install",
            "--silent",
            "--no-audit",
            "--no-fund",
            "--prefix",
            NODE_DIR,
            "azurite@3",
            "playwright-core@1",
        )
    # The UI test drives Debian's Chromium at this path (playwright cannot download its own browsers here).
    if not Path("/usr/bin/chromium").exists():
        say("installing Chromium for the UI test")
        apt_install("chromium")
    # The metadata store's Postgres tests start a throwaway server from Debian's PostgreSQL binaries.
    if shutil.which("initdb") is None and not list(Path("/usr/lib/postgresql").glob("*/bin/initdb")):
        say("installing PostgreSQL for the metadata store tests")
        apt_install("postgresql")


def dagster_env(home: Path | None) -> dict[str, str]:
    """The environment of the project's commands; ``home`` is the Dagster instance folder (None: unset)."""
    env = dict(os.environ)
    env.pop("DAGSTER_HOME", None)
    if home is not None:
        home.mkdir(exist_ok=True)
        shutil.copyfile(ROOT / "dagster.yaml", home / "dagster.yaml")
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
        return subprocess.run([str(BIN / "ci-pipeline"), "run", *argv[1:]], cwd=ROOT, env=env).returncode
    test_services()
    # The tests keep their runs out of the user's run history: each test session makes its own Dagster home.
    env = dagster_env(None)
    return subprocess.run([str(PY), "-m", "pytest", *argv[1:]], cwd=ROOT, env=env).returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
