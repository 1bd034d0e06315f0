"""Errors a user can cause and fix. The CLI prints them without a traceback and exits non-zero."""


class UserError(Exception):
    """A mistake in configuration, input data or environment that the user can fix.

    The message names the file, key, row or column involved and says what to do.
    """


class ConfigError(UserError):
    """The configuration file is unreadable or invalid. Holds every problem found, not just the first."""

    def __init__(self, path: str, problems: list[str]):
        self.path = path
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"{path}: {len(problems)} problem(s) in the configuration:\n{lines}")


class StorageError(UserError):
    """The data lake or a source location cannot be reached or read."""


def key_path(loc) -> str:
    """A pydantic error location as the configuration's key paths are written: list positions in brackets
    (``rules[0].where[1].op``, not ``rules.0.where.1.op``).

    Examples:
        >>> key_path(("measures", "attributes", "x", "where", 0, "op"))
        'measures.attributes.x.where[0].op'
    """
    out = ""
    for part in loc:
        if isinstance(part, int) and not isinstance(part, bool) and out:
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out
