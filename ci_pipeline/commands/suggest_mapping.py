"""`ci-pipeline suggest-mapping`: propose semantic types for a customer table's columns."""

from __future__ import annotations

from ci_pipeline.errors import UserError


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "suggest-mapping",
        help="propose semantic types (email, phone, first_name, ...) for a table's columns from names and values",
    )
    parser.add_argument("source", help="source name under 'sources', e.g. crm")
    parser.add_argument("table", help="table of that source, ingested into the lake (`ci-pipeline run` first)")
    parser.set_defaults(func=run)


def run(args) -> int:
    from ci_pipeline.config import load_config
    from ci_pipeline.lake import Lake
    from ci_pipeline.unify.suggest import customer_table_verdict, mapping_yaml, suggest_mapping

    config = load_config(args.config)
    source = config.sources.get(args.source)
    if source is None or args.table not in source.tables:
        raise UserError(f"{config.path}: no table {args.source}.{args.table} under 'sources'")
    lake = Lake.from_config(config.lake, config.base_dir)
    relative = f"ci_pipeline/{args.source}/{args.table}.parquet"
    if not lake.exists(relative):
        raise UserError(
            f"{lake.url(relative)} does not exist: ingest the table first "
            f"(`ci-pipeline run --select {args.source}/{args.table}`)"
        )
    frame = lake.read_parquet(relative)
    suggestions = suggest_mapping(frame)
    width = max(len(str(c)) for c in suggestions["column"])
    for row in suggestions.itertuples(index=False):
        print(f"{str(row.column):<{width}}  {row.suggested or '-':<12} {row.confidence:<7} {row.reason}")
    verdict = customer_table_verdict(suggestions)
    if verdict:
        print(f"\n{args.source}.{args.table}: {verdict}.")
        return 0
    print("\n# paste under unify.tables and confirm:")
    print(mapping_yaml(suggestions, args.source, args.table))
    return 0
