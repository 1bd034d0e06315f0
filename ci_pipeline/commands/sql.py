"""`ci-pipeline sql "<query>"`: SQL over the lake exports (one DuckDB view per exported table)."""

from __future__ import annotations

from ci_pipeline.config import load_config
from ci_pipeline.errors import UserError


def register(subparsers) -> None:
    parser = subparsers.add_parser("sql", help="run SQL over the CDM exports in the lake (DuckDB)")
    parser.add_argument("query", help='e.g. "SELECT count(*) FROM CustomerProfile"')
    parser.add_argument("--format", choices=["table", "csv", "json"], default="table", help="output format")
    parser.add_argument(
        "--export", help="export whose tables are also visible unqualified (default: the first configured one)"
    )
    parser.set_defaults(func=run)


def run(args) -> int:
    from ci_pipeline.commands.sink import print_frame
    from ci_pipeline.export import query
    from ci_pipeline.lake import Lake

    config = load_config(args.config)
    exports = config.publish.exports
    if not exports:
        raise UserError(f"{config.path}: publish.exports is empty; add an export and run the pipeline first")
    names = [e.name for e in exports]
    if args.export and args.export not in names:
        raise UserError(f"--export {args.export}: no such export; configured: {', '.join(names)}")
    lake = Lake.from_config(config.lake, config.base_dir)
    folders = {e.name: e.folder for e in exports}
    result = query(lake, args.query, names, folder=folders, default=args.export or names[0])
    print_frame(result, args.format)
    return 0
