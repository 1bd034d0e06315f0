"""`ci-pipeline segment`: preview a quick segment's size, or release static segments for re-evaluation."""

from __future__ import annotations

import re
import sys

from ci_pipeline.errors import UserError

PROFILE = "ci_pipeline/unify/customer_profile.parquet"
VALUES = "ci_pipeline/measures/customer_measure_values.parquet"
FACTS = "ci_pipeline/activities/activity_facts.parquet"
PREDICTIONS = "ci_pipeline/predictions/prediction_fields.parquet"
ENRICHMENTS = "ci_pipeline/enrich/enrichment_fields.parquet"
STATIC = "ci_pipeline/segments/static_segment_state.parquet"
ID_CHANGE = "ci_pipeline/unify/id_change.parquet"
#: The assets the segments stage computes in one step (an incremental run computes them again after a release).
SEGMENT_ASSETS = [
    ("segments", "segment_membership"),
    ("segments", "segment_member_history"),
    ("segments", "static_segment_state"),
]


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
    preview.add_argument(
        "--sample", type=int, default=5, help="show this many members, first by CustomerId (default 5; 0 = none)"
    )
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


def _lake(config):
    from ci_pipeline.lake import Lake

    return Lake.from_config(config.lake, config.base_dir)


def _read(lake, path: str, required: bool):
    if lake.exists(path):
        return lake.read_parquet(path)
    if required:
        raise UserError(f"{lake.url(path)} does not exist yet; run `ci-pipeline run` first, then preview")
    return None


def cli_value(value):
    """A --value as YAML read it, with a number in exponent form read as a number: YAML reads ``1e3`` as text
    (it wants ``1.0e+3``) while it reads ``1_000`` as 1000, and a user types either on a command line."""
    if isinstance(value, list):
        return [cli_value(v) for v in value]
    if isinstance(value, str) and re.fullmatch(r"[+-]?(\d+\.?\d*|\.\d+)[eE][+-]?\d+", value.strip()):
        number = float(value)
        return int(number) if number.is_integer() and abs(number) < 2**53 else number
    return value


def run_preview(args) -> int:
    import yaml

    from ci_pipeline.config import load_config
    from ci_pipeline.config.base import did_you_mean
    from ci_pipeline.config.segments import SegmentsConfig
    from ci_pipeline.measures.conditions import run_date
    from ci_pipeline.measures.facts import StoredFacts
    from ci_pipeline.segments.run import SegmentInputs, build_engine

    config = load_config(args.config)
    if args.segment:
        if args.field or args.op:
            raise UserError("--segment: give either --segment or --field/--op/--value, not both")
        section = config.segments
        if args.segment not in section.definitions:
            raise UserError(
                f"--segment {args.segment}: unknown segment{did_you_mean(args.segment, section.definitions)}; "
                f"defined: {', '.join(sorted(section.definitions)) or 'none'}"
            )
        name = args.segment
    else:
        if not args.field or not args.op:
            raise UserError("segment preview needs --field and --op (and --value unless the operator is a null test)")
        value = cli_value(yaml.safe_load(args.value)) if args.value is not None else None
        rule = {"field": args.field, "op": args.op, **({"value": value} if value is not None else {})}
        name = "preview"
        section = SegmentsConfig.model_validate(
            {"definitions": {**config.segments.definitions, name: {"rules": [rule]}}}
        )
    if args.sample < 0:
        raise UserError(f"--sample {args.sample}: give 0 (no sample) or a positive number")
    lake = _lake(config)
    inputs = SegmentInputs(
        profile=_read(lake, PROFILE, True),
        measures=_read(lake, VALUES, False),
        # Read in parts of whole customers when an activity condition asks, as the segments stage reads them: the
        # activities can be far larger than memory.
        facts=StoredFacts(lake.dataset(FACTS)) if lake.exists(FACTS) else None,
        predictions=_read(lake, PREDICTIONS, False),
        enrichments=_read(lake, ENRICHMENTS, False),
    )
    # Static segments keep their members: the preview of one, or of a segment built on one, counts those.
    frozen = _kept(section, lake, inputs.profile["CustomerId"])
    try:
        engine = build_engine(section, run_date(config.measures.as_of), inputs, frozen)
        mask = engine.segment(name)
    except UserError as exc:
        pending = _not_computed_yet(str(exc), config, inputs)
        if args.segment and not pending:
            raise
        text = pending or str(exc)
        raise UserError(text if args.segment else flag_message(text, name, args)) from None
    members = int(mask.sum())
    total = engine.n
    share = 100.0 * members / total if total else 0.0
    print(f"estimated size: {members:,} of {total:,} customers ({share:.1f}%)")
    if _reads_measures(section, name) and _measures_stale(config, lake):
        print(
            "warning: the stored measure values were computed with other settings than the configuration's now (a "
            "measure, an activity or a source changed since the last run): run the pipeline (ci-pipeline run) for "
            "the size the next run gives",
            file=sys.stderr,
        )
    if name in frozen:
        rules = int(build_engine(section, run_date(config.measures.as_of), inputs).segment(name).sum())
        print(
            f"  (static: the members it keeps, which the next run publishes; its rules select {rules:,} now, kept "
            f"instead after `ci-pipeline segment refresh {name}`)"
        )
    if members and args.sample:
        from ci_pipeline.commands.sink import print_frame

        sample = sample_members(engine.customers[mask][: args.sample], inputs, args.field)
        print(f"\nfirst {len(sample)} members by CustomerId:")
        print_frame(sample, "table")
    return 0


def _reads_measures(section, name: str) -> bool:
    """Whether the segment ``name`` reads a measure value, itself or through the segments it refers to."""
    from ci_pipeline.segments.evaluate import field_tests, segment_tests
    from ci_pipeline.segments.run import parsed_rules

    rules, seen, waiting = parsed_rules(section), set(), [name]
    while waiting:
        current = waiting.pop()
        if current in seen or current not in rules:
            continue
        seen.add(current)
        for rule in rules[current]:
            if any(test.namespace == "measure" for test in field_tests(rule.node)):
                return True
            waiting += segment_tests(rule.node)
    return False


def _measures_stale(config, lake) -> bool:
    """Whether the stored measure values were computed with other settings (of the measures or the stages before
    them) or another version than the configuration's now, as an incremental run would find them."""
    from ci_pipeline.defs import STAGES
    from ci_pipeline.defs.refresh import stage_code_version
    from ci_pipeline.orchestration.refresh import load_states

    sections = []
    for stage in STAGES:
        sections.append(stage.section)
        if stage.name == "measures":
            break
    key = ("measures", "customer_measure_values")
    state = load_states(lake, [key]).get(key)
    return state is not None and state.code_version != stage_code_version(config, sections)


def _kept(section, lake, customers) -> dict:
    """The members static segments keep, as the next run reads them (under the ids holding their records now):
    segment -> CustomerIds."""
    from ci_pipeline.segments.membership import follow_retired_ids, frozen_members, read_retired_ids

    state = _read(lake, STATIC, False)
    if state is None:
        return {}
    static = [n for n, spec in section.definitions.items() if spec.type == "static"]
    kept = follow_retired_ids(state[state["Segment"].isin(static)], read_retired_ids(lake, ID_CHANGE), customers)
    return frozen_members(kept)


def _not_computed_yet(message: str, config, inputs) -> str | None:
    """For an error on a measure the configuration defines but the stored measures (of an earlier run) lack: that
    it is not computed yet and how to compute it; None for any other error."""
    found = re.search(r"unknown customer attribute measure '([^']+)'", message)
    stored = set(inputs.measures.columns) if inputs.measures is not None else set()
    if found is None or found.group(1) not in config.measures.attributes or found.group(1) in stored:
        return None
    return (
        f"{message.split(': unknown', 1)[0]}: measure.{found.group(1)} is configured but not computed yet (the stored "
        "measures come from an earlier run): run the pipeline (ci-pipeline run), then preview"
    )


#: Where a quick rule's settings sit in the configuration it is checked as, and the flag the user typed instead.
_RULE_KEYS = {"field": "--field", "op": "--op", "value": "--value"}


def flag_message(message: str, name: str, args) -> str:
    """A quick rule's error as the flags the user typed: ``segments.definitions.preview.rules[0].op: ...`` ->
    ``--op 'bogus': ...``."""
    pattern = re.compile(rf"segments\.definitions\.{re.escape(name)}\.rules\[0\](?:\.(field|op|value))?")

    def flag(match: re.Match) -> str:
        if match.group(1):
            return f"{_RULE_KEYS[match.group(1)]} {getattr(args, match.group(1))!r}"
        return " ".join(f"{f} {getattr(args, k)!r}" for k, f in _RULE_KEYS.items() if getattr(args, k) is not None)

    return pattern.sub(flag, message)


def sample_members(ids, inputs, field: str | None):
    """A few members: their CustomerId, name, email and city, and the value of the previewed field."""
    import pandas as pd

    profile = inputs.profile.set_index(inputs.profile["CustomerId"].astype("string"))
    columns = [c for c in ("FullName", "Email", "City") if c in profile.columns]
    sample = profile.loc[ids, columns]
    kind, _, attribute = (field or "").partition(".")
    if kind == "profile" and attribute in profile.columns and attribute not in columns:
        sample[attribute] = profile.loc[ids, attribute]
    elif kind == "measure" and inputs.measures is not None and attribute in inputs.measures.columns:
        values = inputs.measures.set_index(inputs.measures["CustomerId"].astype("string"))[attribute]
        sample[attribute] = values.reindex(pd.Index(ids, dtype="string")).to_numpy()
    return sample.rename_axis("CustomerId").reset_index()


def run_refresh(args) -> int:
    from ci_pipeline.config import load_config
    from ci_pipeline.config.base import did_you_mean

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
            f"segment refresh: {', '.join(unknown)} is not a static segment{did_you_mean(unknown[0], static)}; "
            f"static segments: {', '.join(static) or 'none'}"
        )
    lake = _lake(config)
    state = _read(lake, STATIC, False)
    if state is None or state.empty:
        print("no static segment members are kept yet; the next run evaluates every static segment")
        return 0
    remaining = state[~state["Segment"].isin(names)].reset_index(drop=True)
    lake.write_parquet(STATIC, remaining)
    from ci_pipeline.orchestration.refresh import release

    # Nothing the segments read has changed: without this the next incremental run would find nothing to do.
    release(lake, SEGMENT_ASSETS)
    print(f"released {', '.join(sorted(names))}; the next `ci-pipeline run` evaluates and keeps them again")
    return 0
