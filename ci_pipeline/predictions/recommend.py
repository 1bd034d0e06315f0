"""Product recommendation: K products per customer from item-item co-occurrence blended with their own history.

A product's score for a customer is the sum of two parts, each scaled to at most 1 per customer:
- bought before: how often the customer bought it (repeats allowed only);
- bought together: sum over the customer's products of their cosine co-occurrence with it (each product keeps
  only its ``neighbours`` most similar products, so memory grows with products x neighbours, not products^2).
Customers with too few candidates are filled with the most popular products (reason "popular"). Customers are
processed in chunks so the candidate matrix stays bounded.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import sparse

from ci_pipeline.predictions import metrics
from ci_pipeline.predictions.data import InsufficientData, backtested, latest_cutoff
from ci_pipeline.predictions.settings import PredictionSettings, RecommendationSettings
from ci_pipeline.predictions.stored import StoredModel

MODEL = "ProductRecommendation"
REASONS = np.array(["bought before", "bought together", "popular"], dtype=object)
#: Customers scored at a time (bounds the candidate matrix).
CHUNK = 20_000
#: Products whose co-occurrences are computed at a time.
ITEM_CHUNK = 256
#: Where the report keeps the ``exclude_products`` values that match no product.
UNMATCHED = "exclude_products_unmatched"


@dataclass(frozen=True)
class Recommender:
    """Products, their neighbours and popularity, learned from the look-back window."""

    products: pd.Index
    #: products x products, the top neighbours of each product (cosine of co-purchase).
    similar: sparse.csr_matrix
    #: Buyers per product.
    popularity: np.ndarray
    #: Products that may be recommended.
    allowed: np.ndarray


@dataclass(frozen=True)
class RecommendationResult:
    """What :func:`run_recommendation` returns."""

    #: One row per customer and rank: CustomerId, Rank, Product, Score, Reason.
    recommendations: pd.DataFrame
    report: dict
    stored: StoredModel


def interactions(lines: pd.DataFrame, customers: pd.Index, products: pd.Index, start, end) -> sparse.csr_matrix:
    """customers x products purchase counts of lines in (start, end] (start None: every line up to end), net of
    returns.

    A count is the customer's purchase lines of the product; it is 0 when the lines' net quantity (returns
    negative, ``Quantity``; one per line without that column) is not positive: a product bought and sent back
    was not bought, so it is neither "bought before" nor a co-purchase, nor a held-out purchase.
    """
    window = lines[(lines["Time"] <= end) if start is None else (lines["Time"] > start) & (lines["Time"] <= end)]
    rows = customers.get_indexer(window["CustomerId"])
    cols = products.get_indexer(window["Product"])
    keep = (rows >= 0) & (cols >= 0)
    rows, cols = rows[keep], cols[keep]
    quantity = window["Quantity"].to_numpy(dtype=np.float64)[keep] if "Quantity" in window else np.ones(len(rows))
    shape = (len(customers), len(products))
    # Duplicate (row, column) entries are summed when the matrix is built.
    bought = sparse.csr_matrix(((quantity > 0).astype(np.float64), (rows, cols)), shape=shape)
    net = sparse.csr_matrix((quantity, (rows, cols)), shape=shape)
    counts = bought.multiply(net > 0).tocsr()
    counts.eliminate_zeros()
    return counts


def fit(history: sparse.csr_matrix, products: pd.Index, settings: RecommendationSettings) -> Recommender:
    """Item-item cosine neighbours and popularity from a customers x products count matrix."""
    bought = (history > 0).astype(np.float64).tocsc()
    buyers = np.asarray(bought.sum(axis=0)).ravel()
    norm = np.sqrt(np.maximum(buyers, 1.0))
    n = len(products)
    keep_n = min(settings.neighbours, max(n - 1, 1))
    rows, cols, vals = [], [], []
    bought_t = bought.T.tocsr()
    for first in range(0, n, ITEM_CHUNK):
        chunk = np.arange(first, min(first + ITEM_CHUNK, n))
        co = (bought_t[chunk] @ bought).toarray()
        co[np.arange(len(chunk)), chunk] = 0.0
        co /= norm[chunk, None] * norm[None, :]
        r, c = _neighbours(co, keep_n)
        rows.append(chunk[r])
        cols.append(c)
        vals.append(co[r, c])
    if vals:
        similar = sparse.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(n, n))
    else:
        similar = sparse.csr_matrix((n, n))
    allowed = ~products.isin(settings.exclude_products)
    return Recommender(products=products, similar=similar, popularity=buyers, allowed=np.asarray(allowed))


def _neighbours(co: np.ndarray, keep_n: int) -> tuple[np.ndarray, np.ndarray]:
    """(row, column) of each row's ``keep_n`` largest positive values, the lower column first among equal values.

    Which of several equal values ``np.argpartition`` keeps depends on the CPU (numpy sorts with other SIMD code
    where AVX-512 is present), so the ties are settled here: every value above the row's ``keep_n``-th largest, then
    as many of those equal to it as fit, from the left.
    """
    if co.shape[1] <= 1 or keep_n < 1:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    kth = -np.partition(-co, keep_n - 1, axis=1)[:, keep_n - 1 : keep_n]
    above = co > kth
    tied = co == kth
    room = keep_n - above.sum(axis=1, keepdims=True)
    keep = (above | (tied & (np.cumsum(tied, axis=1) <= room))) & (co > 0)
    return np.nonzero(keep)


def _row_max_scale(matrix: sparse.csr_matrix) -> sparse.csr_matrix:
    if matrix.shape[1] == 0:
        return matrix
    matrix = matrix.tocsr()
    # Each row's largest stored value, 0 for an empty row: the values are counts and co-occurrence weights (>= 0),
    # so that is the row's maximum; taken without sorting the columns of each row, which ``max`` would do first.
    counts = np.diff(matrix.indptr)
    peak = np.zeros(matrix.shape[0])
    peak[counts > 0] = np.maximum.reduceat(matrix.data, matrix.indptr[:-1][counts > 0]) if matrix.nnz else 0.0
    return sparse.diags(np.where(peak > 0, 1.0 / np.where(peak > 0, peak, 1.0), 0.0)) @ matrix


def _top_k(scores: sparse.csr_matrix, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per row the k best (column, score), the lower column first among equal scores; -1 / 0 where the row has
    fewer candidates.

    Only the candidates at or above their row's k-th best score are sorted. That score is found by taking each
    row's maximum k times, a pass over the candidates each: cheaper than sorting them all (scores are >= 0).
    """
    # The order of the columns within a row does not matter: the candidates are ordered by (row, -score, column).
    scores = scores.tocsr()
    n = scores.shape[0]
    counts = np.diff(scores.indptr)
    owner = np.repeat(np.arange(n), counts)
    left = scores.data.copy()
    filled, starts = counts > 0, scores.indptr[:-1][counts > 0]
    floor = np.full(n, -np.inf)
    seen = np.zeros(n, dtype=np.int64)
    for _ in range(k if len(left) else 0):
        peak = np.full(n, -np.inf)
        peak[filled] = np.maximum.reduceat(left, starts)
        at_peak = (left == peak[owner]) & (left > -np.inf)
        seen += np.bincount(owner[at_peak], minlength=n)
        reached = (seen >= k) & (floor == -np.inf)
        floor[reached] = peak[reached]
        left[at_peak] = -np.inf
    keep = scores.data >= floor[owner]
    row, col, val = owner[keep], scores.indices[keep], scores.data[keep]
    order = np.lexsort((col, -val, row))
    row, col, val = row[order], col[order], val[order]
    starts = np.searchsorted(row, np.arange(scores.shape[0]))
    rank = np.arange(len(row)) - starts[row]
    keep = rank < k
    items = np.full((scores.shape[0], k), -1, dtype=np.int64)
    values = np.zeros((scores.shape[0], k))
    items[row[keep], rank[keep]] = col[keep]
    values[row[keep], rank[keep]] = val[keep]
    return items, values


def recommend(
    model: Recommender,
    history: sparse.csr_matrix,
    k: int,
    repeats: bool,
    own_weight: float = 1.0,
    together: float = 1.0,
    owned: sparse.csr_matrix | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(items, scores, reason codes) per customer, customers x k; -1 where nothing could be recommended.

    Args:
        model: the fitted recommender.
        history: customers x products counts the recommendations are based on.
        k: products per customer.
        repeats: whether bought products may be recommended.
        own_weight, together: weights of the "bought before" and "bought together" parts (0 switches one off;
            the baselines use them).
        owned: customers x products, what each customer ever bought (:func:`ever_bought`): without repeats none of
            it is recommended, also what was bought before the look-back window ``history`` covers; None: the
            products of ``history``.
    """
    n_items = len(model.products)
    pop_order = np.argsort(-model.popularity, kind="stable")
    pop_order = pop_order[model.allowed[pop_order]]
    blocked = sparse.diags((~model.allowed).astype(np.float64))
    items_out, scores_out, reasons_out = [], [], []
    for first in range(0, history.shape[0], CHUNK):
        counts = history[first : first + CHUNK].tocsr()
        bought = (counts > 0).astype(np.float64)
        had = bought if owned is None else (owned[first : first + CHUNK] > 0).astype(np.float64)
        own = _row_max_scale(counts) * own_weight if repeats else sparse.csr_matrix(counts.shape)
        weights = bought.copy()
        weights.data = np.log1p(counts.data)
        cf = _row_max_scale(weights @ model.similar) * together
        if not repeats:
            cf = cf - cf.multiply(had)
        total = (own + cf).tocsr()
        total = (total - total @ blocked).tocsr()
        total.eliminate_zeros()
        items, values = _top_k(total, k)
        at = (np.repeat(np.arange(len(items)), k), np.maximum(items, 0).ravel())
        own_part = np.asarray(own.tocsr()[at]).reshape(items.shape) if repeats else np.zeros(items.shape)
        reason = np.where(items < 0, 2, np.where(own_part >= values / 2, 0, 1))
        items, values, reason = _fill_popular(items, values, reason, pop_order, had, repeats, n_items, k)
        items_out.append(items)
        scores_out.append(values)
        reasons_out.append(reason)
    if not items_out:
        empty = np.zeros((0, k))
        return empty.astype(np.int64), empty, empty.astype(np.int64)
    return np.vstack(items_out), np.vstack(scores_out), np.vstack(reasons_out)


def _fill_popular(items, values, reason, pop_order, bought, repeats, n_items, k):
    """Fill empty slots with the most popular products not already recommended (nor bought, without repeats).

    Only the customers with an empty slot are looked at; what each of them cannot get is marked in a customers x
    pool table (the pool: the most popular products, enough for anyone).
    """
    need = np.flatnonzero((items < 0).any(axis=1))
    if not len(need):
        return items, values, reason
    pool = pop_order[: k + 2 * k + int(bought.getnnz(axis=1).max(initial=0))]
    place = np.full(n_items, -1, dtype=np.int64)
    place[pool] = np.arange(len(pool))
    chosen = items[need]
    blocked = np.zeros((len(need), len(pool)), dtype=bool)
    r, c = np.nonzero(chosen >= 0)
    owners, at = r, place[chosen[r, c]]
    if not repeats:
        coo = bought[need].tocoo()
        owners, at = np.concatenate([owners, coo.row]), np.concatenate([at, place[coo.col]])
    blocked[owners[at >= 0], at[at >= 0]] = True
    free = ~blocked
    slot = np.cumsum(free, axis=1) - 1
    have = (chosen >= 0).sum(axis=1)
    r, c = np.nonzero(free & (slot < (k - have)[:, None]))
    rows, target = need[r], have[r] + slot[r, c]
    items[rows, target] = pool[c]
    values[rows, target] = 0.0
    reason[rows, target] = 2
    return items, values, reason


def evaluate(lines: pd.DataFrame, customers: pd.Index, cutoff, end, settings: RecommendationSettings) -> dict:
    """Success@K, Precision@K, NDCG@K of the model and both baselines on purchases in (cutoff, end].

    Measured twice: with repeats (every product bought in the held-out period counts) and for new items only
    (products the customer had not bought before; bought products are then never recommended).
    """
    start = cutoff - pd.Timedelta(days=settings.lookback_days)
    products = _products(lines, start, cutoff)
    if len(products) == 0:
        return {"not_evaluated": f"no product was bought in the {settings.lookback_days} days before {cutoff.date()}"}
    history = interactions(lines, customers, products, start, cutoff)
    future = interactions(lines, customers, products, cutoff, end)
    model = fit(history, products, settings)
    k = settings.k
    owned = ever_bought(lines, customers, products, cutoff)
    bought = owned > 0
    new = (future > 0).astype(np.int8) - (future > 0).multiply(bought).astype(np.int8)
    new.eliminate_zeros()
    out = {"held_out_from": cutoff.isoformat(), "held_out_until": end.isoformat(), "products": len(products)}
    for mode, repeats, relevant in (("with_repeats", True, future > 0), ("new_items_only", False, new)):
        ranked = {
            "model": recommend(model, history, k, repeats, owned=owned)[0],
            "most_popular": recommend(model, history, k, repeats, own_weight=0.0, together=0.0, owned=owned)[0],
        }
        if repeats:
            ranked["own_most_bought"] = recommend(model, history, k, True, together=0.0)[0]
        out[mode] = {name: metrics.ranking(r, relevant, k) for name, r in ranked.items()}
        best = max(v[f"success_at_{k}"] or 0 for name, v in out[mode].items() if name != "model")
        out[mode]["success_over_best_baseline"] = round((out[mode]["model"][f"success_at_{k}"] or 0) - best, 4)
    return out


def ever_bought(lines: pd.DataFrame, customers: pd.Index, products: pd.Index, end) -> sparse.csr_matrix:
    """customers x products, > 0 where the customer bought the product up to ``end`` (all their history, net of
    returns): what ``repeats: false`` never recommends."""
    return interactions(lines, customers, products, None, end)


def unmatched_exclusions(excluded: list[str], products: pd.Series, where: str) -> dict | None:
    """The ``exclude_products`` values that match no product of ``products`` (the product field's values, named by
    ``where``), with a message naming them, near misses and example products; None when every value matches.

    A value that matches nothing excludes nothing, so the product it was meant to hold back is recommended as
    before: typically an id listed while the product field holds names, or another spelling.
    """
    if not excluded:
        return None
    counts = products.dropna().astype("string").value_counts()
    known = set(counts.index)
    missing = [value for value in dict.fromkeys(excluded) if value not in known]
    if not missing:
        return None
    names = sorted(known)
    folded = {name.strip().casefold(): name for name in names}
    hints = []
    for value in missing[:20]:
        close = folded.get(value.strip().casefold()) or next(
            iter(difflib.get_close_matches(value, names, n=1, cutoff=0.8)), None
        )
        if close is not None:
            hints.append(f"{value!r} -> {close!r}")
    examples = ", ".join(repr(name) for name in counts.index[:5])
    listed = ", ".join(repr(value) for value in missing[:20]) + (
        f" and {len(missing) - 20} more" if len(missing) > 20 else ""
    )
    verb, effect = ("matches", "it excludes") if len(missing) == 1 else ("match", "they exclude")
    message = (
        f"predictions.recommendation.exclude_products: {listed} {verb} no product of {where}, so {effect} "
        f"nothing; its {len(names):,} products are, for example, {examples or 'none'}"
        + (f"; did you mean {', '.join(hints)}?" if hints else "")
        + ". List the values the field holds, or point predictions.purchases.product at the field that holds the "
        "values listed"
    )
    return {"values": missing, "message": message}


def verdicts(report: dict, settings: RecommendationSettings) -> dict:
    """The grade and the baseline that beat the model (if one did) on the backtest of what is published: with
    repeats, or new items only when ``repeats`` is off (nothing when the backtest did not run)."""
    mode = "with_repeats" if settings.repeats else "new_items_only"
    if mode not in report:
        return {}
    group, metric = report[mode], f"success_at_{settings.k}"
    out = {
        "graded_on": mode,
        "reference_grade": metrics.reference_recommendation_grade(group["model"], group["most_popular"], metric),
    }
    baselines = {name: group[name] for name in ("most_popular", "own_most_bought") if name in group}
    graded = "The grade compares the model with the most popular products only"
    beaten = metrics.beaten_by_baseline(
        MODEL, group["model"], baselines, metric, f"Success@{settings.k} ({mode})", graded
    )
    if beaten is not None:
        out["beaten_by_baseline"] = beaten
    return out


def _products(lines: pd.DataFrame, start, end) -> pd.Index:
    """The products bought (not only returned) in (start, end]."""
    window = lines[(lines["Time"] > start) & (lines["Time"] <= end)]
    if "Quantity" in window:
        window = window[window["Quantity"] > 0]
    return pd.Index(np.sort(window["Product"].dropna().unique().astype(object)), dtype="string", name="Product")


def product_field(settings: PredictionSettings) -> str:
    """The product field and its activity, as messages name them."""
    source = settings.purchases
    return f"field '{source.product}' of activity '{source.product_activity}'"


def run_recommendation(
    lines: pd.DataFrame, customers: pd.Series, latest, settings: PredictionSettings
) -> RecommendationResult:
    """Evaluate on the last ``holdout_days``, then recommend K products to every customer at the latest cutoff.

    Args:
        lines: the product lines frame (``data.lines_from_facts``).
        customers: every CustomerId; customers without history get the popular products.
        latest: the cutoff: the run time, or None for the last purchase.
        settings: the prediction settings.

    Raises:
        InsufficientData: fewer buyers than the minimum, or no purchase in the look-back window.
    """
    rs = settings.recommendation
    latest = latest_cutoff(latest, lines, MODEL)
    index = pd.Index(np.sort(pd.Series(customers, dtype="string").dropna().unique().astype(object)), dtype="string")
    start = latest - pd.Timedelta(days=rs.lookback_days)
    buyers = lines.loc[(lines["Time"] > start) & (lines["Time"] <= latest), "CustomerId"].nunique()
    if buyers < settings.minimums.recommendation_customers:
        raise InsufficientData(
            f"{MODEL}: {buyers} customers bought a product in the {rs.lookback_days} days before {latest.date()}, "
            f"at least {settings.minimums.recommendation_customers} are needed "
            "(a longer predictions.recommendation.lookback_days or lower predictions.minimums)"
        )
    report = {"prediction": MODEL, "k": rs.k, "repeats": rs.repeats}
    unmatched = unmatched_exclusions(rs.exclude_products, lines["Product"], product_field(settings))
    if unmatched:
        report[UNMATCHED] = unmatched
    report.update(backtested(MODEL, evaluate, lines, index, latest - pd.Timedelta(days=rs.holdout_days), latest, rs))
    report.update(verdicts(report, rs))
    products = _products(lines, start, latest)
    history = interactions(lines, index, products, start, latest)
    model = fit(history, products, rs)
    owned = None if rs.repeats else ever_bought(lines, index, products, latest)
    items, scores, reasons = recommend(model, history, rs.k, rs.repeats, owned=owned)
    rank = np.tile(np.arange(1, rs.k + 1), len(index))
    flat = items.ravel()
    keep = flat >= 0
    recommendations = pd.DataFrame(
        {
            "CustomerId": pd.array(np.repeat(index.to_numpy(), rs.k)[keep], dtype="string"),
            "Rank": rank[keep],
            "Product": pd.array(products.to_numpy()[flat[keep]], dtype="string"),
            "Score": np.round(scores.ravel()[keep], 4),
            "Reason": pd.array(REASONS[reasons.ravel()[keep]], dtype="string"),
        }
    )
    stored = StoredModel(
        model=MODEL,
        fitted=model,
        features=list(products),
        metrics=report,
        data_window={"from": start.isoformat(), "trained_at_cutoff": latest.isoformat()},
    )
    return RecommendationResult(recommendations=recommendations, report=report, stored=stored)
