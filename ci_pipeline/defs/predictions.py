"""Dagster definitions of the predictions stage: a training asset per model (on demand and monthly) and one
scoring step per refresh that writes each model's table, the prediction fields segments read, and Prediction.

A model whose data is not enough (``InsufficientData``), whose stored model no longer fits the data, or whose
training or scoring raises an unexpected error (``ModelFailed``) fails on its own: its training asset fails; in a
refresh its table is not written, its ``enough_data`` check fails with the message, and Prediction, segments and
publishing go on with the other models.
"""

import datetime as dt
import hashlib
import json
from collections.abc import Set as AbstractSet

import dagster as dg
import pandas as pd

from ci_pipeline.config import ProjectConfig
from ci_pipeline.config.activities import field_origin
from ci_pipeline.config.predictions import MODEL_NAMES, PredictionsConfig
from ci_pipeline.defs import activities, unify
from ci_pipeline.defs.metadata import counts_table, entries_table, numbers, table_of
from ci_pipeline.defs.refresh import STORED_AT
from ci_pipeline.defs.registry import REFRESH_TAG, JobSpec, Produced, Stage, asset_key
from ci_pipeline.defs.resources import asset_path, stored_outputs
from ci_pipeline.defs.threaded import CUSTOMER_MODELS, EXCLUSIVE_TAG, PRIORITY_TAG
from ci_pipeline.errors import UserError
from ci_pipeline.orchestration import MODE_TAG
from ci_pipeline.outputs import PREDICTION_COLUMNS
from ci_pipeline.predictions import (
    ModelRuns,
    PredictionSettings,
    StoredModel,
    Trained,
    fact_columns,
    model_summary,
    prediction_table,
    read_facts,
    scoring_cutoff,
    segment_fields,
)
from ci_pipeline.predictions.charts import draw_report_charts, markdown_image
from ci_pipeline.predictions.data import ModelFailed, model_failed
from ci_pipeline.predictions.prior import MODEL_BASIS, PRIOR
from ci_pipeline.predictions.published import settings_changes
from ci_pipeline.predictions.recommend import UNMATCHED
from ci_pipeline.predictions.reuse import RowReuse, hand_out, read_kept, write_kept
from ci_pipeline.redact import first_line, redact

GROUP = "predictions"
PREDICTION = asset_key(GROUP, "prediction")
FIELDS = asset_key(GROUP, "prediction_fields")
#: Model -> the output name of its per-customer table.
TABLES = {"churn": "churn_scores", "clv": "clv_scores", "recommendation": "product_recommendations"}
TRAIN_JOB = "train_predictions"
#: The models whose scores are kept between runs and reused for customers whose features did not change.
REUSED = ("churn", "clv")
_RANKING_BASELINES = ("most_popular", "own_most_bought")
_DESCRIPTIONS = {
    "churn_scores": "One row per customer: ChurnScore (calibrated probability), IsChurn, Likelihood, the top 3 "
    "signed reasons and Basis (model for a customer with a purchase, population prior for one without).",
    "clv_scores": "One row per customer: PredictedValue, its 80% interval (ValueLow, ValueHigh), ValueBand, the top "
    "3 signed reasons and Basis (model for a customer with a purchase, population prior for one without).",
    "product_recommendations": "One row per customer and rank: Product, Score and Reason (bought before, bought "
    "together, popular).",
}


def model_key(model: str) -> dg.AssetKey:
    """The training asset of one model: ``predictions/<model>_model``."""
    return asset_key(GROUP, f"{model}_model")


def table_key(model: str) -> dg.AssetKey:
    """The per-customer table of one model (``predictions/churn_scores``, ...)."""
    return asset_key(GROUP, TABLES[model])


def model_path(model: str) -> str:
    """Where a model's trained objects live in the lake (a JSON summary sits next to them)."""
    return f"ci_pipeline/{GROUP}/{model}_model.pkl"


def chart_path(model: str, chart: str) -> str:
    """Where a drawn chart of a model's evaluation report lives in the lake, beside the model."""
    return f"ci_pipeline/{GROUP}/{model}_model_{chart}.png"


def _runs(context, config: ProjectConfig, lake, models) -> ModelRuns:
    """The model runs over the stored activity facts and profile, reading only the rows and columns ``models`` use;
    what the data read gives to warn about is in the run log."""
    section, measures = config.predictions, config.measures
    settings = PredictionSettings.model_validate(section.settings())
    latest = scoring_cutoff(section.as_of, measures.as_of)
    facts_path = asset_path(activities.STAGE.key("activity_facts"))
    needed = fact_columns(settings, models)
    facts = lake.read_parquet(facts_path) if needed is None else read_facts(lake.dataset(facts_path), *needed)
    profile_set = lake.dataset(asset_path(unify.STAGE.key("customer_profile")))
    columns = [c for c in dict.fromkeys(["CustomerId", *section.profile_fields]) if c in profile_set.schema.names]
    profile = profile_set.to_table(columns=columns).to_pandas()
    chosen = profile if section.profile_fields else None
    origin = field_origin(settings.purchases.activity, settings.purchases.amount, config.activities.tables)
    runs = ModelRuns(settings, facts, profile["CustomerId"], chosen, latest, measures, origin)
    for warning in runs.warnings(models):
        context.log.warning(warning)
    ignored = section.churn.ignored_window() if "churn" in models else None
    if ignored:
        context.log.warning(ignored)
    return runs


def _configured(section: PredictionsConfig) -> dict:
    """The settings as configured, JSON-ready: stored with each model and compared when scoring."""
    return json.loads(json.dumps(section.settings(), default=str))


def store_model(lake, model: str, stored: StoredModel, settings: dict) -> tuple[str, str]:
    """Write a trained model and its readable summary (with the settings it was trained with) to the lake; returns
    its URL and the digest of its bytes."""
    path = model_path(model)
    payload = stored.to_bytes()
    lake.write_bytes(path, payload)
    summary = model_summary(stored, dt.datetime.now(dt.UTC)) | {"settings": settings}
    lake.write_bytes(path.removesuffix(".pkl") + ".json", json.dumps(summary, indent=2, default=str).encode())
    return lake.url(path), hashlib.sha256(payload).hexdigest()


def chart_metadata(lake, model: str, report: dict) -> dict:
    """Draw the report's charts, write each PNG to the lake beside the model, and return them as metadata: a
    Markdown image the UI draws (``plot/<chart>``) and its lake path (``plot/<chart>/path``)."""
    metadata: dict = {}
    try:
        drawn = draw_report_charts(MODEL_NAMES[model], report.get("charts") or {})
    except Exception as exc:  # a picture of the report: the model and its figures are stored all the same
        said = f"{MODEL_NAMES[model]}: the report's charts could not be drawn ({type(exc).__name__}: {first_line(exc)})"
        dg.get_dagster_logger().warning(f"predictions: {said}; their points are in the metadata")
        return {"plots": dg.MetadataValue.text(said)}
    for chart, png in drawn.items():
        path = chart_path(model, chart)
        lake.write_bytes(path, png)
        metadata[f"plot/{chart}"] = dg.MetadataValue.md(markdown_image(f"{chart} chart of {MODEL_NAMES[model]}", png))
        metadata[f"plot/{chart}/path"] = dg.MetadataValue.path(lake.url(path))
    return metadata


def _store_trained(lake, model: str, trained: Trained, configured: dict, reuse: RowReuse | None = None) -> dict:
    """Store a freshly trained model and its drawn charts; returns the training asset's metadata. The scores it
    gave in this run (``reuse``) are kept under the stored model's digest."""
    url, digest = store_model(lake, model, trained.stored, configured)
    if reuse is not None:
        reuse.model_digest = digest
    return report_metadata(trained.report, url) | chart_metadata(lake, model, trained.report)


def _load_model(lake, model: str) -> tuple[StoredModel, str] | None:
    """A model's stored model and the digest of its bytes (what its kept scores were computed with)."""
    path = model_path(model)
    if not lake.exists(path):
        return None
    payload = lake.read_bytes(path)
    stored = StoredModel.from_bytes(payload, where=f"{lake.url(path)}")
    if stored.model != MODEL_NAMES[model]:
        raise UserError(f"{lake.url(path)} holds a {stored.model} model, not {MODEL_NAMES[model]}; retrain the model")
    return stored, hashlib.sha256(payload).hexdigest()


def _trained_with(lake, model: str) -> dict | None:
    """The settings a stored model was trained with (from its summary), None when unknown."""
    path = model_path(model).removesuffix(".pkl") + ".json"
    return json.loads(lake.read_bytes(path)).get("settings") if lake.exists(path) else None


def report_metadata(report: dict, url: str | None = None) -> dict:
    """The evaluation report as asset metadata: each metric of the model and every baseline as a number (the UI
    plots them across runs), the grades, the calibration and gain charts' points (drawn by :func:`chart_metadata`)
    and the feature importance as tables, and the rest of the report as a table of entries (the whole report is in
    the lake next to the model)."""
    metadata: dict = {}
    groups = {"": report} | {mode: report[mode] for mode in ("with_repeats", "new_items_only") if mode in report}
    for prefix, group in groups.items():
        # Churn and CLV list their baselines under "baselines"; recommendation names them next to "model".
        baselines = group.get("baselines") or {
            k: v for k, v in group.items() if k != "model" and isinstance(v, dict) and k in _RANKING_BASELINES
        }
        named = {"model": group.get("model") or {}, **{f"baseline/{n}": v for n, v in baselines.items()}}
        if prefix:
            metadata |= {
                f"{prefix}/{k}": dg.MetadataValue.float(float(v))
                for k, v in group.items()
                if isinstance(v, int | float) and not isinstance(v, bool)
            }
        for name, metrics in named.items():
            for metric, value in metrics.items():
                if isinstance(value, int | float) and not isinstance(value, bool):
                    metadata[f"{prefix + '/' if prefix else ''}{name}/{metric}"] = dg.MetadataValue.float(float(value))
    metadata |= _findings(report)
    for number in ("auc_over_best_baseline", "top_capture_over_best_baseline", "rule_errors_removed"):
        if isinstance(report.get(number), int | float):
            metadata[number] = dg.MetadataValue.float(float(report[number]))
    for chart, points in (report.get("charts") or {}).items():
        metadata[f"chart/{chart}"] = table_of(points, list(points[0]) if points else [])
    importance = report.get("feature_importance") or {}
    if importance:
        ranked = sorted(importance.items(), key=lambda item: -item[1])
        metadata["feature_importance"] = table_of(
            [{"feature": f, "mean absolute contribution": v} for f, v in ranked],
            ["feature", "mean absolute contribution"],
        )
    metadata["report"] = entries_table({k: v for k, v in report.items() if k not in ("charts", "feature_importance")})
    if url is not None:
        metadata["path"] = dg.MetadataValue.path(url)
    return metadata


def _findings(report: dict) -> dict:
    """The report's verdicts as metadata: the grades (or why there is none), the baseline that beat the model, why
    a model was not evaluated, and the ``exclude_products`` values that match no product."""
    metadata: dict = {}
    for grade in ("reference_grade", "lift_grade"):
        if grade in report:
            # None: too few customers in the backtest for a letter (the reason is under not_graded).
            metadata[grade] = report[grade] if report[grade] is not None else "not graded"
    if report.get("not_graded"):
        metadata["not_graded"] = dg.MetadataValue.text(report["not_graded"])
    beaten = report.get("beaten_by_baseline")
    if beaten:
        metadata["beaten_by_baseline"] = dg.MetadataValue.text(beaten["message"])
    if "not_evaluated" in report:
        metadata["not_evaluated"] = report["not_evaluated"]
    unmatched = report.get(UNMATCHED)
    if unmatched:
        metadata[UNMATCHED] = dg.MetadataValue.text(unmatched["message"])
    return metadata


def _warn_beaten(context, report: dict) -> None:
    """Warn in the run log when a baseline beat the model on its backtest, or when the backtest held too few
    customers for a grade (the findings are in its report)."""
    beaten = report.get("beaten_by_baseline")
    if beaten:
        context.log.warning(f"predictions: {beaten['message']}")
    if report.get("not_graded"):
        context.log.warning(f"predictions: {report.get('prediction', 'the model')}: {report['not_graded']}")


def _training_asset(config: ProjectConfig, model: str) -> dg.AssetsDefinition:
    section = config.predictions

    @dg.asset(
        key=model_key(model),
        group_name=GROUP,
        kinds={"scikit-learn"},
        # Read from the lake by the columns and rows the model uses, not loaded whole.
        deps=[activities.STAGE.key("activity_facts"), unify.STAGE.key("customer_profile")],
        required_resource_keys={"lake"},
        tags={REFRESH_TAG: "on_demand"},
        metadata={STORED_AT: model_path(model)},
        # One model trains at a time: each holds its training rows (predictions.parallel_models).
        op_tags={EXCLUSIVE_TAG: CUSTOMER_MODELS},
        description=f"The {MODEL_NAMES[model]} model: backtested one window back, fitted at the latest cutoff and "
        "stored in the lake with its evaluation report; refreshes score with it until it is trained again.",
    )
    def train(context: dg.AssetExecutionContext):
        lake = context.resources.lake.get_lake()
        try:
            runs = _runs(context, config, lake, [model])
            # The scoring step scores everyone with the stored model: scoring them here too would be thrown away.
            result = runs.train(model, table=False)
        except UserError as exc:
            raise dg.Failure(description=redact(exc), allow_retries=False) from exc
        except Exception as exc:
            # Only this model's asset fails (the others train in their own steps); the message says what to do.
            failed = model_failed(MODEL_NAMES[model], "training", exc)
            raise dg.Failure(description=redact(failed), allow_retries=False) from exc
        _warn_beaten(context, result.report)
        return dg.MaterializeResult(metadata=_store_trained(lake, model, result, _configured(section)))

    return train


def _scoring_asset(config: ProjectConfig) -> dg.AssetsDefinition:
    section = config.predictions
    provider = config.name
    models = list(section.models)
    outs = {
        TABLES[m]: dg.AssetOut(key=table_key(m), description=_DESCRIPTIONS[TABLES[m]], is_required=False)
        for m in models
    }
    outs["prediction_fields"] = dg.AssetOut(
        key=FIELDS,
        description="One row per scored customer with the fields segments read as prediction.<field> "
        "(ChurnScore, IsChurn, ChurnLikelihood, ChurnBasis, ClvValue, ClvLow, ClvHigh, ClvBand, ClvBasis).",
    )
    outs["prediction"] = dg.AssetOut(
        key=PREDICTION,
        description="One row per customer and model with the model's fields as JSON (Prediction).",
    )
    checks = [
        dg.AssetCheckSpec(
            "enough_data",
            asset=table_key(m),
            description="The model had the data it needs and a stored model that fits it (else the message says "
            "what is missing).",
        )
        for m in models
    ]
    checks.append(dg.AssetCheckSpec("matches_output_contract", asset=PREDICTION, description="Columns are exact."))

    @dg.multi_asset(
        name="score_predictions",
        group_name=GROUP,
        outs=outs,
        check_specs=checks,
        # The longest step after the timeline, and segments wait for it: it starts before the other ready steps
        # when steps run side by side (orchestration.executor.max_concurrent), never beside the enrichments.
        op_tags={PRIORITY_TAG: "1", EXCLUSIVE_TAG: CUSTOMER_MODELS},
        required_resource_keys={"lake"},
        # The facts and profile are read from the lake by the columns and rows the models use. When a model is
        # trained in the same run, scoring waits for it.
        deps=[
            activities.STAGE.key("activity_facts"),
            unify.STAGE.key("customer_profile"),
            *(model_key(m) for m in models),
        ],
    )
    def score(context: dg.AssetExecutionContext):
        lake = context.resources.lake.get_lake()
        runs = _runs(context, config, lake, models)
        configured = _configured(section)
        stored, failed = _stored_models(context, lake, configured, models, runs)
        done = runs.run_all(stored, workers=section.parallel_models) | failed
        _log_reuse(context, runs.reuse)
        scored: dict[str, pd.DataFrame] = {}
        for model in models:
            outcome = done[model]
            if isinstance(outcome, UserError):
                message = redact(outcome)
                context.log.error(f"predictions: {MODEL_NAMES[model]} publishes nothing this run: {message}")
                if isinstance(outcome, ModelFailed) and outcome.details:
                    # The stack trace of the defect, for its report; the run goes on with the other models.
                    context.log.error(f"predictions: {MODEL_NAMES[model]}: {redact(outcome.details)}")
                yield dg.AssetCheckResult(
                    check_name="enough_data",
                    asset_key=table_key(model),
                    passed=False,
                    severity=dg.AssetCheckSeverity.ERROR,
                    metadata={"error": message},
                    # The run's summary prints the description with the failed check: why the model did not run.
                    description=message,
                )
                continue
            if isinstance(outcome, Trained):
                # The training asset shows the report in the UI, as when the model is trained by its own job.
                _warn_beaten(context, outcome.report)
                metadata = _store_trained(lake, model, outcome, configured, runs.reuse.get(model))
                context.log_event(dg.AssetMaterialization(asset_key=model_key(model), metadata=metadata))
                outcome = outcome.table
            scored[model] = outcome
        table = prediction_table(scored, provider)
        counts = table["Model"].value_counts().to_dict()
        frames = {TABLES[m]: scored[m] for m in scored}
        metadata = {TABLES[m]: _reuse_metadata(runs.reuse.get(m)) | score_counts(scored[m]) for m in scored}
        frames["prediction_fields"] = segment_fields(scored, models)
        metadata["prediction_fields"] = {"models": dg.MetadataValue.json(list(scored))}
        frames["prediction"] = table
        metadata["prediction"] = {"rows_per_model": counts_table(counts, "model", "rows"), **numbers("rows", counts)}
        # The scores, the fields and the Prediction table (millions of rows) stored two at a time.
        yield from stored_outputs(context, lake, frames, metadata)
        for model in scored:
            yield dg.AssetCheckResult(check_name="enough_data", asset_key=table_key(model), passed=True)
        yield dg.AssetCheckResult(
            check_name="matches_output_contract",
            asset_key=PREDICTION,
            passed=list(table.columns) == PREDICTION_COLUMNS,
        )
        # Kept last: a run that fails before here leaves the kept scores of an earlier run, still true of what
        # they describe (each row's outputs are a function of its digest and the fingerprint).
        write_kept(lake, runs.reuse)

    return score


def _stored_models(context, lake, configured: dict, models: list[str], runs: ModelRuns) -> tuple[dict, dict]:
    """Each model's stored model (None: trained in this run) and the models whose stored model cannot be used (the
    error); the models whose scores are kept between runs get the last run's (``runs.reuse``)."""
    stored, failed = {}, {}
    for model in models:
        try:
            stored[model], digest = _stored_for(context, lake, configured, model)
        except UserError as exc:
            failed[model] = exc
        else:
            if model in REUSED:
                runs.reuse[model] = RowReuse(digest, configured)
    _kept_scores(context, lake, runs.reuse)
    return stored, failed


def _log_reuse(context: dg.AssetExecutionContext, reuses: dict[str, RowReuse]) -> None:
    for model, reuse in reuses.items():
        if reuse.rows is not None:
            report = reuse.report
            why = f" ({report['why_not']})" if "why_not" in report else ""
            context.log.info(
                f"predictions: {MODEL_NAMES[model]} scored {report['computed']} of {report['customers']} "
                f"customers; {reuse.kept_count} kept last run's scores (features unchanged){why}"
            )


def score_counts(scores: pd.DataFrame) -> dict:
    """Whom a scores table covers: customers scored by the model (those with a purchase) and by the population
    prior (the others), and for churn how many are predicted to churn and per likelihood, the figures a marketer
    reads before building a segment on the scores."""
    metadata = {}
    if "Basis" in scores:
        metadata["customers_by_model"] = dg.MetadataValue.int(int((scores["Basis"] == MODEL_BASIS).sum()))
        metadata["customers_by_prior"] = dg.MetadataValue.int(int((scores["Basis"] == PRIOR).sum()))
    if "IsChurn" in scores:
        metadata["customers_predicted_to_churn"] = dg.MetadataValue.int(int(scores["IsChurn"].sum()))
        likelihood = scores["Likelihood"].value_counts()
        metadata |= numbers("likelihood", {str(band): int(n) for band, n in likelihood.items()})
    return metadata


def _reuse_metadata(reuse: RowReuse | None) -> dict:
    """How many customers were scored again and how many kept last run's scores (their features unchanged)."""
    if reuse is None or reuse.rows is None:
        return {}
    report = reuse.report
    metadata = {
        "customers_scored": dg.MetadataValue.int(report["computed"]),
        "customers_kept_from_last_run": dg.MetadataValue.int(reuse.kept_count),
    }
    if "why_not" in report:
        metadata["scores_not_kept_because"] = dg.MetadataValue.text(report["why_not"])
    return metadata


def _kept_scores(context: dg.AssetExecutionContext, lake, reuses: dict[str, RowReuse]) -> None:
    """Give each model that scores with a stored model the scores the last run kept (none on a full refresh)."""
    if not reuses:
        return
    if context.run.tags.get(MODE_TAG) == "full":
        hand_out(reuses, {}, "a full refresh scores every customer")
    else:
        hand_out(reuses, *read_kept(lake, list(reuses)))


def _stored_for(
    context: dg.AssetExecutionContext, lake, configured: dict, model: str
) -> tuple[StoredModel | None, str]:
    """A model's stored model, which this run scores with, and the digest of its bytes; None when there is none:
    the run trains it then (and stores it for the next runs)."""
    found = _load_model(lake, model)
    if found is None:
        context.log.warning(
            f"predictions: no stored {MODEL_NAMES[model]} model; training it in this run (retrain with job {TRAIN_JOB})"
        )
        return None, ""
    stored, digest = found
    changed = settings_changes(_trained_with(lake, model), configured, model)
    if changed:
        # Only the settings the model reads and scoring does not apply itself (exclude_products applies at once).
        context.log.warning(
            f"predictions: the stored {MODEL_NAMES[model]} model was trained with other predictions settings "
            f"({'; '.join(changed)}); it scores until it is retrained (job {TRAIN_JOB})"
        )
    context.log.info(
        f"predictions: {MODEL_NAMES[model]} scores with the model trained at "
        f"{stored.data_window.get('trained_at_cutoff')}"
    )
    _warn_beaten(context, stored.metrics)
    return stored, digest


def build(config: ProjectConfig, produced: Produced | None = None) -> dg.Definitions:
    """The predictions assets; none without a ``predictions`` section."""
    if config.predictions is None:
        return dg.Definitions()
    training = [_training_asset(config, m) for m in config.predictions.models]
    return dg.Definitions(assets=[*training, _scoring_asset(config)])


def jobs(config: ProjectConfig, keys: AbstractSet[dg.AssetKey]) -> list[JobSpec]:
    """Retraining every model (on demand, and on the ``predictions.training`` schedule)."""
    models = config.predictions.models if config.predictions is not None else []
    trained = [model_key(m) for m in models if model_key(m) in keys]
    if not trained:
        return []
    return [
        JobSpec(
            TRAIN_JOB,
            dg.AssetSelection.assets(*trained),
            "Retrain the prediction models on the latest data and store them in the lake (refreshes score with them).",
            "partial",
        )
    ]


STAGE = Stage(
    name=GROUP,
    section="predictions",
    front_door=prediction_table,
    build=build,
    summary="churn, lifetime value and recommendation models (trained monthly), their scores and Prediction",
    assets={"prediction": PREDICTION, "prediction_fields": FIELDS},
    produces={"Prediction": PREDICTION},
    active=lambda config: config.predictions is not None,
    jobs=jobs,
)
