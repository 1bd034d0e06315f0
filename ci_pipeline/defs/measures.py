"""Dagster definitions of the measures stage: CustomerMeasure, typed measure values, one table per measure."""

import dagster as dg
import pandas as pd

from ci_pipeline.activities import FACT_COLUMNS
from ci_pipeline.config import ProjectConfig
from ci_pipeline.config.measures import MeasuresConfig
from ci_pipeline.defs import activities, unify
from ci_pipeline.defs.metadata import FIRST_N, number, numbers, table_of
from ci_pipeline.defs.registry import Produced, Stage, asset_key
from ci_pipeline.defs.resources import LakeResource, asset_path
from ci_pipeline.measures import StoredFacts, compute_measures, customer_measure_table, distribution, run_date
from ci_pipeline.measures.incremental import compute_incremental, read_state, write_state
from ci_pipeline.orchestration import MODE_TAG
from ci_pipeline.outputs import CUSTOMER_MEASURE_COLUMNS

GROUP = "measures"
CUSTOMER_MEASURE = asset_key(GROUP, "customer_measure")
VALUES = asset_key(GROUP, "customer_measure_values")

#: The columns of the attribute measures' distribution table, and the figures plotted per measure.
_STAT_COLUMNS = ("customers", "nulls", "non_finite", "min", "mean", "median", "max", "distinct")
_PLOTTED = ("mean", "max", "nulls")
#: The warning check of the assets of measures with filters.
FILTERS_CHECK = "filters_match_activities"


def _outs_and_checks(section: MeasuresConfig) -> tuple[dict[str, dg.AssetOut], list[dg.AssetCheckSpec]]:
    """The outputs of the measures step (CustomerMeasure and its typed values, one table per customer or business
    measure) and the checks on CustomerMeasure."""
    outs: dict[str, dg.AssetOut] = {}
    checks: list[dg.AssetCheckSpec] = []
    if section.attributes:
        outs["customer_measure"] = dg.AssetOut(
            key=CUSTOMER_MEASURE,
            description="One row per customer with every customer attribute measure as JSON (CustomerMeasure).",
            kinds={"pandas", "parquet"},
        )
        outs["customer_measure_values"] = dg.AssetOut(
            key=VALUES,
            description="One row per customer with one typed column per customer attribute measure.",
            kinds={"pandas", "parquet"},
        )
        checks += [
            dg.AssetCheckSpec("matches_output_contract", asset=CUSTOMER_MEASURE, description="Columns are exact."),
            dg.AssetCheckSpec(
                "every_customer_present", asset=CUSTOMER_MEASURE, description="One row per profile customer."
            ),
        ]
    for name, spec in sorted({**section.customer, **section.business}.items()):
        kind = "customer" if name in section.customer else "business"
        what = (
            "customer and " + ", ".join(spec.dimensions)
            if kind == "customer"
            else (", ".join(spec.dimensions) or "the whole business (a single row)")
        )
        outs[name] = dg.AssetOut(
            key=asset_key(GROUP, name),
            description=f"One row per {what}: the {kind} measure {name}. {spec.description}".strip(),
            kinds={"pandas", "parquet"},
        )
    checks += [
        dg.AssetCheckSpec(FILTERS_CHECK, asset=asset, description="Every filter matches some row of its activities.")
        for asset in sorted(set(_filter_assets(section).values()), key=lambda k: k.to_user_string())
    ]
    return outs, checks


def _filter_assets(section: MeasuresConfig) -> dict[str, dg.AssetKey]:
    """Key path (``measures.attributes.x``) -> the asset of each measure with filters: CustomerMeasure for the
    attributes, the measure's own table for the others."""
    found = {}
    for kind in ("attributes", "customer", "business"):
        for name, spec in getattr(section, kind).items():
            if spec.where:
                found[f"measures.{kind}.{name}"] = CUSTOMER_MEASURE if kind == "attributes" else asset_key(GROUP, name)
    return found


def _filter_checks(section: MeasuresConfig, warnings: list[str]):
    """One warning check per asset whose measures have filters: failed when one matched none of its activities'
    rows (the run's summary prints the description)."""
    assets = _filter_assets(section)
    for asset in sorted(set(assets.values()), key=lambda k: k.to_user_string()):
        mine = [w for w in warnings if assets.get(w.split(".where[", 1)[0]) == asset]
        yield dg.AssetCheckResult(
            check_name=FILTERS_CHECK,
            asset_key=asset,
            passed=not mine,
            severity=dg.AssetCheckSeverity.WARN,
            metadata={"filters_matching_nothing": len(mine)},
            description="; ".join(mine) or None,
        )


def _no_facts() -> pd.DataFrame:
    """The facts of a project without activities: no rows, the facts' columns."""
    facts = pd.DataFrame({c: pd.Series(dtype="string") for c in FACT_COLUMNS})
    facts["ActivityTimeStamp"] = pd.Series(dtype="datetime64[ns, UTC]")
    return facts


def build(config: ProjectConfig, produced: Produced | None = None) -> dg.Definitions:
    """The measures assets and checks; none when no measures are configured."""
    section = config.measures
    if not (section.attributes or section.customer or section.business):
        return dg.Definitions()
    has_activities = bool(config.activities.tables)
    record_level = config.orchestration.record_level_increments
    outs, checks = _outs_and_checks(section)
    ins = {"customer_profile": dg.AssetIn(key=unify.STAGE.key("customer_profile"))}
    facts_key = activities.STAGE.key("activity_facts")

    # The facts are read from the lake here, in parts of whole customers and only the columns the measures name:
    # the IO manager would load every semantic field of every activity at once.
    @dg.multi_asset(
        name="compute_measures",
        group_name=GROUP,
        ins=ins,
        deps=[facts_key] if has_activities else [],
        outs=outs,
        check_specs=checks,
    )
    def measures(context: dg.AssetExecutionContext, lake: LakeResource, customer_profile: pd.DataFrame):
        as_of = run_date(section.as_of)
        store, state = lake.get_lake(), None
        if has_activities and record_level:
            facts = StoredFacts(store.dataset(asset_path(facts_key)))
            if context.run.tags.get(MODE_TAG) == "full":
                state, absent = None, "a full refresh computes every customer"
            else:
                state, absent = read_state(store)
            result, state, report = compute_incremental(
                section, customer_profile["CustomerId"], facts, as_of, state, absent
            )
            context.log.info(f"measures: {'incremental' if report['incremental'] else 'every customer'} {report}")
        else:
            facts = StoredFacts(store.dataset(asset_path(facts_key))) if has_activities else _no_facts()
            result = compute_measures(section, customer_profile["CustomerId"], facts, as_of)
        context.log.info(f"measures as of {as_of}: {len(result.attributes)} customers")
        for warning in result.warnings:
            context.log.warning(f"measures: {warning}")
        if result.non_finite:
            context.log.warning(
                f"measures with results that are not finite numbers, published as null: {result.non_finite}"
            )
        if section.attributes:
            table = customer_measure_table(result.attributes)
            stats = {
                name: distribution(result.attributes[name], result.non_finite.get(name, 0))
                for name in sorted(section.attributes)
            }
            yield dg.Output(
                table,
                output_name="customer_measure",
                metadata={
                    "as_of": str(as_of),
                    # One row per measure (a JSON of every measure would outgrow the page), and each measure's
                    # mean, maximum and nulls as numbers the UI plots over runs.
                    "distribution": table_of(
                        [{"measure": n, **s} for n, s in stats.items()], ["measure", *_STAT_COLUMNS]
                    ),
                    **{
                        k: v
                        for n, s in stats.items()
                        for k, v in numbers(f"measure/{n}", {x: s[x] for x in _PLOTTED if x in s}).items()
                    },
                },
            )
            yield dg.Output(result.attributes, output_name="customer_measure_values", metadata={"as_of": str(as_of)})
            yield dg.AssetCheckResult(
                check_name="matches_output_contract",
                asset_key=CUSTOMER_MEASURE,
                passed=list(table.columns) == CUSTOMER_MEASURE_COLUMNS,
            )
            expected = customer_profile["CustomerId"].astype("string").nunique()
            yield dg.AssetCheckResult(
                check_name="every_customer_present",
                asset_key=CUSTOMER_MEASURE,
                passed=len(table) == expected and table["CustomerId"].is_unique,
                metadata={"rows": len(table), "customers": int(expected)},
            )
        for name, frame in sorted({**result.customer, **result.business}.items()):
            summary = distribution(frame["Value"], result.non_finite.get(name, 0))
            metadata = {"as_of": str(as_of), "distribution": dg.MetadataValue.json(summary)}
            if name in result.business and len(frame) == 1 and not section.business[name].dimensions:
                value = frame["Value"].iloc[0]
                metadata["value"] = number(float(value)) if pd.notna(value) else "null"
            elif name in result.business:
                # A dimensioned business measure can have many rows: the page shows the first few as a table.
                metadata[f"values (first {FIRST_N})"] = table_of(
                    frame.head(FIRST_N).astype(str).to_dict("records"), [str(c) for c in frame.columns]
                )
            yield dg.Output(frame, output_name=name, metadata=metadata)
        yield from _filter_checks(section, result.warnings)
        if state is not None:
            # Kept last: a run that fails before here leaves the last good state, which still describes what it saw.
            write_state(store, state)

    return dg.Definitions(assets=[measures])


STAGE = Stage(
    name=GROUP,
    section="measures",
    front_door=compute_measures,
    build=build,
    summary="CustomerMeasure plus one table per customer or business measure",
    assets={"customer_measure": CUSTOMER_MEASURE, "customer_measure_values": VALUES},
    produces={"CustomerMeasure": CUSTOMER_MEASURE},
    active=lambda config: bool(config.measures.attributes),
)
