"""Who is acting: ``--as USER``, else ``$CI_PIPELINE_USER``, else the operating-system user."""

from __future__ import annotations

import getpass
import os
import unicodedata

from ci_pipeline.errors import UserError

USER_ENV = "CI_PIPELINE_USER"
#: The run tag naming who launched a run; the run acts as that user (see ci_pipeline.governance.runtime).
LAUNCHED_BY_TAG = "ci_pipeline/launched_by"
#: Names are stored and shown as given; longer ones do not fit the columns.
MAX_NAME = 200


def check_name(value: str, what: str) -> str:
    """``value`` stripped, if it is a usable name: 1-200 characters, no control characters.

    Quotes, semicolons and the like are allowed (every query binds its parameters); control characters are not,
    because a name is printed to terminals and logs.
    """
    name = value.strip()
    if not name:
        raise UserError(f"{what}: the name is empty")
    if len(name) > MAX_NAME:
        raise UserError(f"{what}: the name is longer than {MAX_NAME} characters; shorten it")
    if any(unicodedata.category(ch).startswith("C") for ch in name):
        raise UserError(f"{what}: the name contains control characters; use printable characters only")
    return name


def acting_user(explicit: str | None = None) -> str:
    """The acting user's name: ``explicit`` (``--as``), else ``$CI_PIPELINE_USER``, else the OS login name."""
    if explicit is not None:
        return check_name(explicit, "--as")
    from_env = os.environ.get(USER_ENV, "").strip()
    if from_env:
        return check_name(from_env, USER_ENV)
    try:
        return check_name(getpass.getuser(), "operating-system user")
    except (OSError, KeyError):
        raise UserError(f"cannot tell who you are; pass --as USER or set {USER_ENV}") from None
