"""Customer lifetime value: what each customer who has bought before will spend over the coming period.

Like churn, the scoring model is fitted one period before the latest cutoff (its labels are the last period) and
the backtest one period earlier still, evaluated on the last period.

The published value blends the gradient-boosted model with BG/NBD + Gamma-Gamma, with the weight that did best
one period back on the data the model learns from (:func:`method_for`): trees cannot extrapolate past the
customers' ages and silences seen at training, BG/NBD's drop-out process does, and which matters more depends on
the data.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import pandas as pd
from sklearn.ensemble import HistGradientBoostingRegressor
from threadpoolctl import threadpool_limits

from ci_pipeline.predictions import btyd, explain, metrics, prior
from ci_pipeline.predictions.data import (
    BOOSTING,
    InsufficientData,
    as_utc,
    backtested,
    check_cutoff,
    informative,
    latest_cutoff,
    native_threads,
    require,
    sampled,
    usability,
)
from ci_pipeline.predictions.features import Context, Measures
from ci_pipeline.predictions.history import History
from ci_pipeline.predictions.prior import Prior
from ci_pipeline.predictions.reuse import RowReuse, reuse_rows
from ci_pipeline.predictions.settings import PredictionSettings
from ci_pipeline.predictions.stored import StoredModel

MODEL = "CustomerLifetimeValue"
#: Features the model takes from its own BG/NBD + Gamma-Gamma fit.
BTYD_FEATURES = ["bgnbd_expected_purchases", "gamma_gamma_expected_value"]
#: Fewest customers with a purchase at a training cutoff.
MIN_TRAINING = 50
#: The two ends of the 80% interval.
QUANTILES = (0.1, 0.9)
#: Weights of the gradient-boosted model tried in the blend (the rest goes to BG/NBD + Gamma-Gamma).
WEIGHTS = tuple(w / 10 for w in range(11))
#: The weight when the history holds no inner backtest: equal weights, the usual default of forecast combination
#: when nothing says which of two forecasts is better.
DEFAULT_WEIGHT = 0.5
#: Smallest expected value the deviance reads (a forecast of exactly 0 for a customer who spent is infinitely wrong).
FLOOR = 1e-6


@dataclass(frozen=True)
class ClvModel:
    """A fitted value model, its interval models and its BTYD fit."""

    mean: HistGradientBoostingRegressor
    #: The interval's quantile models (None in the inner backtest's fit, which compares expected values only).
    low: HistGradientBoostingRegressor | None
    high: HistGradientBoostingRegressor | None
    features: list[str]
    typical: dict
    bgnbd: btyd.BgNbd
    gamma_gamma: btyd.GammaGamma
    period_days: float
    #: The profile fields and signal activities the features read (without the data).
    context: Context
    #: What customers without a purchase spent in the training period (their value).
    prior: Prior | None = None
    #: Weight of the gradient-boosted model in the published value; the rest is BG/NBD + Gamma-Gamma.
    weight: float = 1.0

    def predict(self, X: pd.DataFrame, boosted: np.ndarray | None = None) -> np.ndarray:
        """Expected value over the period: the blend of the gradient-boosted model (its values ``boosted`` of ``X``
        when given) and BG/NBD + Gamma-Gamma."""
        if boosted is None:
            boosted = self.boosted(X)
        if self.weight == 1.0:
            return boosted
        return self.weight * boosted + (1.0 - self.weight) * btyd_estimate(X)

    def boosted(self, X: pd.DataFrame) -> np.ndarray:
        """The gradient-boosted model's expected value alone."""
        return self.mean.predict(X[self.features])


def btyd_estimate(X: pd.DataFrame) -> np.ndarray:
    """BG/NBD + Gamma-Gamma's expected value: expected purchases x expected purchase value."""
    purchases = X["bgnbd_expected_purchases"].to_numpy(dtype=np.float64)
    return purchases * np.nan_to_num(X["gamma_gamma_expected_value"].to_numpy(dtype=np.float64))


def poisson_deviance(actual: np.ndarray, expected: np.ndarray) -> float:
    """Mean Poisson deviance of ``expected`` against ``actual`` (the loss the gradient-boosted model is fitted with).

    It penalises a wrong level and a wrong order together and is lowest, in expectation, at the true mean, so a
    blend cannot win it by shrinking its forecasts.
    """
    y = np.asarray(actual, dtype=np.float64)
    mu = np.clip(np.asarray(expected, dtype=np.float64), FLOOR, None)
    ratio = np.where(y > 0, y * np.log(np.where(y > 0, y, 1.0) / mu), 0.0)
    return float(np.mean(2.0 * (ratio - (y - mu)))) if len(y) else float("nan")


def _figures(actual: np.ndarray, expected: np.ndarray, share: float) -> dict:
    out = metrics.regression(actual, expected, share)
    keep = {k: out[k] for k in ("top_capture", "normalized_gini", "total_forecast_error")}
    return keep | {"poisson_deviance": round(poisson_deviance(actual, expected), 4)}


@dataclass(frozen=True)
class Method:
    """How the published value is made: the weight of the gradient-boosted model and why."""

    weight: float
    #: One sentence: chosen on the inner backtest (with its figures) or the default (and why there was none).
    why: str
    #: The inner backtest: its cutoffs, customers and the figures of both models alone and of the blend chosen.
    inner: dict

    def as_dict(self) -> dict:
        """The method for the report."""
        name = {1.0: "gradient boosting", 0.0: "BG/NBD + Gamma-Gamma"}.get(self.weight, "blend")
        return {
            "estimate": name,
            "weight_gradient_boosting": self.weight,
            "weight_bgnbd_gamma_gamma": round(1.0 - self.weight, 1),
            "why": self.why,
            "inner": self.inner,
        }


def choose_weight(actual: np.ndarray, boosted: np.ndarray, btyd_value: np.ndarray) -> tuple[float, dict]:
    """The weight of ``boosted`` (of :data:`WEIGHTS`) whose blend with ``btyd_value`` has the lowest Poisson deviance
    against ``actual``, and the deviance of every weight. Ties go to the larger weight."""
    deviance = {w: poisson_deviance(actual, w * boosted + (1.0 - w) * btyd_value) for w in WEIGHTS}
    best = min(sorted(WEIGHTS, reverse=True), key=lambda w: deviance[w])
    return best, {str(w): round(d, 4) for w, d in deviance.items()}


@dataclass(frozen=True)
class ClvResult:
    """What :func:`run_clv` returns."""

    #: One row per customer with a purchase: CustomerId, PredictedValue, ValueLow, ValueHigh, ValueBand, Reason1..3
    #: (None when not asked for).
    scores: pd.DataFrame | None
    report: dict
    stored: StoredModel


def btyd_value(history: History, cutoff, bgnbd: btyd.BgNbd, gg: btyd.GammaGamma, days: float) -> pd.DataFrame:
    """BG/NBD expected purchases over ``days`` and Gamma-Gamma expected purchase value of the purchasers at
    ``cutoff``."""
    s = history.summary(cutoff)
    return pd.DataFrame(
        {
            "bgnbd_expected_purchases": bgnbd.expected_purchases(s["x"], s["t_x"], s["T"], days / btyd.WEEK),
            "gamma_gamma_expected_value": gg.expected_spend(s["x"], s["monetary"]),
        },
        index=s.index,
    )


def reference_value(history: History, X: pd.DataFrame, cutoff, settings: PredictionSettings) -> np.ndarray:
    """The reference baseline: average monthly spend x months x overall retention.

    Average monthly spend is the spend to date over the months since the first purchase (at least one).
    Overall retention is the share of customers active (a purchase within ``active_days``) one period before the
    cutoff who are active again at the cutoff.
    """
    months = np.maximum(X["days_since_first_purchase"].to_numpy() / 30.44, 1.0)
    monthly = X["total_amount"].to_numpy() / months
    active_days = pd.Timedelta(days=settings.clv.active_days)
    before = cutoff - pd.Timedelta(days=settings.clv.period_days)
    then = history.customers_active(before - active_days, before)
    now = history.customers_active(cutoff - active_days, cutoff)
    retention = len(np.intersect1d(then, now, assume_unique=True)) / len(then) if len(then) else 0.0
    return monthly * settings.clv.period_months * retention


def labelled(history: History, cutoff, days: float):
    """Features and the value (returns subtracted, floored at 0) in the ``days`` after the cutoff of every
    purchaser."""
    _, value = history.future(cutoff, days)
    return history.features(cutoff), np.clip(value.to_numpy(), 0.0, None)


def _regressor(loss: str, seed: int, **extra) -> HistGradientBoostingRegressor:
    return HistGradientBoostingRegressor(loss=loss, **BOOSTING, random_state=seed, **extra)


def fit(history: History, cutoff: pd.Timestamp, settings: PredictionSettings, intervals: bool = True) -> ClvModel:
    """Fit the value model (Poisson loss: values are >= 0 and mostly 0 or small) and the 10% / 90% quantile models
    (not when ``intervals`` is False: the inner backtest compares expected values only).

    Nothing after ``cutoff`` + the period is read."""
    X, y = labelled(history, cutoff, settings.clv.period_days)
    if len(y) < MIN_TRAINING:
        raise InsufficientData(
            f"{MODEL}: only {len(y)} customers had bought by the training cutoff {cutoff.date()}, at least "
            f"{MIN_TRAINING} are needed (a longer history or a shorter predictions.clv.period_months)"
        )
    if not (y > 0).any():
        raise InsufficientData(
            f"{MODEL}: none of the {len(y)} customers who had bought by the training cutoff {cutoff.date()} bought "
            f"again in the {settings.clv.period_days:.0f} days after it (only one-time buyers), so there is no value "
            "to learn from (add purchase history or shorten predictions.clv.period_months)"
        )
    s = history.summary(cutoff)
    bgnbd = btyd.fit_bgnbd(s["x"], s["t_x"], s["T"])
    gg = btyd.fit_gamma_gamma(s["x"], s["monetary"])
    X = X.join(btyd_value(history, cutoff, bgnbd, gg, settings.clv.period_days))
    X, y = sampled(X, y, settings.seed)
    X = informative(X)
    mean = _regressor("poisson", settings.seed).fit(X, y)
    low = _regressor("quantile", settings.seed, quantile=QUANTILES[0]).fit(X, y) if intervals else None
    high = _regressor("quantile", settings.seed, quantile=QUANTILES[1]).fit(X, y) if intervals else None
    return ClvModel(
        mean=mean,
        low=low,
        high=high,
        features=list(X.columns),
        typical=explain.typical_values(X),
        bgnbd=bgnbd,
        gamma_gamma=gg,
        period_days=settings.clv.period_days,
        context=history.context.without_frames(),
    )


def _features(model: ClvModel, history: History, cutoff) -> pd.DataFrame:
    X = history.features(cutoff)
    X = X.join(btyd_value(history, cutoff, model.bgnbd, model.gamma_gamma, model.period_days))
    return X[model.features]


def method_for(history: History, cutoff: pd.Timestamp, settings: PredictionSettings, earlier=None) -> Method:
    """The blend weight of a model trained at ``cutoff``, chosen on the data that model learns from, one period back.

    Both models are fitted at ``cutoff`` - period (``earlier`` when already fitted there) and compared on the
    customers at ``cutoff`` against what they spent in the period after it: nothing later than the model's own
    labels is read. When the history holds no such inner backtest (too few customers had bought by then), the
    weight is :data:`DEFAULT_WEIGHT` and ``why`` says why.
    """
    period = pd.Timedelta(days=settings.clv.period_days)
    trained_at = cutoff - period
    window = {"trained_at": trained_at.isoformat(), "evaluated_at": cutoff.isoformat()}
    try:
        if earlier is None:
            earlier = fit(history, trained_at, settings, intervals=False)
    except InsufficientData as exc:
        why = f"default: equal weights, as the history holds no inner backtest trained at {trained_at.date()} ({exc})"
        return Method(DEFAULT_WEIGHT, why, window)
    _, y = labelled(history, cutoff, settings.clv.period_days)
    X = _features(earlier, history, cutoff)
    boosted, bg = earlier.boosted(X), btyd_estimate(X)
    weight, deviance = choose_weight(y, boosted, bg)
    share = settings.clv.high_value_share
    inner = window | {
        "customers": int(len(y)),
        "criterion": "lowest mean Poisson deviance of the blend",
        "deviance_by_weight": deviance,
        "gradient_boosting": _figures(y, boosted, share),
        "bgnbd_gamma_gamma": _figures(y, bg, share),
        "chosen": _figures(y, weight * boosted + (1.0 - weight) * bg, share),
    }
    why = (
        f"inner backtest (trained {trained_at.date()}, evaluated {cutoff.date()} on the next "
        f"{settings.clv.period_days:.0f} days, {len(y):,} customers): weight {weight:.1f} on gradient boosting has "
        f"the lowest Poisson deviance, {deviance[str(weight)]} against {deviance['1.0']} for gradient boosting "
        f"alone and {deviance['0.0']} for BG/NBD + Gamma-Gamma alone"
    )
    return Method(weight, why, inner)


def figures_are(backtest: Method, published: Method) -> str:
    """What the report's ``model`` figures describe next to what is published: the backtest's blend, whose weight
    was chosen one period before its window, and the published value, whose weight was chosen on that window."""
    w, p = backtest.weight, published.weight
    said = f"the backtest's {_weighted(w)}"
    if w == p:
        return f"{said}, weighted as the published values are"
    if p in (0.0, 1.0):
        where = "the baseline bgnbd_gamma_gamma" if p == 0.0 else "gradient_boosting_alone"
        what = f"the published values are {_weighted(p)}, whose figures here are those of {where}"
    else:
        what = (
            f"the published values are a {_weighted(p)}, chosen on this same window: its figures on it "
            "(published_method.inner.chosen) were picked there, not tested there, so no figure here tests them"
        )
    return f"{said}, not what is published: {what}"


def _weighted(weight: float) -> str:
    return {1.0: "gradient boosting alone", 0.0: "BG/NBD + Gamma-Gamma alone"}.get(
        weight, f"blend (weight {weight:.1f} on gradient boosting)"
    )


def evaluate(model: ClvModel, history: History, cutoff: pd.Timestamp, settings: PredictionSettings) -> dict:
    """Metrics of the model (its blend), the gradient-boosted model alone and the two baselines on purchasers at
    ``cutoff`` against the period after it."""
    _, y = labelled(history, cutoff, settings.clv.period_days)
    X = _features(model, history, cutoff)
    share = settings.clv.high_value_share
    predicted = model.predict(X)
    low, high = interval(predicted, model.low.predict(X), model.high.predict(X))
    out = {
        "customers": int(len(y)),
        "top_customers": metrics.top_count(len(y), share),
        "actual_total": round(float(y.sum()), 2),
        "model": metrics.regression(y, predicted, share, low, high),
        "gradient_boosting_alone": metrics.regression(y, model.boosted(X), share),
    }
    bg = btyd_estimate(X)
    reference = reference_value(history, X, cutoff, settings)
    out["baselines"] = {
        "reference_monthly_x_months_x_retention": metrics.regression(y, reference, share),
        "bgnbd_gamma_gamma": metrics.regression(y, bg, share),
    }
    withheld = metrics.clv_grade_withheld(out["customers"], out["top_customers"], share)
    if withheld is None:
        rule = out["baselines"]["reference_monthly_x_months_x_retention"]
        out["reference_grade"] = metrics.reference_clv_grade(out["model"], rule)
    else:
        out["reference_grade"], out["not_graded"] = None, withheld
    out["charts"] = {
        "gain": metrics.gain_table(y, predicted) if len(y) else [],
        "deciles": metrics.decile_table(y, predicted) if len(y) else [],
    }
    # Each baseline's gain points under "gain/<baseline>", so the drawn chart sets the model beside them.
    for name, values in (("reference_monthly_x_months_x_retention", reference), ("bgnbd_gamma_gamma", bg)):
        out["charts"][f"gain/{name}"] = metrics.gain_table(y, values) if len(y) else []
    best = max(b["top_capture"] for b in out["baselines"].values())
    out["top_capture_over_best_baseline"] = round(out["model"]["top_capture"] - best, 4)
    beaten = metrics.beaten_by_baseline(MODEL, out["model"], out["baselines"], "top_capture", "top-share capture")
    if beaten is not None:
        out["beaten_by_baseline"] = beaten
    return out


def interval(value: np.ndarray, low: np.ndarray, high: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The 80% interval around ``value``: never below 0, and always holding the value.

    The quantile models are fitted separately from the mean model and can cross each other or miss it.
    """
    low, high = np.minimum(low, high), np.maximum(low, high)
    return np.clip(np.minimum(low, value), 0, None), np.maximum(high, value)


def score(
    model: ClvModel, history: History, cutoff: pd.Timestamp, share: float, customers=None, reuse: RowReuse | None = None
):
    """Per-customer value, 80% interval, band and reasons at ``cutoff``, and the contributions matrix.

    Everyone with a purchase is valued by the model; the other customers of ``customers`` get the population
    prior (``Basis`` says which). Bands rank all of them together. With ``reuse`` (a
    :class:`~ci_pipeline.predictions.reuse.RowReuse`), customers whose features did not change since the kept run
    keep their value, interval and reasons (the same values; the contributions matrix is returned only when every
    row was computed).
    """
    X = _features(model, history, cutoff)
    if reuse is None:
        valued, contrib = _valued(model, X)
    else:
        valued, contrib = reuse_rows(reuse, X, cutoff, lambda rows: _valued(model, rows))
    value, low, high = (valued[c].to_numpy(dtype=np.float64) for c in _VALUES)
    reasons = valued.drop(columns=list(_VALUES))
    basis = np.full(len(X), prior.MODEL_BASIS, dtype=object)
    index = X.index
    without = prior.without_purchase(history.encoded, customers, cutoff)
    if len(without) and model.prior is not None:
        p = model.prior
        value = np.concatenate([value, np.full(len(without), p.mean_value)])
        low = np.concatenate([low, np.full(len(without), min(p.low_value, p.mean_value))])
        high = np.concatenate([high, np.full(len(without), max(p.high_value, p.mean_value))])
        text = prior.reason(p, f"average {p.mean_value:.2f} spent")
        extra = pd.DataFrame({"Reason1": text}, index=without, columns=reasons.columns).astype("string")
        reasons = pd.concat([reasons, extra])
        basis = np.concatenate([basis, np.full(len(without), prior.PRIOR, dtype=object)])
        index = index.append(without)
    band = value_bands(value, share)
    out = pd.DataFrame(
        {
            "PredictedValue": np.round(value, 2),
            "ValueLow": np.round(low, 2),
            "ValueHigh": np.round(high, 2),
            "ValueBand": pd.array(band, dtype="string"),
        },
        index=pd.Index(index, dtype="string", name="CustomerId"),
    ).join(reasons)
    out["Basis"] = pd.array(basis, dtype="string")
    return out.sort_index(kind="stable").reset_index(), contrib


#: The value model's own outputs per customer (before rounding), beside its reasons.
_VALUES = ("value", "low", "high")


def _valued(model: ClvModel, X: pd.DataFrame) -> tuple[pd.DataFrame, np.ndarray]:
    """The value, interval and reasons of each row of ``X`` (each row's depend on that row alone), and the
    contributions matrix."""
    # Each tree of the value model evaluated once; each reason re-evaluates only the trees and customers its
    # typical value changes.
    trees = explain.BoostedTrees(model.mean, X, model.typical)
    value = model.predict(X, trees.output())
    low, high = interval(value, model.low.predict(X), model.high.predict(X))
    contrib = explain.contributions(model.predict, X, model.typical, trees)
    values = pd.DataFrame(dict(zip(_VALUES, (value, low, high), strict=True)), index=X.index)
    return values.join(explain.top_reasons(X, contrib)), contrib


def run_clv(
    purchases: pd.DataFrame,
    customers: pd.Series,
    latest,
    settings: PredictionSettings,
    profile: pd.DataFrame | None = None,
    signals: pd.DataFrame | None = None,
    measures: Measures | None = None,
    score_everyone: bool = True,
    reuse: RowReuse | None = None,
) -> ClvResult:
    """Check the data, backtest one period back, fit at the latest cutoff and score every purchaser.

    Args:
        purchases: the purchases frame (``data.purchases_from_facts``).
        customers: every CustomerId (the profile's), for the usability report.
        latest: the scoring cutoff: the run time, or None for the last purchase (data that ends before the run).
        settings: the prediction settings.
        profile: the CustomerProfile table when ``settings.profile_fields`` is set.
        signals: the other activities when ``settings.signal_activities`` is set (``data.signals_from_facts``).
        measures: the measures section and activity facts when ``settings.measure_fields`` is set.
        score_everyone: False when the scores are not wanted (the result's ``scores`` is None): the model is then
            explained only for the customers of its global importance (:func:`explain.importance_rows`).
        reuse: with ``score_everyone``, where the scores are kept for the next run (its kept rows are not used: the
            model is new).

    Raises:
        InsufficientData: below the minimum customers or history, or a cutoff after the last purchase.
    """
    with threadpool_limits(limits=native_threads(settings.threads)):
        history = History(purchases, settings.context(profile, signals, measures))
        return _run_clv(history, customers, latest, settings, score_everyone, reuse)


def _run_clv(history: History, customers, latest, settings: PredictionSettings, score_everyone: bool, reuse=None):
    purchases, context = history.purchases, history.context
    latest = latest_cutoff(latest, purchases, MODEL)
    period = pd.Timedelta(days=settings.clv.period_days)
    check_cutoff(purchases, latest - period, MODEL)
    report = usability(purchases[purchases["Time"] <= latest], customers, context)
    history_days = float((latest - purchases["Time"].min()) / pd.Timedelta(days=1))
    need = settings.minimums.history_windows * settings.clv.period_days
    keys = (
        f"predictions.minimums.clv_customers ({settings.minimums.clv_customers})",
        f"predictions.clv.period_months ({settings.clv.period_months})",
    )
    require(
        report, MODEL, settings.minimums.clv_customers, need, history_days, settings.minimums.max_missing_share, keys
    )
    # Each step reads only up to its cutoff plus one period: the backtest, its blend weight included, nothing after
    # latest - period. The published model's weight is chosen the same way one period later, on the backtest.
    backtest = fit(history, latest - 2 * period, settings)
    method = method_for(history, latest - 2 * period, settings)
    evaluation = backtested(
        MODEL, evaluate, replace(backtest, weight=method.weight), history, latest - period, settings
    )
    published = method_for(history, latest - period, settings, earlier=backtest)
    model = fit(history, latest - period, settings)
    fitted_prior = prior.fit_prior(history.encoded, customers, latest - period, settings.clv.period_days)
    model = replace(model, prior=fitted_prior, weight=published.weight)
    if score_everyone:
        scores, contrib = score(model, history, latest, settings.clv.high_value_share, customers, reuse)
        importance = explain.importance_of(contrib, model.features, settings.seed)
    else:
        scores = None
        X = _features(model, history, latest)
        importance = explain.sampled_importance(model.mean, model.predict, X, model.typical, settings.seed)
    full_report = {
        "prediction": MODEL,
        "usability": report.as_dict(),
        "backtest": {"trained_at": (latest - 2 * period).isoformat(), "evaluated_at": (latest - period).isoformat()},
        **_published_note(evaluation, method, published),
        "method": method.as_dict(),
        "published_method": published.as_dict(),
        "bgnbd": backtest.bgnbd.__dict__,
        "gamma_gamma": backtest.gamma_gamma.__dict__,
        "no_purchase_prior": model.prior.as_dict(),
        "feature_importance": importance,
    }
    stored = StoredModel(
        model=MODEL,
        fitted=model,
        features=model.features,
        metrics=full_report,
        data_window={
            "first_purchase": report.first_purchase,
            "trained_at_cutoff": (latest - period).isoformat(),
            "labels_until": latest.isoformat(),
        },
    )
    return ClvResult(scores=scores, report=full_report, stored=stored)


def _published_note(evaluation: dict, method: Method, published: Method) -> dict:
    """The evaluation with ``model_figures_are`` (what its ``model`` figures describe), and a baseline's win told
    against what is published when that differs from the backtest's blend."""
    out = {**evaluation, "model_figures_are": figures_are(method, published)}
    beaten = out.get("beaten_by_baseline")
    if beaten and method.weight != published.weight:
        note = f" (the model here is {out['model_figures_are']})"
        out["beaten_by_baseline"] = {**beaten, "message": beaten["message"] + note}
    return out


def score_stored(
    stored: StoredModel,
    purchases: pd.DataFrame,
    cutoff,
    share: float = 0.2,
    profile: pd.DataFrame | None = None,
    signals: pd.DataFrame | None = None,
    threads: int | None = None,
    customers: pd.Series | None = None,
    measures: Measures | None = None,
    reuse: RowReuse | None = None,
) -> pd.DataFrame:
    """Score with a stored model; a feature that no longer exists is an error.

    Customers of ``customers`` without a purchase get the stored population prior. With ``reuse`` (a
    :class:`~ci_pipeline.predictions.reuse.RowReuse`), customers whose features are unchanged since the kept run
    keep their values.
    """
    model: ClvModel = stored.fitted
    context = replace(model.context, profile=profile, signals=signals, measures=measures)
    stored.check_features(context.available() + BTYD_FEATURES)
    with threadpool_limits(limits=native_threads(threads)):
        return score(model, History(purchases, context), as_utc(cutoff), share, customers, reuse)[0]


def value_bands(value: np.ndarray, share: float) -> np.ndarray:
    """``High`` for the top ``share`` of ``value``, ``Medium`` down to the median, ``Low`` for the rest.

    Equal values share a band, the band of their middle rank: a run of them (every customer valued by the prior
    holds the same value) is placed as a whole where its middle falls, so which of two equal customers is High
    never depends on their order."""
    rank = pd.Series(value).rank(ascending=False, method="average").to_numpy() / max(len(value), 1)
    return np.where(rank <= share, "High", np.where(rank <= 0.5, "Medium", "Low"))
