"""What the predictions stage publishes: recommendations from a stored model, the Prediction output table, the
prediction fields segments read, and the readable summary stored next to each model."""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from threadpoolctl import threadpool_limits

from ci_pipeline.config.predictions import MODEL_NAMES, SEGMENT_FIELDS, RecommendationSettings
from ci_pipeline.errors import UserError
from ci_pipeline.measures.compute import run_end
from ci_pipeline.measures.conditions import run_date
from ci_pipeline.outputs import build
from ci_pipeline.predictions import churn, clv
from ci_pipeline.predictions.churn import run_churn
from ci_pipeline.predictions.clv import run_clv
from ci_pipeline.predictions.data import (
    AMOUNT_ATTR,
    QUANTITY_FIELD,
    latest_cutoff,
    lines_from_facts,
    model_failed,
    native_threads,
    purchases_from_facts,
    signals_from_facts,
    stray_last_purchases,
)
from ci_pipeline.predictions.features import Measures
from ci_pipeline.predictions.recommend import (
    MODEL,
    REASONS,
    Recommender,
    ever_bought,
    interactions,
    product_field,
    recommend,
    run_recommendation,
    unmatched_exclusions,
)
from ci_pipeline.predictions.reuse import RowReuse
from ci_pipeline.predictions.settings import PredictionSettings
from ci_pipeline.predictions.stored import StoredModel
from ci_pipeline.side_by_side import each

#: Up to this many purchase rows, ``parallel_models: auto`` trains or scores two models at a time: measured at 2.1M
#: (1,000,000 generated people), where two at once left the run's peak as it was (the models' training rows are
#: sampled, and later stages set the peak); larger data is unmeasured, so one at a time.
PARALLEL_PURCHASES = 3_000_000


def models_at_once(configured: int | str, purchase_rows: int) -> int:
    """The models run at the same time: the configured number, or for ``auto`` two up to
    :data:`PARALLEL_PURCHASES` purchase rows, else one."""
    if configured != "auto":
        return int(configured)
    return 2 if purchase_rows <= PARALLEL_PURCHASES else 1


def scoring_cutoff(as_of, measures_as_of) -> pd.Timestamp | None:
    """The cutoff the models score at: the end (midnight UTC after) of ``as_of``, of today for ``today``, of
    ``measures.as_of`` when ``as_of`` is None; None for ``last_purchase`` (the last purchase is the cutoff)."""
    if as_of == "last_purchase":
        return None
    chosen = measures_as_of if as_of is None else as_of
    return run_end(run_date(chosen))


def recommendation_table(
    index: pd.Index, products: pd.Index, items: np.ndarray, scores: np.ndarray, reasons: np.ndarray, k: int
) -> pd.DataFrame:
    """One row per customer and rank (CustomerId, Rank, Product, Score, Reason) from ``recommend``'s arrays."""
    rank = np.tile(np.arange(1, k + 1), len(index))
    flat = items.ravel()
    keep = flat >= 0
    return pd.DataFrame(
        {
            "CustomerId": pd.array(np.repeat(index.to_numpy(), k)[keep], dtype="string"),
            "Rank": rank[keep],
            "Product": pd.array(products.to_numpy()[flat[keep]], dtype="string"),
            "Score": np.round(scores.ravel()[keep], 4),
            "Reason": pd.array(REASONS[reasons.ravel()[keep]], dtype="string"),
        }
    )


def recommend_stored(
    stored: StoredModel, lines: pd.DataFrame, customers: pd.Series, latest, settings: RecommendationSettings
) -> pd.DataFrame:
    """Recommendations at ``latest`` from a stored model: each customer's purchases of the look-back window
    before ``latest`` against the products, neighbours and popularity the model learnt. ``k``, ``repeats`` and
    ``exclude_products`` are taken from ``settings`` (see :data:`APPLIED_AT_SCORING`)."""
    if stored.model != MODEL or not isinstance(stored.fitted, Recommender):
        raise ValueError(f"a {MODEL} model is needed, got {stored.model}")
    model: Recommender = stored.fitted
    latest = latest_cutoff(latest, lines, MODEL)
    index = pd.Index(np.sort(pd.Series(customers, dtype="string").dropna().unique().astype(object)), dtype="string")
    start = latest - pd.Timedelta(days=settings.lookback_days)
    history = interactions(lines, index, model.products, start, latest)
    # The catalog filter is this run's configuration, not the one the model was trained with: a product excluded
    # since then is not recommended before the model is retrained.
    model = replace(model, allowed=~model.products.isin(settings.exclude_products))
    owned = None if settings.repeats else ever_bought(lines, index, model.products, latest)
    items, scores, reasons = recommend(model, history, settings.k, settings.repeats, owned=owned)
    return recommendation_table(index, model.products, items, scores, reasons, settings.k)


#: Settings scoring with a stored model reads from the configuration of the run: changing them needs no retraining.
APPLIED_AT_SCORING = ("recommendation.k", "recommendation.repeats", "recommendation.exclude_products")
#: Per model, the settings it does not read (another model's); ``threads`` and ``seed`` do not change
#: recommendations.
_NOT_READ = {
    "churn": ("clv", "recommendation", "minimums.clv_customers", "minimums.recommendation_customers"),
    "clv": ("churn", "recommendation", "minimums.churn_customers", "minimums.recommendation_customers"),
    "recommendation": (
        "churn",
        "clv",
        "minimums.churn_customers",
        "minimums.clv_customers",
        "minimums.history_windows",
        "minimums.max_missing_share",
        "profile_fields",
        "signal_activities",
        "measure_fields",
        "seed",
        "threads",
        *APPLIED_AT_SCORING,
    ),
}


def settings_changes(trained: dict | None, configured: dict, model: str) -> list[str]:
    """The settings ``model`` reads that differ between those its stored model was ``trained`` with and those
    ``configured`` now (``key: then -> now``), leaving out what scoring applies itself; a note when the
    trained ones are not known."""
    if trained is None:
        return ["the settings it was trained with are not known"]
    then, now = _flat(trained), _flat(configured)
    skip = _NOT_READ[model]
    changed = []
    for key in sorted(set(then) | set(now)):
        if then.get(key) != now.get(key) and not any(key == s or key.startswith(f"{s}.") for s in skip):
            changed.append(f"{key}: {_short(then.get(key))} -> {_short(now.get(key))}")
    return changed


def _flat(settings: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in settings.items():
        if isinstance(value, dict):
            out |= _flat(value, f"{prefix}{key}.")
        else:
            out[f"{prefix}{key}"] = value
    return out


def _short(value) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= 60 else text[:57] + "..."


def fact_columns(settings: PredictionSettings, models) -> tuple[list[str], list[str]] | None:
    """(activities, fields) of the activity facts that ``models`` read; None when they read every activity (customer
    measures as features are recomputed from all of them)."""
    if settings.measure_fields:
        return None
    source = settings.purchases
    activities, fields = [], []
    if {"churn", "clv"} & set(models):
        activities += [source.activity, *settings.signal_activities]
        fields += [source.amount] + ([source.is_return] if source.is_return else []) + [c.field for c in source.where]
    if "recommendation" in models and source.product_activity is not None:
        activities.append(source.product_activity)
        # The quantity, amount and return fields mark the return lines (``data.lines_from_facts``).
        fields += [source.product, QUANTITY_FIELD, source.amount] + ([source.is_return] if source.is_return else [])
    return list(dict.fromkeys(activities)), list(dict.fromkeys(fields))


@dataclass(frozen=True)
class Trained:
    """A model trained in a run: its table (scores, or recommendations; None when not asked for), evaluation report
    and stored model."""

    table: pd.DataFrame | None
    report: dict
    stored: StoredModel


def _attempt(make, *args) -> pd.DataFrame | UserError:
    try:
        return make(*args)
    except UserError as exc:
        # Without its traceback, whose frames hold the facts.
        return exc.with_traceback(None)


def _derived(frame: pd.DataFrame | UserError | None) -> pd.DataFrame | None:
    if isinstance(frame, UserError):
        raise frame
    return frame


class ModelRuns:
    """The models of one run over its activity facts: train one (backtest, fit, score) or score with a stored one.

    Args:
        settings: the prediction settings.
        facts: the activities stage's typed facts.
        customers: every CustomerId (the profile's).
        profile: the CustomerProfile when ``settings.profile_fields`` lists fields, else None.
        latest: the scoring cutoff (:func:`scoring_cutoff`); None for the last purchase.
        measures: the measures section, when ``settings.measure_fields`` lists measures (recomputed at each cutoff).
        amount_origin: the source column(s) the purchase amount field is read from, named in messages about it.
    """

    def __init__(
        self,
        settings: PredictionSettings,
        facts: pd.DataFrame,
        customers: pd.Series,
        profile,
        latest,
        measures=None,
        amount_origin: str | None = None,
    ):
        self.settings = settings
        #: Model -> the kept scores it reuses when it scores with a stored model (see
        #: :mod:`~ci_pipeline.predictions.reuse`).
        self.reuse: dict[str, RowReuse] = {}
        self.customers = customers
        self.profile = profile
        self.latest = latest
        self.measures = Measures(measures, facts) if measures is not None and settings.measure_fields else None
        # The frames the models read are derived now, so the facts (each purchase and order line with its text
        # columns) are not held while the models train; a frame that cannot be derived keeps its error for the
        # model that reads it.
        self._purchases = _attempt(purchases_from_facts, facts, settings.purchases, amount_origin)
        self._lines = _attempt(lines_from_facts, facts, settings.purchases)
        names = settings.signal_activities
        self._signals = _attempt(signals_from_facts, facts, names) if names else None

    @property
    def purchases(self) -> pd.DataFrame:
        """The purchases of the purchase activity (read once for churn and CLV)."""
        return _derived(self._purchases)

    def warnings(self, models) -> list[str]:
        """What the run log should warn about the data ``models`` read: purchase amounts that are text but no number
        (they count with no amount, even when too few to stop the models), with ``as_of: last_purchase`` a few
        purchases far after the rest that move the cutoff (:func:`stray_last_purchases`), and ``exclude_products``
        values that match no product (:func:`~ci_pipeline.predictions.recommend.unmatched_exclusions`)."""
        found = []
        if {"churn", "clv"} & set(models) and not isinstance(self._purchases, UserError):
            read = self._purchases.attrs.get(AMOUNT_ATTR)
            found.append(read.warning() if read is not None else None)
            if self.latest is None:
                found.append(stray_last_purchases(self._purchases["Time"]))
        if "recommendation" in models and not isinstance(self._lines, UserError):
            settings = self.settings
            unmatched = unmatched_exclusions(
                settings.recommendation.exclude_products, self._lines["Product"], product_field(settings)
            )
            found.append(f"predictions: {unmatched['message']}" if unmatched else None)
        return [warning for warning in found if warning]

    @property
    def lines(self) -> pd.DataFrame:
        """The product lines of the product activity."""
        return _derived(self._lines)

    @property
    def signals(self) -> pd.DataFrame | None:
        """The signal activities, when configured."""
        return _derived(self._signals)

    def train(self, model: str, table: bool = True) -> Trained:
        """Backtest, fit at the latest cutoff and score one model (``churn``, ``clv``, ``recommendation``).

        Without ``table`` (a model trained by its own step, which stores it for the scoring step) churn and CLV
        score no one: the trained result's table is None and its report's importance explains a sample of the
        customers (:func:`~ci_pipeline.predictions.explain.importance_rows`), as it does when they are scored.
        """
        if model == "recommendation":
            result = run_recommendation(self.lines, self.customers, self.latest, self.settings)
            return Trained(result.recommendations, result.report, result.stored)
        run = run_churn if model == "churn" else run_clv
        result = run(
            self.purchases,
            self.customers,
            self.latest,
            self.settings,
            self.profile,
            self.signals,
            self.measures,
            score_everyone=table,
            reuse=self.reuse.get(model) if table else None,
        )
        return Trained(result.scores, result.report, result.stored)

    def run_all(self, stored: dict[str, StoredModel | None], workers: int | str = 1) -> dict:
        """Score each model of ``stored`` with its stored model, or train it where it has none (None), up to
        ``workers`` models at a time (``auto``: :func:`models_at_once`), each on a thread of this process.

        Returns model -> its scores (a frame) when scored, its :class:`Trained` result when trained, or the
        :class:`UserError` its data raised (the other models still run), in the order of ``stored``. Any other
        error of one model becomes its :class:`~ci_pipeline.predictions.data.ModelFailed` (naming the model, the
        step and what to do, with the traceback as ``details``): that model alone fails.

        The models read the same frames and change none of them, and each has its own history and seed: the results
        are those of running them one after another. Most of their work (the trees' histograms, Arrow's and NumPy's
        kernels) runs outside Python's lock, so two models keep two cores busy.
        """

        def one(model: str):
            # The limit is set on the thread that runs the model: a limit set on another thread does not reach it,
            # and scikit-learn's trees would use every core (other scores than with one thread, see native_threads).
            with threadpool_limits(limits=native_threads(self.settings.threads)):
                found = stored[model]
                try:
                    return self.train(model) if found is None else self.score(model, found)
                except UserError as exc:
                    return exc
                except Exception as exc:  # noqa: BLE001 - one model's defect must not take the others down
                    step = "training" if found is None else "scoring with its stored model"
                    return model_failed(MODEL_NAMES[model], step, exc)

        if workers == "auto":
            try:
                workers = models_at_once("auto", len(self.purchases))
            except UserError:  # no purchases to derive: the models that read them fail on their own
                workers = 1
        return dict(zip(stored, each(one, list(stored), workers, "predictions"), strict=True))

    def score(self, model: str, stored: StoredModel) -> pd.DataFrame:
        """One model's scores (or recommendations) at the latest cutoff from its stored model."""
        settings = self.settings
        if model == "recommendation":
            return recommend_stored(stored, self.lines, self.customers, self.latest, settings.recommendation)
        latest = self.latest if self.latest is not None else latest_cutoff(None, self.purchases, stored.model)
        reuse = self.reuse.get(model)
        if model == "churn":
            return churn.score_stored(
                stored,
                self.purchases,
                latest,
                self.profile,
                self.signals,
                settings.threads,
                self.customers,
                self.measures,
                reuse,
            )
        share = settings.clv.high_value_share
        return clv.score_stored(
            stored,
            self.purchases,
            latest,
            share,
            self.profile,
            self.signals,
            settings.threads,
            self.customers,
            self.measures,
            reuse,
        )


def _json_values(column: pd.Series) -> pa.Array:
    """Each value as JSON text (what ``json.dumps`` writes), missing and non-finite numbers as ``null``.

    Each distinct value is written once: scores are rounded and reasons and product names repeat across customers.
    """
    if pd.api.types.is_bool_dtype(column.dtype):
        text = pa.array(np.where(column.fillna(False).to_numpy(dtype=bool), "true", "false"), pa.string())
    else:
        if pd.api.types.is_float_dtype(column.dtype):
            values = np.ascontiguousarray(column.to_numpy(dtype="float64", na_value=np.nan))
            # Distinct by bit pattern: 0.0 and -0.0 are equal as numbers but written differently.
            codes, bits = pd.factorize(values.view(np.int64))
            distinct = bits.view(np.float64)
            written = pd.Series(distinct).astype(str).to_numpy(dtype=object)
            texts = np.where(np.isfinite(distinct), written, "null").astype(object)
        elif pd.api.types.is_numeric_dtype(column.dtype):
            codes, distinct = pd.factorize(column, use_na_sentinel=True)
            texts = pd.Series(distinct).astype(str).to_numpy(dtype=object)
        else:
            codes, distinct = pd.factorize(column.astype("string"), use_na_sentinel=True)
            texts = _json_texts(np.asarray(distinct, dtype=object))
        # Each distinct text made once, then taken by code in Arrow (-1, missing, takes the trailing "null").
        table = pa.array(np.append(texts, "null").astype(object), pa.string())
        text = table.take(pa.array(np.where(codes < 0, len(texts), codes)))
    missing = column.isna().to_numpy()
    return pc.if_else(pa.array(missing), pa.scalar("null"), text) if missing.any() else text


def _json_texts(texts: np.ndarray) -> np.ndarray:
    """``json.dumps(text, ensure_ascii=False)`` of each text: quoted as is unless it holds a quote, a backslash or a
    control character (the only characters escaped then)."""
    escape = pc.match_substring_regex(pa.array(texts, type=pa.string()), r'[\x00-\x1f"\\]')
    plain = ~escape.to_numpy(zero_copy_only=False).astype(bool)
    out = np.empty(len(texts), dtype=object)
    out[plain] = '"' + texts[plain] + '"'
    out[~plain] = [json.dumps(str(t), ensure_ascii=False) for t in texts[~plain]]
    return out


def json_objects(frame: pd.DataFrame) -> pa.Array:
    """One JSON object per row, keys sorted, compact: the text ``json.dumps(row, sort_keys=True,
    separators=(",", ":"), ensure_ascii=False)`` gives, built column by column (joined by Arrow) instead of row by
    row, and left in Arrow (no Python string per row)."""
    if not len(frame):
        return pa.array([], pa.string())
    pieces: list = ["{"]
    for i, name in enumerate(sorted(frame.columns)):
        pieces += [("," if i else "") + f"{json.dumps(str(name))}:", _json_values(frame[name])]
    pieces.append("}")
    return pc.binary_join_element_wise(*pieces, "")


def prediction_table(scores: dict[str, pd.DataFrame], provider: str) -> pd.DataFrame:
    """The Prediction output table: one row per customer and model, the model's fields as the Values JSON.

    Args:
        scores: model (``churn``, ``clv``, ``recommendation``) -> its scores (one row per customer; one row per
            customer and rank for recommendation, whose Values hold the ranked ``Products``). Models that did not
            score this run are left out.
        provider: the ModelProvider (the project name).
    """
    parts = []
    for model, frame in scores.items():
        if model == "recommendation":
            ordered = frame.sort_values(["CustomerId", "Rank"], kind="stable")
            items = json_objects(ordered[["Rank", "Product", "Score", "Reason"]])
            owner = pa.array(ordered["CustomerId"].astype("string"), pa.string(), from_pandas=True)
            # Each customer's items are contiguous: one list per customer, joined by Arrow.
            changes = pc.not_equal(owner[1:], owner[:-1]).to_numpy(zero_copy_only=False) if len(owner) > 1 else []
            starts = np.flatnonzero(np.r_[len(owner) > 0, changes]).astype(np.int32)
            lists = pa.ListArray.from_arrays(pa.array(np.r_[starts, len(items)].astype(np.int32)), items)
            joined = pc.binary_join(lists, ",")
            values = pc.binary_join_element_wise('{"Products":[', joined, "]}", "")
            customers = owner.take(pa.array(starts))
        else:
            customers, values = frame["CustomerId"], json_objects(frame.drop(columns="CustomerId"))
        parts.append(
            pd.DataFrame(
                {
                    "CustomerId": pd.array(customers, dtype="string"),
                    "ModelProvider": provider,
                    "Model": MODEL_NAMES[model],
                    "Values": pd.array(values, dtype="string"),
                }
            )
        )
    content = (
        pd.concat(parts, ignore_index=True)
        if parts
        else pd.DataFrame({c: pd.Series(dtype="string") for c in ("CustomerId", "ModelProvider", "Model", "Values")})
    )
    return build("Prediction", content)


def segment_fields(scores: dict[str, pd.DataFrame], models=()) -> pd.DataFrame:
    """CustomerId plus one column per ``prediction.<field>`` of the scored models and of ``models`` (the configured
    ones): a model that did not score this run leaves its columns empty, so rules on them select no one instead of
    failing every segment; customers a model did not score have no value either."""
    out = pd.DataFrame({"CustomerId": pd.Series(dtype="string")})
    for model in ("churn", "clv"):
        if model not in scores:
            continue
        columns = {column: field for field, (owner, column, _) in SEGMENT_FIELDS.items() if owner == model}
        frame = scores[model][["CustomerId", *columns]].rename(columns=columns)
        frame["CustomerId"] = frame["CustomerId"].astype("string")
        out = out.merge(frame, on="CustomerId", how="outer")
    wanted = set(scores) | set(models)
    for field, (owner, _, _) in SEGMENT_FIELDS.items():
        if owner in wanted and field not in out.columns:
            out[field] = None
    # An outer join leaves gaps: the nullable types keep a boolean a boolean and a number a number for the rules.
    dtypes = {"number": "float64", "boolean": "boolean", "text": "string"}
    out = out.astype({f: dtypes[kind] for f, (_, _, kind) in SEGMENT_FIELDS.items() if f in out.columns})
    return out.sort_values("CustomerId", kind="stable").reset_index(drop=True)


def model_summary(stored: StoredModel, trained_at: dt.datetime) -> dict:
    """What a stored model is, readable without loading it: metrics, features, data window, library versions."""
    return {
        "model": stored.model,
        "trained_at": trained_at.isoformat(),
        "features": stored.features if stored.model != MODEL else f"{len(stored.features)} products",
        "data_window": stored.data_window,
        "library_versions": stored.library_versions,
        "metrics": stored.metrics,
    }
