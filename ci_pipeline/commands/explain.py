"""`ci-pipeline explain`: why a record belongs to its customer, and why two records did (not) match."""

from __future__ import annotations

import json

from ci_pipeline.errors import UserError


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "explain",
        help="show the customer of a record, its records and the links that made it (from the last run)",
    )
    parser.add_argument("source", help="source name under 'sources', e.g. crm")
    parser.add_argument("table", help="table of that source, e.g. contacts")
    parser.add_argument("key", help="the record's primary key value in that table")
    parser.add_argument(
        "--pair",
        nargs=3,
        metavar=("SOURCE", "TABLE", "KEY"),
        help="explain why this second record did or did not match the first: per rule and condition (and, with "
        "unify.match.method probabilistic, whether a blocking rule brought the pair to the model, the stratum whose "
        "fit weighs it and the model's weight per comparison)",
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")
    parser.set_defaults(func=run)


def run(args) -> int:
    # Imported here so that registering the command (for --help) stays cheap.
    from ci_pipeline.config import load_config
    from ci_pipeline.lake import Lake
    from ci_pipeline.unify.engine import make_normalizer
    from ci_pipeline.unify.explain import explain_pair, explain_record, render_pair, render_record
    from ci_pipeline.unify.records import build_records

    config = load_config(args.config)
    if config.unify is None:
        raise UserError(f"{config.path}: no 'unify' section; there is nothing to explain")
    lake = Lake.from_config(config.lake, config.base_dir)
    alternate = _read(lake, "unify/alternate_key")
    # Ingestion trims keys, so a key pasted with a blank around it is the same record.
    args.key = args.key.strip()
    if args.pair:
        args.pair = [*args.pair[:2], args.pair[2].strip()]
        if tuple(args.pair) == (args.source, args.table, args.key):
            raise UserError(
                f"--pair {' '.join(args.pair)} is the record explained itself; give another record to compare it with "
                "(or leave --pair out to see this record's customer)"
            )
    for record in [(args.source, args.table, args.key), *([tuple(args.pair)] if args.pair else [])]:
        _refuse_unknown_table(config.unify, *record[:2])
        _refuse_quarantined(lake, alternate, *record)
    if args.pair:
        frames, keys = {}, {}
        for t in config.unify.tables:
            frames[(t.source, t.table)] = _read(lake, f"{t.source}/{t.table}")
            keys[(t.source, t.table)] = config.sources[t.source].tables[t.table].primary_key
        records = build_records(config.unify, frames, keys)
        info = explain_pair(
            records,
            config.unify,
            make_normalizer(config.unify, config.base_dir),
            (args.source, args.table, args.key),
            tuple(args.pair),
            alternate,
            _read(lake, "unify/match_pairs"),
            _model(lake) if config.unify.match.method == "probabilistic" else None,
        )
        print(json.dumps(info, indent=2, default=str) if args.json else render_pair(info))
        return 0
    info = explain_record(
        args.source,
        args.table,
        args.key,
        alternate,
        _read(lake, "unify/match_pairs"),
        _read(lake, "unify/customer_profile"),
    )
    info["values"] = _record_values(config, lake, info["records"])
    enriched = "ci_pipeline/enrich/enrichment.parquet"
    if config.enrich.enrichments and lake.exists(enriched):
        info["enrichments"] = _enrichments(lake.read_parquet(enriched), info["customer_id"])
    print(json.dumps(info, indent=2, default=str) if args.json else render_record(info) + _render_enrichments(info))
    return 0


def _record_values(config, lake, identifiers: list[str]) -> dict[str, dict[str, str]]:
    """Each record of the customer (``source|table|key``) with the values of its mapped attributes as its table
    holds them, so that what its records share and where they differ is seen at once."""
    import pandas as pd

    wanted: dict[tuple[str, str], list[str]] = {}
    for ident in identifiers:
        source, table, key = ident.split("|", 2)
        wanted.setdefault((source, table), []).append(key)
    values = {}
    for t in config.unify.tables:
        keys = wanted.get((t.source, t.table))
        if not keys:
            continue
        # Only the key and the mapped columns are read: a customer's few records need no table read whole.
        stored = lake.dataset(f"ci_pipeline/{t.source}/{t.table}.parquet")
        key_column = config.sources[t.source].tables[t.table].primary_key
        mapped = [c for c in t.columns if c in stored.schema.names and c != key_column]
        frame = stored.to_table(columns=[key_column, *mapped]).to_pandas()
        rows = frame[frame[key_column].astype("string").isin(keys)]
        for row in rows.to_dict("records"):
            held = {c: row[c] for c in t.columns if c in row and pd.notna(row[c]) and str(row[c]).strip()}
            values[f"{t.source}|{t.table}|{row[key_column]}"] = {c: str(v).strip() for c, v in held.items()}
    return values


def _enrichments(table, customer_id: str) -> list[dict]:
    """The customer's rows of the Enrichment table of the last run: provider, type and values."""
    rows = table[table["CustomerId"] == customer_id].sort_values(["EnrichmentProvider", "EnrichmentType"])
    return [
        {"provider": p, "type": t, "values": json.loads(v)}
        for p, t, v in zip(rows["EnrichmentProvider"], rows["EnrichmentType"], rows["Values"], strict=True)
    ]


def _render_enrichments(info: dict) -> str:
    """The ``enrichments:`` lines printed after the profile (nothing when the project has no enrichments)."""
    found = info.get("enrichments")
    if found is None:
        return ""
    lines = [f"  {e['provider']}/{e['type']}: {json.dumps(e['values'], ensure_ascii=False)}" for e in found]
    return "\nenrichments:\n" + "\n".join(lines or ["  (none)"])


def _refuse_unknown_table(unify, source: str, table: str) -> None:
    """A clear error naming the unified tables when ``source table`` is none of them."""
    from ci_pipeline.config.base import did_you_mean

    tables = [t.ref for t in unify.tables]
    if f"{source}.{table}" not in tables:
        raise UserError(
            f"{source} {table}: no such table among unify.tables{did_you_mean(f'{source}.{table}', tables)}; the "
            f"unified tables are {', '.join(tables)} (give the source and the table as two words)"
        )


def _refuse_quarantined(lake, alternate, source: str, table: str, key: str) -> None:
    """A clear error when the record is not among the last run's records because ingestion quarantined it: why,
    and where (the quarantine table holds every such row with its file, line and reason)."""
    import pandas as pd

    ak = alternate
    if ((ak["DataSourceName"] == source) & (ak["EntityName"] == table) & (ak["AlternateValue"] == key)).any():
        return
    relative = f"ci_pipeline/{source}/{table}_corrupt.parquet"
    if not lake.exists(relative):
        return
    corrupt = lake.read_parquet(relative)
    rows = corrupt[corrupt["key"].astype("string").str.strip() == key]
    if rows.empty:
        return
    row = rows.iloc[-1]
    where = f"{row['file']}, line {row['line']}" if pd.notna(row["line"]) else str(row["file"])
    raise UserError(
        f"record {source}.{table} key {key!r} was quarantined by ingestion, so it took part in no unification: "
        f"{row['reason']} ({where}; every quarantined row is in {lake.url(relative)}). Fix the value in the source "
        "or the column's declared type, then run again"
    )


def _read(lake, name: str):
    relative = f"ci_pipeline/{name}.parquet"
    if not lake.exists(relative):
        raise UserError(
            f"{lake.url(relative)} does not exist: run the pipeline first (`ci-pipeline run`) so that the "
            "unification outputs are in the lake"
        )
    return lake.read_parquet(relative)


def _model(lake):
    """The stored match model (``unify.match.method: probabilistic``)."""
    from ci_pipeline.unify.probabilistic_method import MODEL_PATH, TRAIN_STEP, read_model

    if not lake.exists(MODEL_PATH):
        raise UserError(f"{lake.url(MODEL_PATH)} does not exist: train the match model first ({TRAIN_STEP})")
    return read_model(lake.read_bytes(MODEL_PATH), lake.url(MODEL_PATH))
