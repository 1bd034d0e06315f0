"""Options every sub-command shares; the leading underscore keeps this module out of sub-command discovery."""

from __future__ import annotations

import argparse

CONFIG_HELP = "configuration file (default: $CI_PIPELINE_CONFIG, else the bundled sample data/sample/ci_pipeline.yaml)"


def add_config_option(subparsers: argparse._SubParsersAction) -> None:
    """Accept ``--config`` on every (nested) sub-command too, so ``ci-pipeline run --config x.yaml`` works.

    The sub-command's option has no default of its own (``SUPPRESS``): given before the sub-command, the value
    of the top-level option stays; given after it, it wins.
    """
    for sub in set(subparsers.choices.values()):
        if "--config" not in sub._option_string_actions:
            sub.add_argument("--config", default=argparse.SUPPRESS, help=CONFIG_HELP)
        for action in sub._actions:
            if isinstance(action, argparse._SubParsersAction):
                add_config_option(action)
