"""The `ci-pipeline` command.

Each module in :mod:`ci_pipeline.commands` adds its own sub-command through ``register(subparsers)``, and sets
``func(args) -> int`` on its parser. Registering is cheap: the command modules import Dagster, pandas and the
pipeline's modules inside the functions that run a command, so ``--help`` and ``--version`` answer at once.
User mistakes (:class:`UserError`) print one clear message, no traceback, and exit 2. Output piped into a reader
that stops early (``| head``) ends the command quietly. Nothing printed or logged carries a secret
(:mod:`ci_pipeline.redact`).
"""

from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import sys
import traceback
import warnings

from ci_pipeline import __version__, commands
from ci_pipeline.commands._options import CONFIG_HELP, add_config_option
from ci_pipeline.errors import UserError
from ci_pipeline.memory import tune_allocators
from ci_pipeline.redact import install_log_redaction, redact

#: The status of a command whose reader closed the pipe early: what a shell reports for a Unix tool ended by
#: SIGPIPE (128 + 13), so that `set -o pipefail` scripts see the output was cut short.
BROKEN_PIPE = 141


def build_parser() -> argparse.ArgumentParser:
    """The parser of every sub-command; ``--config`` is accepted before or after the sub-command."""
    parser = argparse.ArgumentParser(
        prog="ci-pipeline",
        description="Customer data platform: ingest, unify, measure, segment and publish customer data.",
    )
    parser.add_argument("--version", action="version", version=f"ci-pipeline {__version__}")
    parser.add_argument("--config", help=CONFIG_HELP)
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module_info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        if not module_info.name.startswith("_"):
            importlib.import_module(f"{commands.__name__}.{module_info.name}").register(subparsers)
    add_config_option(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Parse the command line, run the sub-command and turn user mistakes into one message and exit code 2."""
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        # A command that parses its own options later (``bench <name>``) sets ``pass_through`` to receive them.
        if not hasattr(args, "pass_through"):
            parser.error(f"unrecognized arguments: {' '.join(unknown)}")
        args.pass_through = unknown
    # Dagster's notes about its own beta APIs are for the project's developers, not for someone running the command.
    # (dagster_shared holds the warning classes without importing Dagster itself.)
    from dagster_shared.utils.warnings import BetaWarning, PreviewWarning

    warnings.filterwarnings("ignore", category=BetaWarning)
    warnings.filterwarnings("ignore", category=PreviewWarning)
    install_log_redaction()
    tune_allocators()
    try:
        return int(args.func(args) or 0)
    except UserError as exc:
        print(f"error: {redact(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader of standard output stopped early (`... | head`): it has what it wanted, so end without a trace.
        _discard_stdout()
        return BROKEN_PIPE
    except Exception:
        # A bug rather than a user mistake: the trace helps to report it, and may quote a secret.
        print(redact(traceback.format_exc()), file=sys.stderr)
        return 1


def _discard_stdout() -> None:
    """Point standard output at the null device: Python flushes it again at exit, and the closed pipe would raise
    a second BrokenPipeError there ("Exception ignored in ... stdout")."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # a stand-in without a file descriptor (a test's capture) has nothing to flush
        pass
    finally:
        os.close(devnull)


if __name__ == "__main__":
    sys.exit(main())
