"""`ci-pipeline sql "<query>"`: read-only SQL over the lake (a DuckDB view per exported table and per lake table)."""

from __future__ import annotations

from ci_pipeline.errors import UserError


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "sql", help="run one read-only SELECT over the CDM exports and the tables of the lake (DuckDB)"
    )
    parser.add_argument(
        "query",
        help='e.g. "SELECT * FROM lake.unify__customer_profile LIMIT 5" (every lake table, as lake.<stage>__<table>), '
        'or "SELECT count(*) FROM CustomerProfile" (the output tables, with publish.exports configured)',
    )
    parser.add_argument("--format", choices=["table", "csv", "json"], default="table", help="output format")
    parser.add_argument(
        "--export", help="export whose tables are also visible unqualified (default: the first configured one)"
    )
    parser.set_defaults(func=run)


def run(args) -> int:
    from ci_pipeline.commands.sink import print_frame
    from ci_pipeline.config import load_config
    from ci_pipeline.export import query
    from ci_pipeline.lake import Lake

    config = load_config(args.config)
    exports = config.publish.exports
    names = [e.name for e in exports]
    if args.export and args.export not in names:
        raise UserError(f"--export {args.export}: no such export; configured: {', '.join(names) or 'none'}")
    lake = Lake.from_config(config.lake, config.base_dir)
    folders = {e.name: e.folder for e in exports}
    default = args.export or (names[0] if names else None)
    result = query(lake, args.query, names, folder=folders, default=default)
    print_frame(result, args.format)
    return 0
