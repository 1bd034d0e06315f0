"""What the governance sub-commands share: the ``--as`` option, opening the rules, printing rows."""

from __future__ import annotations

import json

from ci_pipeline.redact import redact


def add_identity(parser) -> None:
    """Add ``--as USER`` (else ``$CI_PIPELINE_USER``, else the OS user) to a sub-command."""
    parser.add_argument(
        "--as",
        dest="acting_user",
        metavar="USER",
        help="act as this user (default: $CI_PIPELINE_USER, else the operating-system user)",
    )


def open_for(args):
    """``(config, Governance)`` for a parsed command line: its configuration and its acting user."""
    from ci_pipeline.config import load_config
    from ci_pipeline.governance import acting_user, open_governance

    # Only the sources, their owners and the lake's place are needed: a problem between other sections (a rule
    # naming a missing column) must not lock administrators out of connections and roles.
    config = load_config(args.config, references=False)
    return config, open_governance(config, acting_user(args.acting_user))


def print_json(value) -> None:
    """Print a JSON document (redacted, like every output of the command)."""
    print(redact(json.dumps(value, indent=1, ensure_ascii=False, sort_keys=True)))


def print_table(rows: list[dict], columns: list[str], empty: str) -> None:
    """Print ``rows`` as aligned columns, or ``empty`` when there are none."""
    if not rows:
        print(empty)
        return
    cells = [[redact(_cell(row.get(c))) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    print("  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip())
    for r in cells:
        print("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip())


def _cell(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list):
        return ", ".join(_cell(v) for v in value) or "-"
    if isinstance(value, dict):
        return ", ".join(f"{k}={_cell(v)}" for k, v in value.items()) or "-"
    return str(value)
