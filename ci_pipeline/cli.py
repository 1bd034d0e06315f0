"""The `ci-pipeline` command.

Each module in :mod:`ci_pipeline.commands` adds its own sub-command through ``register(subparsers)``, and sets
``func(args) -> int`` on its parser. User mistakes (:class:`UserError`) print one clear message, no traceback,
and exit 2. Nothing printed or logged carries a secret (:mod:`ci_pipeline.redact`).
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
import traceback
import warnings

from ci_pipeline import __version__, commands
from ci_pipeline.errors import UserError
from ci_pipeline.redact import install_log_redaction, redact


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ci-pipeline",
        description="Customer data platform: ingest, unify, measure, segment and publish customer data.",
    )
    parser.add_argument("--version", action="version", version=f"ci-pipeline {__version__}")
    parser.add_argument(
        "--config",
        help="configuration file (default: $CI_PIPELINE_CONFIG, else the bundled sample data/sample/ci_pipeline.yaml)",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module_info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{commands.__name__}.{module_info.name}")
        module.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    # Dagster's notes about its own beta APIs are for the project's developers, not for someone running the command.
    from dagster import BetaWarning, PreviewWarning

    warnings.filterwarnings("ignore", category=BetaWarning)
    warnings.filterwarnings("ignore", category=PreviewWarning)
    install_log_redaction()
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except UserError as exc:
        print(f"error: {redact(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception:
        # A bug rather than a user mistake: the trace helps to report it, and may quote a secret.
        print(redact(traceback.format_exc()), file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
