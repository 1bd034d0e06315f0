"""Building blocks shared by every configuration section."""

from __future__ import annotations

import difflib
import os
import re
import unicodedata
from collections.abc import Callable, Collection
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
NAME_PATTERN = r"^[a-z][a-z0-9_]*$"
Name = Annotated[str, StringConstraints(pattern=NAME_PATTERN, max_length=63)]
#: An activity type as written: a semantic type or a custom name (``SalesOrder``, ``Donation``).
TYPE_PATTERN = r"^[A-Za-z][A-Za-z0-9_]*$"
#: An Azure region as Azure writes it in URLs and settings (``westeurope``).
REGION_PATTERN = r"^[a-z0-9]+$"
#: A two-letter country code in capitals (ISO 3166-1 alpha-2).
COUNTRY_PATTERN = r"^[A-Z]{2}$"


def _underscored(text: str) -> str:
    """``text`` with accents dropped (é -> e) and each run of other characters (spaces, hyphens, dots) as one
    underscore."""
    plain = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    return re.sub(r"[^A-Za-z0-9_]+", "_", plain).strip("_")


#: What each pattern of the configuration allows, in words, and how a near miss is mended: a user who wrote
#: ``Contacts`` reads "lower-case letters ...; write 'contacts'", not a regular expression.
PATTERN_WORDS: dict[str, tuple[str, Callable[[str], str]]] = {
    NAME_PATTERN: (
        "lower-case letters (a-z), digits and underscores, starting with a letter",
        lambda value: _underscored(value).lower(),
    ),
    TYPE_PATTERN: ("letters (a-z, A-Z), digits and underscores, starting with a letter", _underscored),
    REGION_PATTERN: (
        "lower-case letters and digits, as Azure writes a region (westeurope)",
        lambda value: re.sub(r"[^a-z0-9]", "", value.lower()),
    ),
    COUNTRY_PATTERN: ("a two-letter country code in capitals (US, NL, DE)", lambda value: value.strip().upper()),
}


def pattern_problem(value: str, pattern: str, is_key: bool = False) -> str | None:
    """What a value (or a key, when ``is_key``) refused by ``pattern`` must look like, in words, and the mended
    value when mending gives one that fits; None for a pattern without words."""
    if pattern not in PATTERN_WORDS:
        return None
    words, mend = PATTERN_WORDS[pattern]
    mended = mend(value)
    fits = mended != value and re.fullmatch(pattern, mended) is not None
    if is_key:
        fix = f": rename it {mended!r} (and every reference to it)" if fits else ""
        return f"the name {value!r} must be {words}{fix}"
    return f"{value!r} must be {words}" + (f": write {mended!r}" if fits else "")


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
        value = (os.environ.get(target) or "").strip()  # stripped as a file's is: a pasted key brings a line break
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
