"""Public data sets that ship inside installed packages (dev dependencies), read from the package's folder."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from ci_pipeline.errors import UserError


def packaged_data(package: str, *parts: str, what: str) -> Path:
    """``parts`` below the installed ``package``'s folder, found without importing it (only its files are read).

    ``what`` names the data in the message when the package or the file is missing.
    """
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise UserError(f"{what} ship with the {package} package, which is not installed: pip install -e '.[dev]'")
    path = Path(next(iter(spec.submodule_search_locations))).joinpath(*parts)
    if not path.exists():
        raise UserError(f"{path} is missing from the installed {package} package: reinstall it")
    return path
