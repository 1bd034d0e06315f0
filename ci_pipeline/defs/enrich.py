"""Dagster definitions of the enrich stage: one step per refresh that runs every configured enrichment, writes each
one's table (``enrich/<name>``), the Enrichment output table and the fields segments read.

An enrichment that fails (its provider raised, or its parameters or connection are wrong) fails on its own: its
``provider_succeeded`` check fails with the (redacted) message, its table is not written, so its previous output
stays in the lake and in the Enrichment table, and the other enrichments, segments and publishing go on. An
inactive enrichment is skipped the same way without failing.
"""

import dagster as dg
import pandas as pd

from ci_pipeline.arrow_text import text_isin
from ci_pipeline.config import ProjectConfig
from ci_pipeline.config.enrich import AFFINITY_PROVIDERS, PROFILE_PROVIDERS, EnrichmentSpec
from ci_pipeline.defs import activities, ingest, measures, unify
from ci_pipeline.defs.metadata import bullet_list, number, numbers, table_of
from ci_pipeline.defs.registry import Produced, Stage, asset_key
from ci_pipeline.defs.resources import asset_path, stored_outputs
from ci_pipeline.defs.threaded import CUSTOMER_MODELS, EXCLUSIVE_TAG
from ci_pipeline.enrich import (
    EnrichmentFailed,
    EnrichmentInputs,
    ProviderContext,
    build_provider,
    enrichment_rows,
    enrichment_table,
    flat_fields,
    run_provider,
    segment_fields,
    shared_memo,
)
from ci_pipeline.errors import UserError
from ci_pipeline.governance.runtime import run_actor
from ci_pipeline.measures import run_date
from ci_pipeline.outputs import ENRICHMENT_COLUMNS
from ci_pipeline.redact import redact

GROUP = "enrich"
ENRICHMENT = asset_key(GROUP, "enrichment")
FIELDS = asset_key(GROUP, "enrichment_fields")
PROFILE_STATUS = asset_key(GROUP, "profile_enrichments")


def enrichment_key(name: str) -> dg.AssetKey:
    """The table of one configured enrichment: ``enrich/<name>``."""
    return asset_key(GROUP, name)


def _catalogs(config: ProjectConfig) -> set[tuple[str, str]]:
    """Source tables the affinity enrichments read as product catalogs."""
    found = set()
    for spec in config.enrich.enrichments.values():
        if spec.provider in AFFINITY_PROVIDERS and spec.affinity().catalog is not None:
            found.add((spec.affinity().catalog.source, spec.affinity().catalog.table))
    return found


class _Run:
    """What the enrichments of one run share: the profile, and inputs read from the lake only when needed."""

    def __init__(self, context: dg.AssetExecutionContext, config: ProjectConfig, profile: pd.DataFrame, tables):
        self.context, self.config, self.profile = context, config, profile
        self.lake = context.resources.lake.get_lake()
        self.tables = tables
        self._read: dict[str, pd.DataFrame | None] = {}
        self._datasets: dict[str, object] = {}
        # Work the enrichments share within this run (one scan of the purchase lines for both affinities).
        self.shared = shared_memo(config.enrich.enrichments)
        end = pd.Timestamp(run_date(config.measures.as_of), tz="UTC") + pd.Timedelta(days=1)
        self.as_of = end
        # Connections are used as whom the run acts as, as the run-start checks use the sink's and the lake's.
        self.actor, _ = run_actor(context.run.tags, config.governance.service_principal)

    def _asset(self, key: dg.AssetKey) -> pd.DataFrame | None:
        path = asset_path(key)
        if path not in self._read:
            self._read[path] = self.lake.read_parquet(path) if self.lake.exists(path) else None
        return self._read[path]

    def _dataset(self, key: dg.AssetKey):
        path = asset_path(key)
        if path not in self._datasets:
            self._datasets[path] = self.lake.dataset(path) if self.lake.exists(path) else None
        return self._datasets[path]

    def inputs(self, needs: frozenset[str]) -> EnrichmentInputs:
        facts_key = activities.STAGE.key("activity_facts")
        facts = self._asset(facts_key) if "activities" in needs else None
        dataset = self._dataset(facts_key) if "activity_dataset" in needs else None
        values = self._asset(measures.STAGE.key("customer_measure_values")) if "measures" in needs else None
        return EnrichmentInputs(self.profile, facts, values, self.as_of, self.tables, dataset, self.shared)

    def previous(self, name: str) -> pd.DataFrame | None:
        """The enrichment's last output, for the customers that still exist (merged ones leave every table)."""
        rows = self._asset(enrichment_key(name))
        if rows is None:
            return None
        return rows[text_isin(rows["CustomerId"], self.profile["CustomerId"].astype("string"))].reset_index(drop=True)

    def context_for(self, name: str, spec: EnrichmentSpec) -> ProviderContext:
        return ProviderContext(
            enrichment=name,
            project=self.config.name,
            connection=spec.connection,
            resolve_connection=self._resolve,
            cache_dir=self.lake.path(f"ci_pipeline/{GROUP}/cache"),
            lake=self.lake,
        )

    def _resolve(self, connection: str) -> dict:
        """A connection's settings with secrets, as whom the run acts as; a refusal fails the enrichment alone."""
        try:
            return _governance(self.config, self.actor).resolve_connection(connection)
        except UserError as exc:
            raise EnrichmentFailed(redact(exc)) from None


def _governance(config: ProjectConfig, actor: str | None):
    """The governance rules acting as ``actor``, whom the run acts as (:func:`run_actor`): the user who launched it,
    or for a schedule or sensor ``governance.service_principal``; a connection it uses must be shared with them."""
    from ci_pipeline.governance import open_governance

    if actor is None:
        raise UserError(
            "the run was started by a schedule or sensor, which acts as governance.service_principal, and that is "
            "not set; set it to a principal with the contributor or admin role, and share the connection with it"
        )
    return open_governance(config, actor)


def _deactivated(config: ProjectConfig, actor: str | None) -> set[str]:
    """Enrichments whose connection binding governance holds inactive (its connection was removed with --detach)."""
    governed = [name for name, spec in config.enrich.enrichments.items() if spec.connection]
    if not governed:
        return set()
    governance = _governance(config, actor)
    # Asked one by one: any role may read one binding, while the listing shows others' bindings to admins only.
    bindings = {name: governance.binding("enrichment", name) for name in governed}
    return {name for name, found in bindings.items() if found is not None and not found["active"]}


def _run_one(run: _Run, name: str, spec: EnrichmentSpec):
    """Rows, fields and metadata of one enrichment (raises EnrichmentFailed)."""
    provider = build_provider(spec.provider, spec.params, run.context_for(name, spec))
    result = run_provider(provider, run.inputs(frozenset(getattr(provider, "needs", frozenset()))), name)
    rows, counts = enrichment_rows(result, provider.name, run.profile["CustomerId"], name)
    for warning in result.warnings:
        run.context.log.warning(f"enrich: {name}: {redact(warning)}")
    fields = result.fields if result.fields is not None else flat_fields(rows)
    metadata = {k: int(v) for k, v in {**result.counts, **counts}.items()}
    metadata |= {k: v if isinstance(v, str) else number(v) for k, v in result.report.items()}
    metadata["rows"] = len(rows)
    return rows, fields, metadata


def _profile_names(config: ProjectConfig) -> list[str]:
    """The enrichments whose provider reads the profile alone (run by ``enrich_profiles``)."""
    return [name for name, spec in config.enrich.enrichments.items() if spec.provider in PROFILE_PROVIDERS]


def _table_outs(config: ProjectConfig, names: list[str]) -> tuple[dict, list]:
    """The tables ``enrich/<name>`` of ``names`` (written only when their provider succeeds) and their checks."""
    outs = {}
    for name in names:
        spec = config.enrich.enrichments[name]
        outs[name] = dg.AssetOut(
            key=enrichment_key(name),
            description=f"One row per customer and type from the {spec.provider} enrichment "
            f"({spec.description or 'enrich.enrichments.' + name}); its rows of Enrichment.",
            kinds={"pandas", "parquet"},
            is_required=False,
        )
    checks = [
        dg.AssetCheckSpec(
            "provider_succeeded",
            asset=enrichment_key(name),
            description="The provider ran and returned usable values (else the message says why; the previous "
            "output stays published).",
        )
        for name in names
    ]
    return outs, checks


def _run_all(run: _Run, names: list[str]):
    """Run the enrichments ``names``, yielding their outputs and checks; returns each one's status, the rows
    published for it and its fields."""
    try:
        deactivated = _deactivated(run.config, run.actor)
    except Exception as exc:  # governance unreachable: the enrichments with a connection fail below
        deactivated, governance_error = set(), redact(exc)
    else:
        governance_error = None
    status, parts, fields = {}, {}, {}
    for name in names:
        spec = run.config.enrich.enrichments[name]
        outcome = yield from _one(run, name, spec, name in deactivated, governance_error)
        status[name] = outcome[0]
        if outcome[1] is not None:
            parts[name] = outcome[1]
            fields[name] = outcome[2]
    return status, parts, fields


def _profile_asset(config: ProjectConfig, names: list[str]) -> dg.AssetsDefinition:
    outs, checks = _table_outs(config, names)
    outs["profile_enrichments"] = dg.AssetOut(
        key=PROFILE_STATUS,
        description="The outcome (succeeded, failed, skipped) of each enrichment that reads the profile alone, run "
        "as soon as the profile is unified; the Enrichment table takes their rows from their tables.",
        kinds={"pandas", "parquet"},
    )

    @dg.multi_asset(
        name="enrich_profiles",
        group_name=GROUP,
        ins={"customer_profile": dg.AssetIn(key=unify.STAGE.key("customer_profile"))},
        outs=outs,
        check_specs=checks,
        required_resource_keys={"lake"},
    )
    def enrich_profiles(context: dg.AssetExecutionContext, customer_profile: pd.DataFrame):
        status, _, _ = yield from _run_all(_Run(context, config, customer_profile, {}), names)
        table = pd.DataFrame({"enrichment": list(status), "status": list(status.values())}, dtype="string")
        yield dg.Output(table, output_name="profile_enrichments", metadata={"status": _status_table(status)})

    return enrich_profiles


def _enrichments_asset(config: ProjectConfig) -> dg.AssetsDefinition:
    profile_names = _profile_names(config)
    names = [name for name in config.enrich.enrichments if name not in profile_names]
    outs, checks = _table_outs(config, names)
    outs["enrichment"] = dg.AssetOut(
        key=ENRICHMENT,
        description="One row per customer, provider and enrichment type with the values as JSON (Enrichment).",
        kinds={"pandas", "parquet"},
    )
    outs["enrichment_fields"] = dg.AssetOut(
        key=FIELDS,
        description="One row per enriched customer with the fields segments read as enrichment.<name>.<field>.",
        kinds={"pandas", "parquet"},
    )
    checks.append(dg.AssetCheckSpec("matches_output_contract", asset=ENRICHMENT, description="Columns are exact."))
    ins = {"customer_profile": dg.AssetIn(key=unify.STAGE.key("customer_profile"))}
    if profile_names:
        ins["profile_enrichments"] = dg.AssetIn(key=PROFILE_STATUS)
    catalogs = sorted(_catalogs(config))
    ins |= {f"{s}__{t}": dg.AssetIn(key=ingest.table_key(s, t)) for s, t in catalogs}
    deps = [activities.STAGE.key("activity_facts")] if config.activities.tables else []
    if config.measures.attributes:
        deps.append(measures.STAGE.key("customer_measure_values"))

    @dg.multi_asset(
        name="run_enrichments",
        group_name=GROUP,
        # Never beside the predictions: each holds every customer's features at once (see defs.threaded).
        op_tags={EXCLUSIVE_TAG: CUSTOMER_MODELS},
        ins=ins,
        deps=deps,
        outs=outs,
        check_specs=checks,
        required_resource_keys={"lake"},
    )
    def enrich(context: dg.AssetExecutionContext, customer_profile: pd.DataFrame, **tables: pd.DataFrame):
        profile_status = tables.pop("profile_enrichments", None)
        tables = {f"{s}.{t}": tables[f"{s}__{t}"] for s, t in catalogs}
        run = _Run(context, config, customer_profile, tables)
        status, parts, fields = yield from _run_all(run, names)
        if profile_status is not None:
            status |= dict(zip(profile_status["enrichment"], profile_status["status"], strict=True))
        for name in profile_names:
            # As the profile step left them: this run's rows, or the last ones where the provider failed.
            rows = run.previous(name)
            if rows is not None:
                parts[name], fields[name] = rows, flat_fields(rows)
        order = list(config.enrich.enrichments)
        status = {name: status.get(name, "not run") for name in order}
        table = enrichment_table([parts[name] for name in order if name in parts])
        counts = table.groupby(["EnrichmentProvider", "EnrichmentType"]).size()
        yield from stored_outputs(
            context,
            run.lake,
            {"enrichment_fields": segment_fields(fields), "enrichment": table},
            {
                "enrichment_fields": {"enrichments": bullet_list(sorted(fields))},
                "enrichment": _enrichment_metadata(status, counts),
            },
        )
        yield dg.AssetCheckResult(
            check_name="matches_output_contract", asset_key=ENRICHMENT, passed=list(table.columns) == ENRICHMENT_COLUMNS
        )

    return enrich


def _status_table(status: dict[str, str]):
    return table_of([{"enrichment": n, "status": s} for n, s in status.items()], ["enrichment", "status"])


def _enrichment_metadata(status: dict[str, str], counts: pd.Series) -> dict:
    """Each enrichment's outcome and the rows per provider and type as native tables, the rows also as numbers the
    UI plots: both lists grow with the configured enrichments."""
    rows = [{"provider": p, "type": t, "rows": int(n)} for (p, t), n in counts.items()]
    return {
        "status": _status_table(status),
        "rows_per_type": table_of(rows, ["provider", "type", "rows"]),
        **numbers("rows", {f"{r['provider']}/{r['type']}": r["rows"] for r in rows}),
    }


def _one(run: _Run, name: str, spec: EnrichmentSpec, deactivated: bool, governance_error: str | None):
    """Run one enrichment, yielding its output and check; returns (status, rows published, fields)."""
    key = enrichment_key(name)
    if not spec.active or deactivated:
        why = "inactive in the configuration" if not spec.active else "its connection binding is inactive"
        previous = run.previous(name)
        kept = "its last output stays published" if previous is not None else "it has no earlier output"
        run.context.log.info(f"enrich: {name} skipped ({why}); {kept}")
        yield dg.AssetCheckResult(
            check_name="provider_succeeded", asset_key=key, passed=True, metadata={"skipped": why, "kept": kept}
        )
        return "skipped", previous, _previous_fields(previous)
    try:
        if spec.connection and governance_error:
            raise EnrichmentFailed(f"connection {spec.connection!r} cannot be checked: {governance_error}")
        rows, fields, metadata = _run_one(run, name, spec)
    except EnrichmentFailed as exc:
        message = redact(exc)
        previous = run.previous(name)
        kept = "its last output stays published" if previous is not None else "it has no earlier output"
        run.context.log.error(f"enrich: {name} failed; {kept}: {message}")
        yield dg.AssetCheckResult(
            check_name="provider_succeeded",
            asset_key=key,
            passed=False,
            severity=dg.AssetCheckSeverity.ERROR,
            metadata={"error": message, "kept": kept},
            # The run's summary prints the description with the failed check.
            description=f"{message}; {kept}",
        )
        return "failed", previous, _previous_fields(previous)
    yield dg.Output(rows, output_name=name, metadata=metadata)
    yield dg.AssetCheckResult(check_name="provider_succeeded", asset_key=key, passed=True)
    return "succeeded", rows, fields


def _previous_fields(previous: pd.DataFrame | None) -> pd.DataFrame | None:
    return flat_fields(previous) if previous is not None else None


def build(config: ProjectConfig, produced: Produced | None = None) -> dg.Definitions:
    """The enrich assets; none without configured enrichments."""
    if not config.enrich.enrichments:
        return dg.Definitions()
    profile_names = _profile_names(config)
    assets = [_profile_asset(config, profile_names)] if profile_names else []
    return dg.Definitions(assets=[*assets, _enrichments_asset(config)])


STAGE = Stage(
    name=GROUP,
    section="enrich",
    front_door=enrichment_table,
    build=build,
    summary="brand and interest affinity and provider enrichments per customer, and Enrichment",
    assets={"enrichment": ENRICHMENT, "enrichment_fields": FIELDS},
    produces={"Enrichment": ENRICHMENT},
    active=lambda config: bool(config.enrich.enrichments),
)
