"""Dagster definitions of the unify stage: one multi-asset runs unification and emits every unify table.

Run modes are asset selections (see :func:`selections`): ``match`` (dedup tables, match pairs, statistics: no id
is issued or changed), ``unify`` (the whole group, identity map included) and ``unify_downstream``.
"""

import json
from collections.abc import Set as AbstractSet
from datetime import UTC, datetime

import dagster as dg
import pandas as pd

from ci_pipeline.arrow_text import text_isin
from ci_pipeline.config import ProjectConfig
from ci_pipeline.defs import ingest
from ci_pipeline.defs.metadata import FIRST_N, bullet_list, counts_table, numbers, table_of
from ci_pipeline.defs.refresh import STORED_AT
from ci_pipeline.defs.registry import REFRESH_TAG, REFRESHED, JobSpec, Produced, Stage, asset_key
from ci_pipeline.defs.resources import LakeResource, asset_path, stored_outputs
from ci_pipeline.errors import StorageError
from ci_pipeline.orchestration.files import FileState
from ci_pipeline.side_by_side import started
from ci_pipeline.unify import (
    MODEL_PATH,
    OUTCOMES,
    SETTINGS_PATH,
    TRAIN_STEP,
    ProbabilisticMatches,
    TrainingMatches,
    UnifyResult,
    check_settings,
    model_json,
    read_model,
    train_from_tables,
    unify,
)
from ci_pipeline.unify.engine import WEAKEST_LISTED, size_cap_summary
from ci_pipeline.unify.incremental import read_state, report_text, state_ahead
from ci_pipeline.unify.probabilistic.chart import weight_bars
from ci_pipeline.unify.probabilistic.model import NOTHING_TO_DO

GROUP = "unify"
KINDS = {"pandas"}
#: The unify tables every configuration has.
TABLES = (
    "customer_profile",
    "alternate_key",
    "match_pairs",
    "dedup_records",
    "id_change",
    "identity_map",
    "unify_stats",
)
#: Where the full list of the over-merge guard's events is kept (the asset page shows the first few).
GUARD_EVENTS_PATH = "ci_pipeline/unify/guard_events.json"


def key(name: str) -> dg.AssetKey:
    """The key of a unify asset: ``unify/<name>``."""
    return asset_key(GROUP, name)


def selections(config: ProjectConfig) -> dict[str, dg.AssetSelection]:
    """Asset selections for the run modes: ``match``, ``unify``, ``unify_downstream`` (empty without unify)."""
    if config.unify is None:
        return {}
    match_keys = [key("match_pairs"), key("unify_stats"), key("dedup_records")]
    # The match model is retrained on demand (or by its job), never as part of a unify run.
    group = dg.AssetSelection.groups(GROUP) & REFRESHED
    return {
        "match": dg.AssetSelection.assets(*match_keys),
        "unify": group,
        "unify_downstream": group | group.downstream(),
    }


def jobs(config: ProjectConfig, keys: AbstractSet[dg.AssetKey]) -> list[JobSpec]:
    """The unify run modes: matching only, unification only, and unification with every stage after it."""
    group = dg.AssetSelection.groups(GROUP) & REFRESHED
    found = []
    if key("match_pairs") in keys:
        found.append(
            JobSpec(
                "match_only",
                dg.AssetSelection.assets(key("match_pairs")).upstream() & group,
                "Re-run matching on the last ingested data: the unify steps up to the match pairs.",
                "partial",
            )
        )
    if key("match_model") in keys:
        found.append(
            JobSpec(
                "train_match_model",
                dg.AssetSelection.assets(key("match_model")),
                "Retrain the probabilistic match model on the last ingested data (monthly by default; the runs between "
                "score with the stored model).",
                "partial",
            )
        )
    return [
        *found,
        # Not plain "unify": job names share a namespace with the stages' op names.
        JobSpec("unify_only", group, "Unification only, on the last ingested data.", "partial"),
        JobSpec(
            "unify_and_downstream", group.downstream() & REFRESHED, "Unification and every stage after it.", "partial"
        ),
    ]


def build(config: ProjectConfig, produced: Produced | None = None) -> dg.Definitions:
    """The unify assets and checks for a configuration (nothing when ``unify`` is not configured)."""
    if config.unify is None:
        return dg.Definitions()
    if config.unify.match.method != "probabilistic":
        return dg.Definitions(assets=[_unify_asset(config)])
    # A mistake in the model's settings (unknown kind or level, thresholds out of order) fails when the definitions
    # load, naming its key, rather than at the first training or scoring run.
    check_settings(config.unify)
    return dg.Definitions(assets=[_unify_asset(config), _model_asset(config)])


def _unify_asset(config: ProjectConfig):
    ucfg = config.unify
    tables = [(t.source, t.table) for t in ucfg.tables]
    ins = {f"{s}__{t}": dg.AssetIn(key=ingest.table_key(s, t)) for s, t in tables}
    described = {
        "customer_profile": "One row per unified customer: CustomerId, unified attributes, one key column per table.",
        "alternate_key": "One row per source record that took part in unification, with its customer and KeyRing.",
        "match_pairs": "One row per candidate pair and rule evaluated: both records, per-condition scores, accepted.",
        "dedup_records": "One row per record of each customer table (Source, Table, Key): its duplicate group's "
        "winner key, whether it won and the group's size.",
        "id_change": "One row per CustomerId change in any run: old id, new id, reason (new/merged/split/removed).",
        "identity_map": "One row per source record: the CustomerId it had in the last unify run.",
        "unify_stats": "One row per customer table: records, duplicates, matched and unmatched records.",
    }
    outs = {
        key(name).to_python_identifier(): dg.AssetOut(
            key=key(name), description=text, group_name=GROUP, kinds=KINDS, is_required=False
        )
        for name, text in described.items()
    }
    profile, alternate = key("customer_profile"), key("alternate_key")
    check_specs = [
        dg.AssetCheckSpec("every_record_one_customer", asset=alternate, description="each record maps to one customer"),
        dg.AssetCheckSpec("customer_ids_unique", asset=profile, description="CustomerId is unique"),
        dg.AssetCheckSpec("no_customer_without_record", asset=profile, description="every customer has a record"),
        dg.AssetCheckSpec(
            "cluster_size_guard",
            asset=profile,
            description=f"no customer holds more than {ucfg.guard.max_cluster_size} records",
        ),
    ]
    primary_keys = {(s, t): config.sources[s].tables[t].primary_key for s, t in tables}

    probabilistic = ucfg.match.method == "probabilistic"

    @dg.multi_asset(
        name="unification",
        outs=outs,
        ins=ins,
        deps=[key("match_model")] if probabilistic else [],
        check_specs=check_specs,
        can_subset=True,
    )
    def _unify(context: dg.AssetExecutionContext, lake: LakeResource, **inputs):
        store = lake.get_lake()
        previous = _read_optional(store, key("identity_map"))
        history = _read_optional(store, key("id_change"))
        frames = {(s, t): inputs[f"{s}__{t}"] for s, t in tables}
        method = {}
        if probabilistic:
            method["match_method"] = _match_method(context, store, config)
        state, no_state = read_state(store)
        result = unify(
            ucfg,
            frames,
            primary_keys,
            previous,
            history,
            context.run_id,
            config.base_dir,
            **method,
            state=state,
            no_state=no_state,
        )
        if isinstance(method.get("match_method"), TrainingMatches):
            _store_trained(context, store, frames, method["match_method"])
        plan = result.stats["incremental"]
        context.log.info(f"unify: {report_text(plan)}")
        for warning in result.warnings:
            context.log.warning(warning)
        selected = context.selected_asset_keys
        outputs = {
            "customer_profile": result.customer_profile,
            "alternate_key": result.alternate_key,
            "match_pairs": result.match_pairs,
            "dedup_records": dedup_records(result.dedup),
            "id_change": result.identity.id_change,
            "identity_map": result.identity.identity_map,
            "unify_stats": pd.DataFrame(result.stats["tables"]),
        }
        if key("unify_stats") in selected:
            store.write_bytes(GUARD_EVENTS_PATH, json.dumps(result.stats["guard_events"], indent=1).encode())
        # Written beside the outputs, made the state last: a run that fails before then leaves the last good state,
        # which still describes what it saw.
        state = state_ahead(store, result.state)
        chosen = {key(name).to_python_identifier(): frame for name, frame in outputs.items() if key(name) in selected}
        yield from _stored(context, store, result, chosen, ucfg.guard.max_cluster_size)
        state.commit()

    return _unify


def _match_method(context, store, config: ProjectConfig) -> ProbabilisticMatches:
    """Scoring with the stored match model; without one, a method that trains one in this run, on the run's own
    prepared records (stored after the run by ``_store_trained``)."""
    if store.exists(MODEL_PATH):
        model = read_model(store.read_bytes(MODEL_PATH), store.url(MODEL_PATH))
        stored = FileState.from_info(store.info(MODEL_PATH)).mtime
        when = "" if stored is None else f" on {datetime.fromtimestamp(stored, UTC):%Y-%m-%d %H:%M} UTC"
        context.log.info(
            f"unify: scoring with the stored match model at {store.url(MODEL_PATH)}, stored{when}, trained on "
            f"{model.training.get('records', 0):,} records; to retrain it: {TRAIN_STEP}"
        )
        return ProbabilisticMatches(model)
    context.log.warning(
        f"unify: no stored match model at {store.url(MODEL_PATH)}; training one in this run and storing it, so "
        f"that the next runs score with it (fast, and CustomerIds steady), with the settings it chose as YAML to "
        f"paste and edit in {store.url(SETTINGS_PATH)}; to retrain it: {TRAIN_STEP}"
    )
    return TrainingMatches(config.base_dir)


def _store_trained(context, store, frames: dict, trained: TrainingMatches) -> None:
    """Store the model a unification run trained (kept, as the predictions keep theirs: not every nightly run
    training its own on that night's data), recorded as the model asset's materialization so the UI shows it."""
    metadata = _store_model(context, store, trained.model, trained.said, frames)
    context.log_event(
        dg.AssetMaterialization(key("match_model"), description="trained by unification", metadata=metadata)
    )


#: What the stored settings are for, atop the file and in the log.
PASTE_HINT = "paste under unify.match to keep or edit them; a key left out keeps the default's choice"


def _store_model(context, store, model, said: list[str], frames: dict) -> dict:
    """Log training's warnings and chosen settings, store the model at ``MODEL_PATH`` and its settings as YAML at
    ``SETTINGS_PATH``; its metadata."""
    chose = set(model.training.get("notes", []))
    for warning in said:
        # What the default chose (and left out) is in the settings file as comments, and what training handled by
        # design needs nothing of the user: only the rest warns.
        inform = warning in chose or warning.endswith(f"{NOTHING_TO_DO})")
        (context.log.info if inform else context.log.warning)(f"unify.match_model: {warning}")
    store.write_bytes(MODEL_PATH, model_json(model))
    settings = model.training["settings_yaml"]
    store.write_bytes(SETTINGS_PATH, f"# {PASTE_HINT}\n{settings}".encode())
    context.log.info(f"unify.match_model: trained with these settings ({PASTE_HINT}):\n{settings}")
    return _model_metadata(model, frames, store.url(MODEL_PATH), context.run_id)


def _model_asset(config: ProjectConfig):
    """``unify/match_model``: the probabilistic model trained on the last ingested customer tables, stored in the
    lake as JSON; unification scores with it until it is materialized again."""
    ucfg = config.unify
    tables = [(t.source, t.table) for t in ucfg.tables]
    primary_keys = {(s, t): config.sources[s].tables[t].primary_key for s, t in tables}

    @dg.asset(
        key=key("match_model"),
        group_name=GROUP,
        kinds={"json"},
        ins={f"{s}__{t}": dg.AssetIn(key=ingest.table_key(s, t)) for s, t in tables},
        tags={REFRESH_TAG: "on_demand"},
        metadata={STORED_AT: MODEL_PATH},
        description="The probabilistic match model (m and u per comparison level, prior, EM trace), trained on "
        "the customer tables; retrain it on demand, since unification scores every run with the stored model.",
    )
    def match_model(context: dg.AssetExecutionContext, lake: LakeResource, **inputs) -> dg.MaterializeResult:
        frames = {(s, t): inputs[f"{s}__{t}"] for s, t in tables}
        model, said = train_from_tables(config.unify, frames, primary_keys, config.base_dir)
        return dg.MaterializeResult(metadata=_store_model(context, lake.get_lake(), model, said, frames))

    return match_model


def _model_metadata(model, frames: dict, url: str, run_id: str) -> dict:
    """What the model learnt, as native tables: m, u and weight per level, the EM trace; the prior and the
    iterations as numbers the UI plots over retrainings; what it was trained on."""
    fits = [("main", model.parameters)] + [(_stratum_name(s), s.parameters) for s in model.strata]
    levels = [row for fit, parameters in fits for row in _level_rows(fit, parameters)]
    bars = weight_bars(
        [
            (f"{p.name} {level}", w)
            for p in model.parameters
            if p.active
            for level, w in zip(p.levels, p.weights, strict=True)
        ]
    )
    strata = [
        {
            "stratum": _stratum_name(s),
            "pairs": s.pairs,
            "match_share": _significant(s.share),
            "prior_weight": round(s.prior_weight, 3),
            "converged": s.converged,
        }
        for s in model.strata
    ]
    return {
        "parameters": table_of(levels, ["fit", "comparison", "level", "m", "u", "weight", "note"]),
        # Pairs agreeing on a stratum's key are weighed by its own fit (prior, m and u), not the main one.
        "strata": table_of(strata, ["stratum", "pairs", "match_share", "prior_weight", "converged"]),
        # The same weights drawn: against a match left of the axis, for one right of it.
        "weights_chart": dg.MetadataValue.md("```\n" + "\n".join(bars) + "\n```"),
        "prior_match_probability": dg.MetadataValue.float(float(model.prior)),
        "prior_weight": dg.MetadataValue.float(round(float(model.prior_weight), 3)),
        "path": dg.MetadataValue.path(url),
        "converged": model.converged,
        "iterations": len(model.trace),
        "trace": table_of(
            [{k: (round(v, 6) if isinstance(v, float) else v) for k, v in vars(i).items()} for i in model.trace],
            ["iteration", "match_share", "change", "log_likelihood"],
        ),
        **_training_metadata(model.training, run_id, {f"{s}.{t}": len(f) for (s, t), f in frames.items()}),
        "settings": dg.MetadataValue.md(f"```yaml\n{model.training['settings_yaml']}```"),
    }


def _stratum_name(stratum) -> str:
    """A stratum by its keys: ``stratum [email] or [phone]``."""
    return "stratum " + " or ".join(f"[{', '.join(key)}]" for key in stratum.keys)


def _significant(x: float) -> float:
    """Four significant digits: a u of 3.2e-07 rounded to six decimals would read 0, and its weight not add up."""
    return float(f"{x:.4g}")


def _level_rows(fit: str, parameters) -> list[dict]:
    """A fit's m, u and weight per level, and why a comparison carries no evidence."""
    rows = [
        {"fit": fit, "comparison": p.name, "level": level, "m": _significant(m), "u": _significant(u)}
        | {"weight": round(w, 3), "note": ""}
        for p in parameters
        for level, m, u, w in zip(p.levels, p.m, p.u, p.weights, strict=True)
    ]
    rows += [{"fit": fit, "comparison": p.name, "level": "(no evidence)", "note": p.note} for p in parameters if p.note]
    return rows


def _read_optional(store, asset_key: dg.AssetKey) -> pd.DataFrame | None:
    relative = asset_path(asset_key)
    try:
        return store.read_parquet(relative) if store.exists(relative) else None
    except StorageError:
        raise
    except Exception as exc:  # a damaged file must not silently reset every CustomerId
        raise StorageError(
            f"{store.url(relative)}: cannot read the last run's {asset_key.path[-1]} ({exc}); restore it or delete it "
            "on purpose to issue ids afresh"
        ) from exc


def _stored(context, store, result: UnifyResult, outputs: dict[str, pd.DataFrame], cap: int):
    """The outputs (by output name), stored two at a time while the checks run beside them (all of it mostly
    outside Python's lock), then the checks' results."""
    checked = started(lambda: list(_checks(context, result, cap)), "unify-checks")
    described = {
        key(name).to_python_identifier(): m for name, m in output_metadata(result, store.url(GUARD_EVENTS_PATH)).items()
    }
    yield from stored_outputs(context, store, outputs, described)
    yield from checked.result()


def _checks(context, result: UnifyResult, cap: int):
    wanted = context.selected_asset_check_keys
    profile, alternate = key("customer_profile"), key("alternate_key")
    ak = result.alternate_key
    prof = result.customer_profile
    checks = {
        (alternate, "every_record_one_customer"): lambda: _result(
            len(ak) == len(result.records)
            and ak["msdynci_identifier"].is_unique
            and ak["CustomerId"].notna().all()
            and text_isin(ak["CustomerId"], prof["CustomerId"]).all(),
            {"records_in": len(result.records), "alternate_keys": len(ak)},
        ),
        (profile, "customer_ids_unique"): lambda: _result(
            prof["CustomerId"].is_unique and prof["CustomerId"].notna().all(),
            {"duplicates": int(prof["CustomerId"].duplicated().sum())},
        ),
        (profile, "no_customer_without_record"): lambda: _result(
            (missing := int((~text_isin(prof["CustomerId"], ak["CustomerId"])).sum())) == 0,
            {"customers_without_record": missing},
        ),
        # The guard keeps every customer within the cap, so the check warns when it had to cut a group at the cap:
        # where such a group is cut depends on link order, not on who the people are.
        (profile, "cluster_size_guard"): lambda: _result(
            result.stats["guard_splits"]["size_cap_groups"] == 0 and result.stats["largest_cluster"] <= cap,
            {
                "largest_cluster": result.stats["largest_cluster"],
                "guard_events": len(result.stats["guard_events"]),
                **{k: v for k, v in result.stats["guard_splits"].items() if k.startswith("size_cap_")},
            },
            severity=dg.AssetCheckSeverity.WARN,
            description=size_cap_summary(result.stats["guard_splits"], cap),
        ),
    }
    for (asset, name), run in checks.items():
        if dg.AssetCheckKey(asset, name) in wanted:
            passed, metadata, severity, description = run()
            yield dg.AssetCheckResult(
                asset_key=asset,
                check_name=name,
                passed=bool(passed),
                metadata=metadata,
                severity=severity,
                description=None if passed else description,
            )


def _result(passed, metadata, severity=dg.AssetCheckSeverity.ERROR, description: str | None = None):
    return passed, metadata, severity, description


def dedup_records(dedup: dict[tuple[str, str], pd.DataFrame]) -> pd.DataFrame:
    """The per-table dedup tables as one table, each row led by its ``Source`` and ``Table``."""
    frames = [frame.assign(Source=source, Table=table_name) for (source, table_name), frame in dedup.items()]
    if not frames:
        return pd.DataFrame(columns=["Source", "Table", "Key", "WinnerKey", "IsWinner", "GroupSize"])
    both = pd.concat(frames, ignore_index=True)
    both[["Source", "Table"]] = both[["Source", "Table"]].astype("string")
    return both[["Source", "Table", *[c for c in both.columns if c not in ("Source", "Table")]]]


def output_metadata(result: UnifyResult, guard_events_url: str) -> dict[str, dict]:
    """Each unify table's statistics in native forms: numbers the UI plots over runs (customers, pairs accepted per
    rule, id changes by reason, guard splits) and small tables (rules, cluster sizes, per-table counts)."""
    s = result.stats
    this_run = result.identity.id_change
    this_run = this_run[this_run["Run"] == result.identity.run]
    changes = this_run.groupby("Reason")["Records"].size()
    reasons = {reason: int(changes.get(reason, 0)) for reason in ("new", "merged", "split", "moved", "removed")}
    duplicates = [{"table": t["table"], "records": t["records"], "duplicates": t["duplicates"]} for t in s["tables"]]
    return {
        "customer_profile": {
            "customers": s["customers"],
            "records_in": s["records_in"],
            "largest_cluster": s["largest_cluster"],
            "cluster_sizes": table_of(
                [{"records per customer": size, "customers": n} for size, n in s["cluster_sizes"].items()],
                ["records per customer", "customers"],
            ),
            # Customers held together by chains of single links: the ones to review first.
            "weakly_held_customers": s["cluster_density"]["weakly_held"],
            f"weakly_held_customers (weakest {WEAKEST_LISTED})": table_of(
                s["cluster_density"]["weakest"], ["customer_id", "records", "links", "density"]
            ),
        },
        "match_pairs": {
            "pairs_candidates": sum(r["candidates"] for r in s["rules"]),
            "pairs_accepted": sum(r["accepted"] for r in s["rules"]),
            **numbers("accepted", {f"{r['stage']}.{r['rule']}": r["accepted"] for r in s["rules"]}),
            "rules": table_of(s["rules"], ["stage", "rule", "candidates", "accepted", "linked"]),
        },
        "dedup_records": {
            **numbers("duplicates", {d["table"]: d["duplicates"] for d in duplicates}),
            "tables": table_of(duplicates, ["table", "records", "duplicates"]),
        },
        "id_change": {**numbers("id changes", reasons), "id_changes_this_run": sum(reasons.values())},
        "unify_stats": _stats_metadata(result, guard_events_url),
    }


def _stats_metadata(result: UnifyResult, guard_events_url: str) -> dict:
    s = result.stats
    events = s["guard_events"]
    columns = ["records", "parts", "reason", "links_skipped_size", "links_skipped_never_match"]
    found = {
        "records_in": s["records_in"],
        "customers": s["customers"],
        "matched_records": sum(t["matched"] for t in s["tables"]),
        "unmatched_records": sum(t["unmatched"] for t in s["tables"]),
        **numbers("matched", {t["table"]: t["matched"] for t in s["tables"]}),
        **numbers("unmatched", {t["table"]: t["unmatched"] for t in s["tables"]}),
        "tables": table_of(s["tables"], ["table", "records", "duplicates", "matched", "unmatched"]),
        "rules": table_of(s["rules"], ["stage", "rule", "candidates", "accepted", "linked"]),
        "guard_events": len(events),
        f"guard_events (first {FIRST_N})": table_of(events[:FIRST_N], [*columns, "links_skipped_conflict"]),
        "guard_events_file": dg.MetadataValue.path(guard_events_url),
        **numbers("guard_split", s["guard_splits"]),
        "incremental": s["incremental"]["incremental"],
        "incremental_reason": s["incremental"]["reason"],
        **numbers(
            "incremental", {k: v for k, v in s["incremental"].items() if isinstance(v, int) and k != "incremental"}
        ),
        "frequent_values_ignored": table_of(
            [
                {"field": name, "values": f["values"], "records": f["records"], "top": _top(f["top"])}
                for name, f in s["frequent_values_ignored"].items()
            ],
            ["field", "values", "records", "top"],
        ),
        "seconds_per_phase": table_of(
            [{"phase": phase, "seconds": round(float(sec), 3)} for phase, sec in result.timings.items()],
            ["phase", "seconds"],
        ),
        "warnings": bullet_list(result.warnings),
        "uncomparable_records": counts_table(s["uncomparable_records"], "table", "records"),
        "unreadable_dates": table_of(
            [{"column": where, **u} for where, u in s["unreadable_dates"].items()], ["column", "values", "example"]
        ),
        "placeholders_kept": counts_table(s["placeholders_kept"], "field", "customers"),
    }
    if s["attach"]:
        found["attach"] = table_of(s["attach"], ["rule", "thin_customers", *OUTCOMES])
    if "match_method" in s:
        found |= _match_method_metadata(s["match_method"])
    return found


def _match_method_metadata(report: dict) -> dict:
    """The match model's scoring: its counts as numbers the UI plots, the pairs per blocking rule and the seconds
    per part as tables (both grow with the settings), the settings as YAML to paste."""
    shown = ("threshold", "candidate_pairs", "links", "links_expected_precision", "links_expected_wrong", "near_misses")
    plotted = {k: report[k] for k in shown if report.get(k) is not None}
    return {
        "match_method": report.get("method", ""),
        **numbers("match_method", plotted),
        "match_pairs_per_blocking_rule": counts_table(report.get("pairs_per_rule", {}), "blocking rule", "pairs"),
        "match_seconds": table_of(
            [{"part": part, "seconds": round(float(sec), 3)} for part, sec in report.get("seconds", {}).items()],
            ["part", "seconds"],
        ),
        "match_settings": dg.MetadataValue.md(f"```yaml\n{report.get('settings_yaml', '')}```"),
    }


def _training_metadata(training: dict, run_id: str, tables: dict[str, int]) -> dict:
    """What the match model was trained on: the records and pairs as numbers, the records per table and the pairs
    per training blocking rule as tables, the warnings as a list (the lists grow with tables and rules)."""
    fixed = (
        "records",
        "random_pairs",
        "blocked_pairs",
        "blocked_pairs_in_strata",
        "expected_matches",
        "labelled_matches",
    )
    return {
        "training_run_id": run_id,
        "training_chosen": str(training.get("chosen", "")),
        **numbers("training", {k: training[k] for k in fixed if k in training}),
        "training_tables": counts_table(tables, "table", "records"),
        "training_pairs_per_rule": table_of(training.get("pairs_per_rule", []), ["rule", "pairs", "new"]),
        "training_warnings": bullet_list(training.get("warnings", [])),
    }


def _top(values: list) -> str:
    return ", ".join(f"{value!s} ({n})" for value, n in values)


STAGE = Stage(
    name=GROUP,
    section="unify",
    front_door=unify,
    build=build,
    summary="CustomerProfile, AlternateKey, match pairs with per-condition scores, id changes, identity map",
    assets={name: key(name) for name in TABLES},
    produces={"CustomerProfile": key("customer_profile"), "AlternateKey": key("alternate_key")},
    active=lambda config: config.unify is not None,
    jobs=jobs,
)
