"""`ci-pipeline quickstart PATH`: configure and run the pipeline on one CSV or Parquet file."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "quickstart",
        help="start from one CSV or Parquet file: infer its key and kind, write a commented configuration, run it",
    )
    parser.add_argument(
        "path", help="a CSV or Parquet file of customers or of transactions (customer id, date, amount)"
    )
    parser.add_argument(
        "--out", help="folder for the configuration, the lake and the sink (default: ./<file name>_quickstart)"
    )
    parser.add_argument(
        "--row-key",
        action="store_true",
        help="when no column identifies a row, number the rows and use that number as the primary key",
    )
    parser.set_defaults(func=run)


def run(args) -> int:
    from ci_pipeline.commands import run as run_command
    from ci_pipeline.config import load_config
    from ci_pipeline.lake import Lake
    from ci_pipeline.quickstart import KIND_TEXT, local_path, plan_quickstart, read_table, write_files
    from ci_pipeline.unify import SETTINGS_PATH

    path = local_path(args.path)
    frame = read_table(path)
    plan = plan_quickstart(path, frame, row_key=args.row_key)
    out = Path(args.out).expanduser() if args.out else Path.cwd() / f"{plan.table}_quickstart"
    print(f"{path}: {len(frame):,} rows of {KIND_TEXT[plan.kind]}")
    for note in plan.notes:
        print(f"  {note}")
    print(f"  primary key: {plan.key.column} ({plan.key.reason})")
    if plan.transactions:
        t = plan.transactions
        print(
            f"  customers: {t.customer} ({len(plan.customer_ids):,} distinct); date: {t.timestamp}; amount: {t.amount}"
        )
    else:
        mapped = plan.mapping[plan.mapping["suggested"] != ""]
        print("  mapping: " + ", ".join(f"{r.column} -> {r.suggested}" for r in mapped.itertuples()))
        if plan.model_refused:
            print(f"  matching: simple rules, as a probabilistic model could not be trained: {plan.model_refused}")
    config_path = write_files(plan, frame, out)
    print(f"  configuration: {config_path}\n")
    # The same command as `ci-pipeline run --config <file>`, in this process.
    status = run_command.run(
        argparse.Namespace(config=str(config_path), select=None, job=None, full=True, list=False, log_level="WARNING")
    )
    config = load_config(str(config_path))
    lake = Lake.from_config(config.lake, config.base_dir)
    print("\nWhere everything is:")
    print(f"  configuration   {config_path}  (keep and edit it; `ci-pipeline validate {config_path}`)")
    print(f"  lake tables     {lake.url('ci_pipeline')}")
    print(f"  profiles        {lake.url('ci_pipeline/unify/customer_profile.parquet')}")
    if lake.exists(SETTINGS_PATH):
        print(f"  match settings  {lake.url(SETTINGS_PATH)}  (the model's choices, as YAML to paste and edit)")
    if plan.kind == "transactions":
        print(f"  measures        {lake.url('ci_pipeline/measures/customer_measure_values.parquet')}")
        print(f"  segments        {lake.url('ci_pipeline/segments/segment_membership.parquet')}")
    if config.publish.sink.kind == "sqlite":
        print(f"  sink (SQLite)   {config.resolve_location(config.publish.sink.path)}")
    print(
        f'  query them      ci-pipeline sql --config {config_path} "SELECT * FROM lake.unify__customer_profile LIMIT 5"'
    )
    return status
