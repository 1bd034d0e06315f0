"""`ci-pipeline segment`: preview a quick segment's size, or release static segments for re-evaluation."""

from __future__ import annotations

import yaml

from ci_pipeline.config import load_config
from ci_pipeline.config.segments import SegmentsConfig
from ci_pipeline.errors import UserError
from ci_pipeline.lake import Lake
from ci_pipeline.measures.conditions import run_date
from ci_pipeline.segments.run import SegmentInputs, build_engine

PROFILE = "ci_pipeline/unify/customer_profile.parquet"
VALUES = "ci_pipeline/measures/customer_measure_values.parquet"
FACTS = "ci_pipeline/activities/activity_facts.parquet"
STATIC = "ci_pipeline/segments/static_segment_state.parquet"


def register(subparsers) -> None:
    parser = subparsers.add_parser("segment", help="preview segment sizes; refresh static segments")
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    preview = actions.add_parser(
        "preview",
        help="estimated size of a quick segment (one field, one operator) or of a configured segment",
        description="Evaluates on the tables of the last run in the lake. Example: "
        "ci-pipeline segment preview --field measure.total_spend --op '>=' --value 500",
    )
    preview.add_argument("--field", help="profile.<attribute> or measure.<measure>")
    preview.add_argument("--op", help="operator: = != < <= > >= between in 'not in' contains ... 'in the last'")
    preview.add_argument("--value", help="value, read as YAML: 500, 2026-01-01, '[1, 5]', '90 days', Seattle")
    preview.add_argument("--segment", help="a configured segment instead of --field/--op/--value")
    preview.set_defaults(func=run_preview)
    refresh = actions.add_parser(
        "refresh",
        help="release static segments so the next run evaluates them again",
        description="Static segments keep their members until refreshed. This forgets the kept members of the "
        "named segments; the next `ci-pipeline run` evaluates and keeps them again.",
    )
    refresh.add_argument("names", nargs="*", help="static segment names")
    refresh.add_argument("--all", action="store_true", help="every static segment")
    refresh.set_defaults(func=run_refresh)


def _lake(config) -> Lake:
    return Lake.from_config(config.lake, config.base_dir)


def _read(lake: Lake, path: str, required: bool):
    if lake.exists(path):
        return lake.read_parquet(path)
    if required:
        raise UserError(f"{lake.url(path)} does not exist yet; run `ci-pipeline run` first, then preview")
    return None


def run_preview(args) -> int:
    config = load_config(args.config)
    if args.segment:
        if args.field or args.op:
            raise UserError("--segment: give either --segment or --field/--op/--value, not both")
        section = config.segments
        if args.segment not in section.definitions:
            raise UserError(
                f"--segment {args.segment}: unknown segment; "
                f"defined: {', '.join(sorted(section.definitions)) or 'none'}"
            )
        name = args.segment
    else:
        if not args.field or not args.op:
            raise UserError("segment preview needs --field and --op (and --value unless the operator is a null test)")
        value = yaml.safe_load(args.value) if args.value is not None else None
        rule = {"field": args.field, "op": args.op, **({"value": value} if value is not None else {})}
        name = "preview"
        section = SegmentsConfig.model_validate(
            {"definitions": {**config.segments.definitions, name: {"rules": [rule]}}}
        )
    lake = _lake(config)
    inputs = SegmentInputs(
        profile=_read(lake, PROFILE, True), measures=_read(lake, VALUES, False), facts=_read(lake, FACTS, False)
    )
    engine = build_engine(section, run_date(config.measures.as_of), inputs)
    members = int(engine.segment(name).sum())
    total = engine.n
    share = 100.0 * members / total if total else 0.0
    print(f"estimated size: {members:,} of {total:,} customers ({share:.1f}%)")
    return 0


def run_refresh(args) -> int:
    config = load_config(args.config)
    static = sorted(n for n, s in config.segments.definitions.items() if s.type == "static")
    names = static if args.all else args.names
    if not names:
        raise UserError(
            f"segment refresh: name static segments or pass --all; static segments: {', '.join(static) or 'none'}"
        )
    unknown = sorted(set(names) - set(static))
    if unknown:
        raise UserError(
            f"segment refresh: {', '.join(unknown)} is not a static segment; "
            f"static segments: {', '.join(static) or 'none'}"
        )
    lake = _lake(config)
    state = _read(lake, STATIC, False)
    if state is None or state.empty:
        print("no static segment members are kept yet; the next run evaluates every static segment")
        return 0
    remaining = state[~state["Segment"].isin(names)].reset_index(drop=True)
    lake.write_parquet(STATIC, remaining)
    print(f"released {', '.join(sorted(names))}; the next `ci-pipeline run` evaluates and keeps them again")
    return 0
