"""`ci-pipeline generate`: write the sample data set, its configuration and the ground truth."""

from __future__ import annotations

import argparse

from ci_pipeline.errors import UserError


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "generate",
        help="write a realistic sample data set (four sources), its ci_pipeline.yaml and the ground truth",
    )
    parser.add_argument("--people", type=_count, default=2000, help="real people to simulate (default: 2000)")
    parser.add_argument("--seed", type=int, default=7, help="random seed; the same seed writes the same data")
    parser.add_argument("--out", required=True, help="output folder (created if missing), e.g. data/sample")
    parser.add_argument(
        "--as-of",
        help="date all activity ends (default: the generator's fixed date, so a seed always gives the same data)",
    )
    parser.add_argument(
        "--config-only", action="store_true", help="rewrite only <out>/ci_pipeline.yaml from the templates"
    )
    parser.set_defaults(func=run)


def _count(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a whole number") from None
    if number < 1:
        raise argparse.ArgumentTypeError(f"{number} people: must be at least 1")
    return number


def run(args) -> int:
    from ci_pipeline.generate import DEFAULT_AS_OF, generate, write_config

    if args.config_only:
        print(f"wrote {write_config(args.out)}")
        return 0
    try:
        counts = generate(people=args.people, seed=args.seed, out=args.out, as_of=args.as_of or DEFAULT_AS_OF)
    except MemoryError:
        raise UserError(f"--people {args.people}: not enough memory; generate fewer people") from None
    width = max(len(name) for name in counts)
    for name, rows in counts.items():
        print(f"{name:<{width}}  {rows:>10,} rows")
    print(f"wrote {args.out} (configuration: {args.out}/ci_pipeline.yaml, ground truth: {args.out}/ground_truth/)")
    return 0
