"""`ci-pipeline sink show|capacity`: read back the embedded Dataverse sink."""

from __future__ import annotations

import json

from ci_pipeline.config import load_config
from ci_pipeline.config.publish import OUTPUT_TABLE_NAMES
from ci_pipeline.errors import UserError


def register(subparsers) -> None:
    parser = subparsers.add_parser("sink", help="read the published output tables back from the sink")
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    show = actions.add_parser("show", help="print the rows of one output table")
    show.add_argument("table", help=f"output table ({', '.join(OUTPUT_TABLE_NAMES)}) or its logical name")
    show.add_argument("--customer", help="only rows of this CustomerId")
    show.add_argument("--limit", type=int, default=50, help="at most this many rows (default 50; 0 = all)")
    show.add_argument("--format", choices=["table", "csv", "json"], default="table")
    show.set_defaults(func=run_show)
    capacity = actions.add_parser("capacity", help="Dataverse storage entitlement next to what is published")
    capacity.set_defaults(func=run_capacity)


def _open(args):
    from ci_pipeline.dataverse import open_sink
    from ci_pipeline.lake import Lake

    config = load_config(args.config)
    kind = config.publish.sink.kind
    if kind == "none":
        raise UserError(f"{config.path}: publish.sink.kind is 'none'; there is no sink to read")
    lake = Lake.from_config(config.lake, config.base_dir)
    sink = open_sink(config.publish, config.base_dir, lake)
    return config, sink


def _logical(table: str, prefix: str) -> str:
    from ci_pipeline.dataverse import logical_table

    for name in OUTPUT_TABLE_NAMES:
        if table.lower() in {name.lower(), logical_table(name, prefix)}:
            return logical_table(name, prefix)
    raise UserError(f"sink show {table}: unknown table; use one of {', '.join(OUTPUT_TABLE_NAMES)}")


def run_show(args) -> int:
    config, sink = _open(args)
    if config.publish.sink.kind != "sqlite":
        sink.close()
        raise UserError("sink show reads the embedded SQLite sink; query Dataverse itself for the Web API sink")
    prefix = config.publish.prefix
    logical = _logical(args.table, prefix)
    if not sink.path.exists():
        raise UserError(f"sink {sink.path}: nothing published yet; run `ci-pipeline run` first")
    with sink:
        where = {f"{prefix}_customerid": args.customer} if args.customer else None
        rows = sink.read(logical, where=where, limit=args.limit or None)
    print_frame(rows, args.format)
    if args.format == "table":
        print(f"({len(rows)} rows from {logical} in {sink.path})")
    return 0


def print_frame(df, fmt: str) -> None:
    """Print a frame as an aligned table, CSV or JSON records."""
    if fmt == "csv":
        print(df.to_csv(index=False), end="")
    elif fmt == "json":
        print(df.to_json(orient="records", force_ascii=False, indent=1))
    else:
        print(df.to_string(index=False, max_colwidth=60) if len(df) else "(no rows)")


def run_capacity(args) -> int:
    from ci_pipeline.dataverse import logical_table
    from ci_pipeline.dataverse.capacity import capacity_report

    config, sink = _open(args)
    with sink:
        report = capacity_report(sink.usage(), logical_table("CustomerProfile", config.publish.prefix))
    print(
        f"{report['profiles']:,} customer profiles entitle {report['database_gb']:.3f} GB database and "
        f"{report['file_gb']:.3f} GB file storage (15 GB + 20 GB per 100,000 profiles; log capacity is fixed)."
    )
    print(f"Published: {report['published_rows']:,} rows, {report['published_bytes']:,} bytes of values.")
    print(f"{'table':<32} {'rows':>12} {'bytes':>14}")
    for name, usage in report["tables"].items():
        print(f"{name:<32} {usage['rows']:>12,} {usage['bytes']:>14,}")
    print(json.dumps({k: v for k, v in report.items() if k != "tables"}))
    return 0
