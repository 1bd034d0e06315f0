"""`ci-pipeline validate`: check a configuration file and report every problem."""

from __future__ import annotations

from ci_pipeline.config import load_config


def register(subparsers) -> None:
    parser = subparsers.add_parser("validate", help="check a configuration file and report every problem")
    parser.add_argument("path", nargs="?", help="configuration file (default: --config, $CI_PIPELINE_CONFIG, sample)")
    parser.set_defaults(func=run)


def run(args) -> int:
    config = load_config(args.path or args.config)
    tables = sum(len(s.tables) for s in config.sources.values())
    print(f"{config.path}: OK ({len(config.sources)} sources, {tables} tables)")
    return 0
