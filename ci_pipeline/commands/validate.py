"""`ci-pipeline validate`: check a configuration file and the sources it names; report every problem."""

from __future__ import annotations

from ci_pipeline.config import load_config
from ci_pipeline.errors import ConfigError
from ci_pipeline.ingest.preflight import source_problems


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "validate", help="check a configuration file and its sources (paths exist, keys are columns)"
    )
    parser.add_argument("path", nargs="?", help="configuration file (default: --config, $CI_PIPELINE_CONFIG, sample)")
    parser.add_argument(
        "--no-sources", action="store_true", help="check the file only, without opening the source locations"
    )
    parser.set_defaults(func=run)


def run(args) -> int:
    config = load_config(args.path or args.config)
    if not args.no_sources:
        problems = source_problems(config)
        if problems:
            raise ConfigError(str(config.path), problems)
    tables = sum(len(s.tables) for s in config.sources.values())
    print(f"{config.path}: OK ({len(config.sources)} sources, {tables} tables)")
    return 0
