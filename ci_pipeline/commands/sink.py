"""`ci-pipeline sink show|capacity`: read back the embedded Dataverse sink."""

from __future__ import annotations

import json
import shutil

from ci_pipeline.errors import UserError

#: Longest cell shown in a table on the terminal; CSV and JSON output are never cut.
MAX_CELL = 40


def register(subparsers) -> None:
    parser = subparsers.add_parser("sink", help="read the published output tables back from the sink")
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    show = actions.add_parser("show", help="print the rows of one output table")
    show.add_argument("table", help="output table, e.g. CustomerProfile, or its logical name in the sink")
    show.add_argument("--customer", help="only rows of this CustomerId")
    show.add_argument(
        "--columns",
        help="comma-separated columns to show, in this order, e.g. msdynci_customerid,msdynci_fullname "
        "(the prefix may be left out: customerid,fullname); default: every column",
    )
    show.add_argument("--limit", type=int, default=50, help="at most this many rows (default 50; 0 = all)")
    show.add_argument("--format", choices=["table", "csv", "json"], default="table")
    show.set_defaults(func=run_show)
    capacity = actions.add_parser("capacity", help="Dataverse storage entitlement next to what is published")
    capacity.add_argument("--json", action="store_true", help="print the figures as one JSON object (for scripts)")
    capacity.set_defaults(func=run_capacity)


def _open(args):
    from ci_pipeline.config import load_config
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
    from ci_pipeline.config.publish import OUTPUT_TABLE_NAMES
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
    if args.columns:
        rows = rows[pick_columns(list(rows.columns), args.columns, prefix)]
    print_frame(rows, args.format)
    if args.format == "table":
        print(f"({len(rows)} rows from {logical} in {sink.path})")
    return 0


def pick_columns(available: list[str], wanted: str, prefix: str) -> list[str]:
    """The columns named in ``--columns a,b`` (with or without the ``<prefix>_`` of the sink, any case), in order.

    Raises:
        UserError: a name matches no column; the message lists the columns there are.
    """
    by_name = {c.lower(): c for c in available}
    chosen, unknown = [], []
    for name in (n.strip().lower() for n in wanted.split(",") if n.strip()):
        column = by_name.get(name) or by_name.get(f"{prefix}_{name}".lower())
        (chosen if column else unknown).append(column or name)
    if unknown or not chosen:
        raise UserError(
            f"--columns {wanted}: no column {', '.join(unknown) or 'named'}; the columns are {', '.join(available)}"
        )
    return chosen


def print_frame(df, fmt: str) -> None:
    """Print a frame as CSV, JSON records or an aligned table that fits the terminal's width.

    A table wider than the terminal is printed in blocks of columns, and long cells are cut to :data:`MAX_CELL`
    characters; CSV and JSON print every value whole.
    """
    if fmt == "csv":
        print(df.to_csv(index=False), end="")
    elif fmt == "json":
        print(df.to_json(orient="records", force_ascii=False, indent=1))
    elif not len(df):
        print("(no rows)")
    else:
        width = shutil.get_terminal_size().columns
        print(df.to_string(index=False, max_colwidth=MAX_CELL, line_width=width))
        text = df.select_dtypes(exclude="number").astype("string")
        if any((text[c].str.len() > MAX_CELL).any() for c in text.columns):
            print(f"(cells longer than {MAX_CELL} characters are cut; --format csv or json prints them whole)")


def run_capacity(args) -> int:
    from ci_pipeline.dataverse import logical_table
    from ci_pipeline.dataverse.capacity import capacity_report

    config, sink = _open(args)
    with sink:
        report = capacity_report(sink.usage(), logical_table("CustomerProfile", config.publish.prefix))
    if args.json:
        print(json.dumps(report, indent=1))
        return 0
    print(f"{'table':<32} {'rows':>12} {'bytes':>14}")
    for name, usage in report["tables"].items():
        print(f"{name:<32} {usage['rows']:>12,} {usage['bytes']:>14,}")
    print(f"{'total':<32} {report['published_rows']:>12,} {report['published_bytes']:>14,}")
    used = report["database_used_percent"]
    print(
        f"\n{report['profiles']:,} customer profiles entitle {report['database_gb']:.3f} GB of database and "
        f"{report['file_gb']:.3f} GB of file storage (15 GB + 20 GB per 100,000 profiles; log capacity is fixed).\n"
        f"The published values take {report['published_gb']:.6f} GB"
        + (f", {used:.3f}% of the database entitlement." if used is not None else ".")
    )
    return 0
