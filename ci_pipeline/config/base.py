"""Building blocks shared by every configuration section."""

from __future__ import annotations

import difflib
import os
from collections.abc import Collection
from pathlib import Path
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, StringConstraints
from rapidfuzz.distance import Levenshtein

from ci_pipeline.errors import UserError
from ci_pipeline.redact import register as register_secret


class StrictModel(BaseModel):
    """A configuration block: unknown keys are errors (a typo must not be silently ignored)."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


def did_you_mean(name: str, choices: Collection[str]) -> str:
    """``" (did you mean 'x'?)"`` for a near miss (an edit or two, or another case), else ``""``."""
    lowered = {str(c).lower(): str(c) for c in choices}
    if name.lower() in lowered and lowered[name.lower()] != name:
        return f" (did you mean '{lowered[name.lower()]}'?)"
    close = difflib.get_close_matches(name, [str(c) for c in choices], n=1, cutoff=0.75)
    if not close and len(name) >= 3:
        # Short names: one changed letter ("D0B" for "DOB") is a smaller share of their length than difflib allows.
        close = [c for low, c in lowered.items() if Levenshtein.distance(name.lower(), low) == 1][:1]
    return f" (did you mean '{close[0]}'?)" if close else ""


#: Names that become parts of asset keys and table names: lower case, digits and underscores.
Name = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]*$", max_length=63)]


def check_secret_ref(value: str) -> str:
    """Accept ``env:NAME`` and ``file:PATH``; refuse anything else without repeating it (it may be the secret)."""
    if not (value.startswith("env:") or value.startswith("file:")):
        raise ValueError(
            "secrets are never written in the configuration; use 'env:VARIABLE_NAME' to read an environment "
            "variable or 'file:path/to/file' to read a local file"
        )
    if len(value.split(":", 1)[1].strip()) == 0:
        raise ValueError("the secret reference names no variable or file")
    return value


#: A reference to a secret: ``env:NAME`` (environment variable) or ``file:PATH`` (local development).
SecretRef = Annotated[str, AfterValidator(check_secret_ref)]


def resolve_secret(ref: str, key: str, base_dir: Path | None = None) -> str:
    """Read the secret a :data:`SecretRef` points at, when it is needed (never at import or load time).

    Args:
        ref: ``env:NAME`` or ``file:PATH``.
        key: the configuration key holding the reference, for the error message.
        base_dir: directory that relative file paths are resolved against.
    """
    kind, _, target = ref.partition(":")
    target = target.strip()
    if kind == "env":
        value = os.environ.get(target)
        if not value:
            raise UserError(f"{key}: environment variable {target} is not set; export it or change the reference")
        return register_secret(value)
    path = Path(target)
    if not path.is_absolute() and base_dir is not None:
        path = base_dir / path
    try:
        return register_secret(path.read_text(encoding="utf-8").strip())
    except OSError as exc:
        raise UserError(f"{key}: cannot read secret file {path}: {exc.strerror}; create it or fix the path") from exc
