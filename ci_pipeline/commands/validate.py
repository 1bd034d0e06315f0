"""`ci-pipeline validate`: check a configuration file and the sources it names; report every problem at once."""

from __future__ import annotations

import sys


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "validate",
        help="check a configuration file and its sources (paths, headers, every column it names); no data is written",
    )
    parser.add_argument("path", nargs="?", help="configuration file (default: --config, $CI_PIPELINE_CONFIG, sample)")
    parser.add_argument(
        "--no-sources",
        action="store_true",
        help="check the file only, without opening the source locations or the governance store",
    )
    parser.set_defaults(func=run)


def run(args) -> int:
    from ci_pipeline.config import load_config
    from ci_pipeline.validation import option_problems, project_report

    # References between sections and the sources are checked in one pass, so every problem is listed at once.
    config = load_config(args.path or args.config, references=False)
    problems = config.cross_reference_problems() + option_problems(config)
    warnings: list[str] = []
    if not args.no_sources:
        from ci_pipeline.governance.runtime import connection_problems

        found, warnings = project_report(config)
        # The connections it names, against the environment's store (a run fails on a missing one).
        problems += found + connection_problems(config)
    for warning in config.located(warnings):
        print(f"warning: {warning}", file=sys.stderr)
    if problems:
        raise config.error(problems)
    tables = sum(len(s.tables) for s in config.sources.values())
    told = f"; {len(warnings)} warning(s) above" if warnings else ""
    print(f"{config.path}: OK ({len(config.sources)} sources, {tables} tables{told})")
    return 0
