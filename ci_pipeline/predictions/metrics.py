"""Evaluation metrics of the three models (pure numpy / scikit-learn)."""

from __future__ import annotations

import numpy as np
from scipy import sparse, stats
from sklearn.metrics import brier_score_loss, roc_auc_score

from ci_pipeline.arrays import isin, unique


def _r(value: float) -> float | None:
    return None if value is None or not np.isfinite(value) else round(float(value), 4)


def calibration_error(y: np.ndarray, p: np.ndarray, bins: int = 10) -> float:
    """Expected calibration error: |mean score - churn rate| over equal-width score bins, weighted by bin size."""
    which = np.clip((p * bins).astype(int), 0, bins - 1)
    n = np.bincount(which, minlength=bins)
    gap = np.abs(np.bincount(which, weights=p, minlength=bins) - np.bincount(which, weights=y, minlength=bins))
    return float(gap.sum() / max(len(p), 1)) if n.sum() else float("nan")


def calibration_table(y: np.ndarray, p: np.ndarray, bins: int = 10) -> list[dict]:
    """The calibration chart's points: per equal-width score bin, customers, mean score and observed rate."""
    y, p = np.asarray(y, dtype=np.float64), np.clip(np.asarray(p, dtype=np.float64), 0, 1)
    which = np.clip((p * bins).astype(int), 0, bins - 1)
    n = np.bincount(which, minlength=bins)
    score = np.bincount(which, weights=p, minlength=bins)
    rate = np.bincount(which, weights=y, minlength=bins)
    return [
        {
            "bin": f"{b / bins:.1f}-{(b + 1) / bins:.1f}",
            "customers": int(n[b]),
            "mean_score": _r(score[b] / n[b]),
            "observed_rate": _r(rate[b] / n[b]),
        }
        for b in range(bins)
        if n[b]
    ]


def gain_table(actual: np.ndarray, score: np.ndarray, groups: int = 10) -> list[dict]:
    """The gain chart's points: customers ranked by score, the share of the actual total captured per top decile."""
    actual = np.clip(np.asarray(actual, dtype=np.float64), 0, None)
    order = np.argsort(-np.asarray(score, dtype=np.float64), kind="stable")
    total = actual.sum()
    cumulative = np.cumsum(actual[order])
    out = []
    for g in range(1, groups + 1):
        top = max(int(round(len(order) * g / groups)), 1)
        captured = cumulative[top - 1] / total if total else float("nan")
        out.append({"top_share": round(g / groups, 2), "captured": _r(captured), "lift": _r(captured / (g / groups))})
    return out


def classification(y: np.ndarray, score: np.ndarray, threshold: float = 0.5) -> dict:
    """AUC, Brier score, calibration error, accuracy and precision / recall of churners at the threshold."""
    y = np.asarray(y, dtype=bool)
    score = np.asarray(score, dtype=np.float64)
    flagged = score >= threshold
    both = len(unique(y)) == 2
    tp = int((flagged & y).sum())
    return {
        "auc": _r(roc_auc_score(y, score)) if both else None,
        "brier": _r(brier_score_loss(y, np.clip(score, 0, 1))),
        "calibration_error": _r(calibration_error(y.astype(float), np.clip(score, 0, 1))),
        "accuracy": _r(float((flagged == y).mean())),
        "precision": _r(tp / flagged.sum()) if flagged.sum() else None,
        "recall": _r(tp / y.sum()) if y.sum() else None,
        "errors": int((flagged != y).sum()),
    }


#: Fewest churners, and fewest customers who bought again, a churn backtest is graded on. The grades turn on
#: proportions: the reference grade on 10 points of churners' recall, the lift grade on a share of the rule's
#: errors. A proportion over n customers has a standard error of up to 0.5 / sqrt(n), so at 100 of each outcome
#: the 10-point margin is two standard errors (0.05 each): fewer, and the letter can be the luck of a few customers.
CHURN_GRADE_MIN = 100
#: Fewest customers in the true top share a lifetime value backtest is graded on: the reference grade turns on
#: 5 points of top-share capture, a proportion over those customers, so by the same rule
#: (2 x 0.5 / sqrt(n) <= 0.05) at least 400 (2,000 customers evaluated at the default top 20%).
CLV_GRADE_MIN_TOP = 400


def churn_grade_withheld(churners: int, bought_again: int) -> str | None:
    """Why a churn backtest is not graded (too few churners or customers who bought again); None when it is."""
    if churners >= CHURN_GRADE_MIN and bought_again >= CHURN_GRADE_MIN:
        return None
    return (
        f"not graded: only {churners + bought_again:,} customers in the backtest ({churners:,} churned, "
        f"{bought_again:,} bought again), at least {CHURN_GRADE_MIN} of each are needed: with fewer, the grades' "
        "10-point margin is within two standard errors, so the letter would be the luck of a few customers. The "
        "metrics are reported with these counts; more customers or a longer history make them steadier"
    )


def clv_grade_withheld(customers: int, top: int, share: float) -> str | None:
    """Why a lifetime value backtest is not graded (too few customers in the true top share); None when it is."""
    if top >= CLV_GRADE_MIN_TOP:
        return None
    return (
        f"not graded: only {customers:,} customers in the backtest, {top:,} of them in the top {share:.0%}; at "
        f"least {CLV_GRADE_MIN_TOP} in the top share are needed ({int(np.ceil(CLV_GRADE_MIN_TOP / share)):,} "
        "customers): with fewer, the grade's 5-point margin of top-share capture is within two standard errors, so "
        "the letter would be the luck of a few customers. The metrics are reported with these counts"
    )


def top_count(customers: int, share: float) -> int:
    """The customers in the top ``share`` of ``customers`` (as :func:`top_capture` counts them)."""
    return max(int(round(customers * share)), 1) if customers else 0


def reference_churn_grade(model: dict, rule: dict) -> str:
    """The reference product's grade: A when accuracy >= 50% and recall >= the rule's + 10 points, B within 0-10."""
    if model["recall"] is None or rule["recall"] is None:
        return "C"
    # Rounded so that 1.0 - 0.9 counts as the 10 points it is.
    gain = round(model["recall"] - rule["recall"], 6)
    if model["accuracy"] >= 0.5 and gain >= 0.10:
        return "A"
    return "B" if model["accuracy"] >= 0.5 and gain >= 0 else "C"


def error_reduction(model: dict, rule: dict) -> float | None:
    """Share of the best rule's misclassified customers the model no longer gets wrong (net)."""
    if not rule["errors"]:
        return None
    return _r((rule["errors"] - model["errors"]) / rule["errors"])


def lift_grade(reduction: float | None) -> str:
    """A when the model removes >= 20% of the rule's errors, B when it removes some, C otherwise.

    Unlike the reference grade it does not depend on how many customers churn: when 90% churn, the rule catches
    nearly every churner, but its remaining errors can still be halved, and that is what is graded.
    """
    if reduction is None:
        return "C"
    return "A" if reduction >= 0.20 else "B" if reduction > 0 else "C"


def reference_recommendation_grade(model: dict, popular: dict, metric: str) -> str | None:
    """The reference product's grade: A when the model's Success@K (``metric``) is at least 10% (relative) above
    the most-popular baseline's, B when at least equal, C below; None when either has no figure."""
    mine, theirs = model.get(metric), popular.get(metric)
    if mine is None or theirs is None:
        return None
    # Rounded so that 0.55 against 0.5 counts as the 10% it is.
    if round(mine - 1.1 * theirs, 6) >= 0:
        return "A"
    return "B" if mine >= theirs else "C"


#: What :func:`beaten_by_baseline` says the grades compare with, unless told otherwise.
GRADED_AGAINST = "The grades compare the model with the reference rule only"


def beaten_by_baseline(
    model_name: str, model: dict, baselines: dict[str, dict], metric: str, label: str, graded: str = GRADED_AGAINST
) -> dict | None:
    """The baseline that beat the model on the backtest by ``metric`` (higher is better), or None.

    The grades compare the model with the reference product's rule only, so a model can be graded A while another
    baseline ranks customers better; this finding says so where the user reads the report. Returns the baseline's
    name, both figures, the difference and a ``message`` that names them and what they mean.
    """
    mine = model.get(metric)
    scored = {name: b[metric] for name, b in baselines.items() if b.get(metric) is not None}
    if mine is None or not scored:
        return None
    best = max(scored, key=scored.get)
    difference = round(mine - scored[best], 4)
    if difference >= 0:
        return None
    message = (
        f"{model_name}: on the backtest the baseline {best} beat the model: {label} {scored[best]} against the "
        f"model's {mine} ({difference:+.4f}). {graded}; the published scores come from the model (retrained at the "
        f"latest cutoff), which did worse here than {best}: "
        "weigh them accordingly (more history, or other features, may let the model catch up)"
    )
    return {
        "baseline": best,
        "metric": metric,
        "model": mine,
        "baseline_value": scored[best],
        "difference": difference,
        "message": message,
    }


def top_capture(actual: np.ndarray, predicted: np.ndarray, share: float) -> float:
    """Share of the true top ``share`` customers (by actual value) that are in the predicted top ``share``."""
    n = top_count(len(actual), share) or 1
    true_top = np.argsort(-actual, kind="stable")[:n]
    predicted_top = np.argsort(-predicted, kind="stable")[:n]
    return float(len(np.intersect1d(true_top, predicted_top)) / n)


def _gini(actual: np.ndarray, order: np.ndarray) -> float:
    ordered = actual[order]
    cumulative = np.cumsum(ordered) / ordered.sum()
    return float(cumulative.sum() / len(actual) - (len(actual) + 1) / (2 * len(actual)))


def normalized_gini(actual: np.ndarray, predicted: np.ndarray) -> float:
    """Gini of the actual values ordered by prediction, over the Gini of the perfect order (1 = perfect); NaN when
    no order is better than another (nothing spent, or the same by everyone)."""
    actual = np.clip(np.asarray(actual, dtype=np.float64), 0, None)
    # Undefined (NaN, reported as None) when nothing was spent or everyone spent the same: no order beats another,
    # so the perfect order's Gini is 0 (or rounding noise around it).
    if actual.sum() <= 0 or np.ptp(actual) == 0:
        return float("nan")
    perfect = _gini(actual, np.argsort(-actual, kind="stable"))
    if not perfect > 0:
        return float("nan")
    return _gini(actual, np.argsort(-np.asarray(predicted), kind="stable")) / perfect


def decile_mape(actual: np.ndarray, predicted: np.ndarray) -> float:
    """Mean absolute percentage error of the total per predicted-value decile (deciles with no actual value skipped)."""
    errors = []
    for chunk in _deciles(predicted):
        truth = actual[chunk].sum()
        if truth > 0:
            errors.append(abs(predicted[chunk].sum() - truth) / truth)
    return float(np.mean(errors)) if errors else float("nan")


def decile_table(actual: np.ndarray, predicted: np.ndarray) -> list[dict]:
    """Predicted against actual per predicted-value decile (the deciles of :func:`decile_mape`): customers and the
    mean predicted and actual value of each, highest predictions first."""
    actual = np.asarray(actual, dtype=np.float64)
    predicted = np.asarray(predicted, dtype=np.float64)
    return [
        {
            "decile": d,
            "customers": int(len(chunk)),
            "mean_predicted": _r(predicted[chunk].mean()),
            "mean_actual": _r(actual[chunk].mean()),
        }
        for d, chunk in enumerate(_deciles(predicted), start=1)
        if len(chunk)
    ]


def _deciles(predicted: np.ndarray) -> list[np.ndarray]:
    """The positions of each predicted-value decile, highest predictions first (ties in their order)."""
    return np.array_split(np.argsort(-predicted, kind="stable"), 10)


def regression(
    actual: np.ndarray,
    predicted: np.ndarray,
    share: float,
    low: np.ndarray | None = None,
    high: np.ndarray | None = None,
) -> dict:
    """Top-share capture, normalized Gini, Spearman, decile MAPE, total forecast error, RMSE, interval coverage."""
    actual = np.asarray(actual, dtype=np.float64)
    predicted = np.asarray(predicted, dtype=np.float64)
    total = actual.sum()
    out = {
        "top_capture": _r(top_capture(actual, predicted, share)),
        "normalized_gini": _r(normalized_gini(actual, predicted)),
        "spearman": _r(stats.spearmanr(actual, predicted).statistic)
        if np.ptp(predicted) > 0 and np.ptp(actual) > 0
        else None,
        "decile_mape": _r(decile_mape(actual, predicted)),
        "total_forecast_error": _r((predicted.sum() - total) / total) if total else None,
        "rmse": _r(float(np.sqrt(np.mean((predicted - actual) ** 2)))),
    }
    if low is not None and high is not None:
        out["interval_coverage"] = _r(float(((actual >= low) & (actual <= high)).mean()))
    return out


def reference_clv_grade(model: dict, baseline: dict) -> str:
    """A when the model captures >= 5 percentage points (absolute) more of the true top customers, B when more."""
    gain = round(model["top_capture"] - baseline["top_capture"], 6)
    return "A" if gain >= 0.05 else "B" if gain > 0 else "C"


def ranking(recommended: np.ndarray, relevant: sparse.csr_matrix, k: int) -> dict:
    """Success@K, Precision@K and NDCG@K over customers with at least one relevant item.

    Args:
        recommended: customers x k item codes in rank order, -1 where fewer than k were recommended.
        relevant: customers x items, nonzero where the customer bought the item in the held-out period.
        k: the cut-off.
    """
    recommended = np.asarray(recommended)[:, :k]
    relevant = sparse.csr_matrix(relevant)
    n_items = relevant.shape[1]
    coo = relevant.tocoo()
    keys = unique(coo.row.astype(np.int64) * n_items + coo.col)
    rows = np.arange(recommended.shape[0], dtype=np.int64)[:, None]
    hit = isin(rows * n_items + recommended, keys) & (recommended >= 0)
    wanted = np.diff(relevant.indptr)
    evaluated = wanted > 0
    n = int(evaluated.sum())
    if n == 0:
        return {"customers": 0, f"success_at_{k}": None, f"precision_at_{k}": None, f"ndcg_at_{k}": None}
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    ideal = np.cumsum(discounts)[np.minimum(wanted, k) - 1]
    hit, ideal = hit[evaluated], ideal[evaluated]
    return {
        "customers": n,
        f"success_at_{k}": _r(float(hit.any(axis=1).mean())),
        f"precision_at_{k}": _r(float((hit.sum(axis=1) / k).mean())),
        f"ndcg_at_{k}": _r(float(((hit * discounts[: hit.shape[1]]).sum(axis=1) / ideal).mean())),
    }
