"""Transactional churn: the probability that a customer who has bought before makes no purchase in the window.

Training at the latest cutoff L needs labels after it, which do not exist yet, so the model that scores at L is
fitted at L - window (labels from (L - window, L]). The backtest fits the same way one window earlier, at
L - 2 windows, and is evaluated on customers at L - window against what they did in (L - window, L].
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import pandas as pd
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
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
from ci_pipeline.predictions.settings import ChurnSettings, PredictionSettings
from ci_pipeline.predictions.stored import StoredModel

MODEL = "TransactionalChurn"
#: Fewest churners (and fewest customers who stayed) a model can be trained on.
MIN_CLASS = 10
#: Share of the training customers held out to calibrate the probabilities.
CALIBRATION_SHARE = 0.25
#: Likelihood bands by probability: below 1/3 low, below 2/3 medium, else high.
BANDS = (1 / 3, 2 / 3)
#: The reference's rule window is halved down to this many days.
RULE_FLOOR_DAYS = 30
#: Features the model takes from its own BG/NBD fit.
BTYD_FEATURES = ["bgnbd_p_no_purchase", "bgnbd_p_alive"]
#: Cutoffs (one window apart) whose customers make up the training rows.
TRAINING_CUTOFFS = 6


@dataclass(frozen=True)
class ChurnModel:
    """A fitted churn model and its baselines."""

    classifier: HistGradientBoostingClassifier
    calibrator: LogisticRegression
    features: list[str]
    typical: dict
    #: Days of the best "no purchase in the last X days" rule.
    rule_days: int
    bgnbd: btyd.BgNbd
    label_days: int
    #: The profile fields and signal activities the features read (without the data).
    context: Context
    #: What customers without a purchase did in the training window (their score).
    prior: Prior | None = None

    def predict(self, X: pd.DataFrame, boosted: np.ndarray | None = None) -> np.ndarray:
        """Calibrated churn probabilities (of the classifier's probabilities ``boosted`` of ``X`` when given)."""
        if boosted is None:
            boosted = self.classifier.predict_proba(X[self.features])[:, 1]
        return self.calibrator.predict_proba(_logit(boosted))[:, 1]


@dataclass(frozen=True)
class ChurnResult:
    """What :func:`run_churn` returns."""

    #: One row per customer with a purchase: CustomerId, ChurnScore, IsChurn, Likelihood, Reason1..3 (None when
    #: not asked for).
    scores: pd.DataFrame | None
    #: Backtest metrics of the model and each baseline, grades, feature importance, usability report.
    report: dict
    stored: StoredModel


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-6, 1 - 1e-6)
    return np.log(p / (1 - p))[:, None]


def rule_windows(window_days: int) -> list[int]:
    """X of the reference's "no purchase in the last X days" rules: the window halved until one month or less."""
    out = [int(window_days)]
    while out[-1] > RULE_FLOOR_DAYS:
        out.append(max(int(round(out[-1] / 2)), 1))
    return out


def labelled(history: History, cutoff: pd.Timestamp, days: int):
    """Features and labels (True = no purchase in the ``days`` after it) of everyone who bought by the cutoff."""
    count, _ = history.future(cutoff, days)
    return history.features(cutoff), (count == 0).to_numpy()


def label_key(settings: ChurnSettings) -> str:
    """The setting that says how many days the churn label covers: ``churn_days`` when set, else ``window_days``."""
    return "predictions.churn." + ("churn_days" if settings.churn_days else "window_days")


def _check_labels(y: np.ndarray, cutoff: pd.Timestamp, days: int, key: str) -> None:
    churners, stayers = int(y.sum()), int((~y).sum())
    if min(churners, stayers) < MIN_CLASS:
        raise InsufficientData(
            f"{MODEL}: at the training cutoff {cutoff.date()} {churners} customers churned and {stayers} bought again "
            f"within {days} days; at least {MIN_CLASS} of each are needed to learn the difference "
            f"(change {key} or add history)"
        )


def btyd_features(history: History, cutoff: pd.Timestamp, model: btyd.BgNbd, days: int) -> dict[str, np.ndarray]:
    """BG/NBD's P(no purchase in the window) and P(alive) of the purchasers at ``cutoff`` (:data:`BTYD_FEATURES`)."""
    summary = history.summary(cutoff)
    return {
        "bgnbd_p_no_purchase": model.p_no_purchase(summary["x"], summary["t_x"], summary["T"], days / btyd.WEEK),
        "bgnbd_p_alive": model.p_alive(summary["x"], summary["t_x"], summary["T"]),
    }


def with_btyd(X: pd.DataFrame, history: History, cutoff: pd.Timestamp, model: btyd.BgNbd, days: int):
    """``X`` (the features at ``cutoff``) plus :func:`btyd_features` as two more columns."""
    out = X.copy()
    for name, values in btyd_features(history, cutoff, model, days).items():
        out[name] = values
    return out


def fit(history: History, cutoff: pd.Timestamp, settings: PredictionSettings) -> ChurnModel:
    """Fit the model, its calibration and the baselines on customers at ``cutoff`` and the window after it.

    Customers are also taken at earlier cutoffs, one window apart (up to :data:`TRAINING_CUTOFFS` in all, while the
    history allows), so a short history still gives enough rows; every row's features and label come from its own
    cutoff. BG/NBD is fitted at ``cutoff`` and its two probabilities are features of the model too. Nothing after
    ``cutoff`` + window is read.
    """
    days = settings.churn.label_days
    window = pd.Timedelta(days=days)
    X, y = labelled(history, cutoff, days)
    _check_labels(y, cutoff, days, label_key(settings.churn))
    summary = history.summary(cutoff)
    bgnbd = btyd.fit_bgnbd(summary["x"], summary["t_x"], summary["T"])
    recency = X["days_since_last_purchase"].to_numpy()
    accuracy = {x: float(((recency > x) == y).mean()) for x in rule_windows(days)}
    cutoffs = [cutoff - step * window for step in range(TRAINING_CUTOFFS)]
    cutoffs = [c for c in cutoffs if c == cutoff or c - window >= history.first]
    y = np.concatenate([y] + [labelled(history, c, days)[1] for c in cutoffs[1:]])
    # One copy of the training rows: each cutoff's features are shared with the other steps of the run.
    X = pd.concat([history.features(c) for c in cutoffs])
    extra = [btyd_features(history, c, bgnbd, days) for c in cutoffs]
    for name in BTYD_FEATURES:
        X[name] = np.concatenate([part[name] for part in extra])
    X, y = sampled(X, y, settings.seed)
    X = informative(X)
    rng = np.random.default_rng(settings.seed)
    # Stratified split so both classes reach the calibration set even when one of them is rare.
    calibrate = np.zeros(len(y), dtype=bool)
    for cls in (False, True):
        members = np.flatnonzero(y == cls)
        calibrate[rng.permutation(members)[: max(int(len(members) * CALIBRATION_SHARE), 1)]] = True
    classifier = HistGradientBoostingClassifier(**BOOSTING, random_state=settings.seed)
    classifier.fit(X[~calibrate], y[~calibrate])
    raw = classifier.predict_proba(X[calibrate])[:, 1]
    calibrator = LogisticRegression(C=1e6).fit(_logit(raw), y[calibrate])
    return ChurnModel(
        classifier=classifier,
        calibrator=calibrator,
        features=list(X.columns),
        typical=explain.typical_values(X),
        rule_days=max(accuracy, key=lambda x: (accuracy[x], -x)),
        bgnbd=bgnbd,
        label_days=days,
        context=history.context.without_frames(),
    )


def baseline_scores(model: ChurnModel, history: History, X: pd.DataFrame, cutoff: pd.Timestamp) -> dict:
    """Scores of the baselines for the customers of ``X`` (the purchasers at ``cutoff``): the best rule (0/1) and
    BG/NBD P(no purchase)."""
    summary = history.summary(cutoff)
    quiet = model.bgnbd.p_no_purchase(summary["x"], summary["t_x"], summary["T"], model.label_days / btyd.WEEK)
    rule = (X["days_since_last_purchase"].to_numpy() > model.rule_days).astype(float)
    return {f"rule_no_purchase_{model.rule_days}_days": rule, "bgnbd_p_no_purchase": quiet}


def evaluate(model: ChurnModel, history: History, cutoff: pd.Timestamp) -> dict:
    """Metrics of the model and each baseline on customers at ``cutoff`` against the window after it."""
    X, y = labelled(history, cutoff, model.label_days)
    X = with_btyd(X, history, cutoff, model.bgnbd, model.label_days)
    scored = model.predict(X)
    churners = int(y.sum())
    out = {
        "customers": int(len(y)),
        "churners": churners,
        "bought_again": int(len(y)) - churners,
        "churn_rate": round(float(y.mean()), 4),
        "model": metrics.classification(y, scored),
    }
    baselines = baseline_scores(model, history, X, cutoff)
    out["baselines"] = {name: metrics.classification(y, s) for name, s in baselines.items()}
    rule = out["baselines"][f"rule_no_purchase_{model.rule_days}_days"]
    out["rule_errors_removed"] = metrics.error_reduction(out["model"], rule)
    withheld = metrics.churn_grade_withheld(churners, out["bought_again"])
    if withheld is None:
        out["reference_grade"] = metrics.reference_churn_grade(out["model"], rule)
        out["lift_grade"] = metrics.lift_grade(out["rule_errors_removed"])
    else:
        out["reference_grade"] = out["lift_grade"] = None
        out["not_graded"] = withheld
    aucs = [b["auc"] for b in out["baselines"].values() if b["auc"] is not None]
    out["auc_over_best_baseline"] = (
        round(out["model"]["auc"] - max(aucs), 4) if aucs and out["model"]["auc"] is not None else None
    )
    beaten = metrics.beaten_by_baseline(MODEL, out["model"], out["baselines"], "auc", "AUC")
    if beaten is not None:
        out["beaten_by_baseline"] = beaten
    # The points of the calibration and gain charts the evaluation report draws.
    out["charts"] = {
        "calibration": metrics.calibration_table(y, scored),
        "gain": metrics.gain_table(y, scored) if len(y) else [],
    }
    # Each baseline's points under "<chart>/<baseline>", so the drawn charts set the model beside them.
    for name, baseline in baselines.items():
        out["charts"][f"calibration/{name}"] = metrics.calibration_table(y, baseline)
        out["charts"][f"gain/{name}"] = metrics.gain_table(y, baseline) if len(y) else []
    return out


def score(
    model: ChurnModel, history: History, cutoff: pd.Timestamp, customers=None, reuse: RowReuse | None = None
) -> tuple[pd.DataFrame, np.ndarray | None]:
    """Per-customer scores at ``cutoff`` and the contributions matrix (of the customers with a purchase).

    Everyone with a purchase is scored by the model; the other customers of ``customers`` get the population
    prior (``Basis`` says which). With ``reuse``, customers whose features did not change since the kept run keep
    their scores and reasons (the same values; the contributions matrix is returned only when every row was
    computed).
    """
    X = _features(model, history, cutoff)
    if reuse is None:
        out, contrib = _scored(model, X)
    else:
        out, contrib = reuse_rows(reuse, X, cutoff, lambda rows: _scored(model, rows))
    out["Basis"] = pd.array([prior.MODEL_BASIS] * len(out), dtype="string")
    without = prior.without_purchase(history.encoded, customers, cutoff)
    if len(without) and model.prior is not None:
        p = model.prior.p_no_purchase
        rows = _rows(np.full(len(without), p), without).reindex(columns=out.columns)
        text = [c for c in out.columns if c.startswith("Reason") or c == "Basis"]
        rows = rows.astype({c: "string" for c in text})
        rows["Reason1"] = prior.reason(model.prior, f"{p:.0%} bought nothing")
        rows["Basis"] = prior.PRIOR
        out = pd.concat([out, rows])
        out = out.sort_index(kind="stable")
    return out.reset_index(), contrib


def _scored(model: ChurnModel, X: pd.DataFrame) -> tuple[pd.DataFrame, np.ndarray]:
    """The model's score, band and reasons of each row of ``X`` (each row's depend on that row alone), and the
    contributions matrix."""
    # Each tree evaluated once; each reason re-evaluates only the trees and customers its typical value changes.
    trees = explain.BoostedTrees(model.classifier, X, model.typical)
    probability = model.predict(X, trees.output())
    contrib = explain.contributions(model.predict, X, model.typical, trees)
    return _rows(probability, X.index).join(explain.top_reasons(X, contrib)), contrib


def _features(model: ChurnModel, history: History, cutoff) -> pd.DataFrame:
    return with_btyd(history.features(cutoff), history, cutoff, model.bgnbd, model.label_days)[model.features]


def _rows(probability: np.ndarray, index: pd.Index) -> pd.DataFrame:
    band = np.where(probability < BANDS[0], "Low", np.where(probability < BANDS[1], "Medium", "High"))
    return pd.DataFrame(
        {
            "ChurnScore": np.round(probability, 4),
            "IsChurn": probability >= 0.5,
            "Likelihood": pd.array(band, dtype="string"),
        },
        index=index,
    )


def run_churn(
    purchases: pd.DataFrame,
    customers: pd.Series,
    latest,
    settings: PredictionSettings,
    profile: pd.DataFrame | None = None,
    signals: pd.DataFrame | None = None,
    measures: Measures | None = None,
    score_everyone: bool = True,
    reuse: RowReuse | None = None,
) -> ChurnResult:
    """Check the data, backtest one window back, fit at the latest cutoff and score every purchaser.

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
        InsufficientData: below the minimum customers or history, a cutoff after the last purchase, or a window
            in which everyone (or no one) churned.
    """
    with threadpool_limits(limits=native_threads(settings.threads)):
        history = History(purchases, settings.context(profile, signals, measures))
        return _run_churn(history, customers, latest, settings, score_everyone, reuse)


def _run_churn(history: History, customers, latest, settings: PredictionSettings, score_everyone: bool, reuse=None):
    purchases, context = history.purchases, history.context
    latest = latest_cutoff(latest, purchases, MODEL)
    days = settings.churn.label_days
    check_cutoff(purchases, latest - pd.Timedelta(days=days), MODEL)
    report = usability(purchases[purchases["Time"] <= latest], customers, context)
    history_days = float((latest - purchases["Time"].min()) / pd.Timedelta(days=1))
    require(
        report,
        MODEL,
        settings.minimums.churn_customers,
        settings.minimums.history_windows * days,
        history_days,
        settings.minimums.max_missing_share,
        (
            f"predictions.minimums.churn_customers ({settings.minimums.churn_customers})",
            f"{label_key(settings.churn)} ({days})",
        ),
    )
    window = pd.Timedelta(days=days)
    # Each step reads only up to its cutoff plus one window: the backtest nothing after latest - window.
    backtest = fit(history, latest - 2 * window, settings)
    evaluation = backtested(MODEL, evaluate, backtest, history, latest - window)
    model = fit(history, latest - window, settings)
    model = replace(model, prior=prior.fit_prior(history.encoded, customers, latest - window, days))
    if score_everyone:
        scores, contrib = score(model, history, latest, customers, reuse)
        importance = explain.importance_of(contrib, model.features, settings.seed)
    else:
        scores = None
        X = _features(model, history, latest)
        importance = explain.sampled_importance(model.classifier, model.predict, X, model.typical, settings.seed)
    full_report = {
        "prediction": MODEL,
        "usability": report.as_dict(),
        "backtest": {"trained_at": (latest - 2 * window).isoformat(), "evaluated_at": (latest - window).isoformat()},
        **evaluation,
        "best_rule_days": backtest.rule_days,
        "bgnbd": backtest.bgnbd.__dict__,
        "no_purchase_prior": _prior_backtest(history, customers, latest, days),
        "feature_importance": importance,
    }
    stored = StoredModel(
        model=MODEL,
        fitted=model,
        features=model.features,
        metrics=full_report,
        data_window={
            "first_purchase": report.first_purchase,
            "trained_at_cutoff": (latest - window).isoformat(),
            "labels_until": latest.isoformat(),
        },
    )
    return ChurnResult(scores=scores, report=full_report, stored=stored)


def _prior_backtest(history: History, customers, latest: pd.Timestamp, days: int) -> dict:
    """The prior learnt one window back next to what customers without a purchase then did."""
    window = pd.Timedelta(days=days)
    learnt = prior.fit_prior(history.encoded, customers, latest - 2 * window, days)
    actual = prior.fit_prior(history.encoded, customers, latest - window, days)
    # A share of no one is no figure: None, not the 1.0 "nobody bought" of a division by a stand-in 1.
    observed = round(1 - actual.bought / actual.customers, 4) if actual.customers else None
    return {**learnt.as_dict(), "actual_customers_without_purchase": actual.customers, "actual_p_no_purchase": observed}


def score_stored(
    stored: StoredModel,
    purchases: pd.DataFrame,
    cutoff,
    profile: pd.DataFrame | None = None,
    signals: pd.DataFrame | None = None,
    threads: int | None = None,
    customers: pd.Series | None = None,
    measures: Measures | None = None,
    reuse: RowReuse | None = None,
) -> pd.DataFrame:
    """Score with a stored model (every refresh, between trainings); a feature that no longer exists is an error.

    Customers of ``customers`` without a purchase get the stored population prior. With ``reuse``, customers whose
    features are unchanged since the kept run keep their scores (:mod:`ci_pipeline.predictions.reuse`).
    """
    model: ChurnModel = stored.fitted
    context = replace(model.context, profile=profile, signals=signals, measures=measures)
    stored.check_features(context.available() + BTYD_FEATURES)
    with threadpool_limits(limits=native_threads(threads)):
        return score(model, History(purchases, context), as_utc(cutoff), customers, reuse)[0]
