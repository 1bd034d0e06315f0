"""BG/NBD (Fader, Hardie & Lee 2005) and Gamma-Gamma (Fader, Hardie & Lee 2005b), fitted with scipy.

These are the classic buy-till-you-die baselines. Time is in weeks; a customer is summarised by ``x`` (repeat
purchase days), ``t_x`` (weeks from first to last purchase) and ``T`` (weeks from first purchase to the cutoff).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import optimize, special

from ci_pipeline.predictions.features import Encoded, encoded, per_customer

WEEK = 7.0


def rfm_summary(purchases: pd.DataFrame | Encoded, customers: pd.Index, cutoff: pd.Timestamp) -> pd.DataFrame:
    """x, t_x, T (weeks) and the mean positive purchase value per customer, from purchases at or before the cutoff.

    Purchases on the same day count once (the BTYD convention); returns (negative amounts) are not purchases;
    customers without a purchase get x = t_x = T = 0.
    """
    p = encoded(purchases)
    past = p.at(cutoff) & p.bought()
    frame = pd.DataFrame({"code": p.code[past], "day": np.floor(p.t[past]), "amount": p.amount[past]})
    per_day = frame.groupby(["code", "day"], sort=False)["amount"].sum().reset_index()
    g = per_day.groupby("code", sort=False)
    now = np.floor(cutoff.value / 86_400e9) + 1
    first, last = g["day"].min(), g["day"].max()
    spend = per_day[per_day["amount"] > 0].groupby("code", sort=False)["amount"].mean()
    codes = p.positions(customers)
    out = per_customer(
        pd.DataFrame({"x": (g.size() - 1).astype(np.float64), "t_x": (last - first) / WEEK, "T": (now - first) / WEEK}),
        codes,
        customers,
    )
    out["monetary"] = per_customer(spend, codes, customers)
    out["purchased"] = out["x"].notna()
    return out.fillna({"x": 0.0, "t_x": 0.0, "T": 0.0})


@dataclass(frozen=True)
class BgNbd:
    """Fitted BG/NBD parameters."""

    r: float
    alpha: float
    a: float
    b: float

    def p_alive(self, x, t_x, T) -> np.ndarray:
        """Probability the customer is still active at T (1 for customers with no repeat purchase)."""
        x, t_x, T = (np.asarray(v, dtype=np.float64) for v in (x, t_x, T))
        ratio = np.exp((self.r + x) * (np.log(self.alpha + T) - np.log(self.alpha + t_x)))
        odds = np.where(x > 0, self.a / (self.b + np.maximum(x, 1) - 1) * ratio, 0.0)
        return 1.0 / (1.0 + odds)

    def p_no_purchase(self, x, t_x, T, t) -> np.ndarray:
        """Probability of no purchase in the next ``t`` weeks.

        A dead customer never buys; an active one has rate lambda ~ Gamma(r + x, alpha + T) given the history, and
        BG/NBD customers drop out only right after a purchase, so no purchase in the window needs no dropout. This
        is what makes the score vary for one-time buyers, whose P(alive) is always 1.
        """
        x, T = np.asarray(x, dtype=np.float64), np.asarray(T, dtype=np.float64)
        alive = self.p_alive(x, t_x, T)
        quiet = np.exp((self.r + x) * (np.log(self.alpha + T) - np.log(self.alpha + T + t)))
        return (1.0 - alive) + alive * quiet

    def expected_purchases(self, x, t_x, T, t) -> np.ndarray:
        """Expected purchases in the next ``t`` weeks (equation 10 of the BG/NBD paper)."""
        x, t_x, T = (np.asarray(v, dtype=np.float64) for v in (x, t_x, T))
        r, alpha, a, b = self.r, self.alpha, self.a, self.b
        z = t / (alpha + T + t)
        hyp = special.hyp2f1(r + x, b + x, a + b + x - 1, z)
        head = (a + b + x - 1) / (a - 1)
        part = 1.0 - np.exp((r + x) * (np.log(alpha + T) - np.log(alpha + T + t))) * hyp
        ratio = np.exp((r + x) * (np.log(alpha + T) - np.log(alpha + t_x)))
        odds = np.where(x > 0, a / (b + np.maximum(x, 1) - 1) * ratio, 0.0)
        value = head * part / (1.0 + odds)
        return np.nan_to_num(np.clip(value, 0.0, None), nan=0.0, posinf=0.0)


def _bgnbd_nll(log_params, xs, x_at, times, tx_at, T_at, weight):
    """Minus the log-likelihood; each term needs x, t_x, T (``xs[x_at]``, ``times[tx_at]``, ``times[T_at]``)."""
    r, alpha, a, b = np.exp(log_params)
    # The gamma functions of x and the logarithms of the times are taken once per distinct value.
    a1 = special.gammaln(r + xs) - special.gammaln(r) + r * np.log(alpha)
    a2 = special.gammaln(a + b) + special.gammaln(b + xs) - special.gammaln(b) - special.gammaln(a + b + xs)
    log_times = np.log(alpha + times)
    rx = (r + xs)[x_at]
    a3 = -rx * log_times[T_at]
    repeat = np.where(xs > 0, np.log(a) - np.log(b + np.maximum(xs, 1) - 1), -np.inf)
    a4 = np.where(xs[x_at] > 0, repeat[x_at] - rx * log_times[tx_at], -np.inf)
    return -np.dot(weight, (a1 + a2)[x_at] + np.logaddexp(a3, a4))


def fit_bgnbd(x, t_x, T) -> BgNbd:
    """Maximum-likelihood BG/NBD parameters (deterministic: fixed start, L-BFGS-B on log parameters).

    The likelihood has one term per distinct (x, t_x, T), weighted by how many customers share it (time is counted
    in whole days, so, for example, one-time buyers who first bought on the same day share one), and its gamma
    functions and logarithms are taken per distinct x and time.
    """
    x, t_x, T = (np.asarray(v, dtype=np.float64) for v in (x, t_x, T))
    keep = T > 0
    x, t_x, T = x[keep], t_x[keep], T[keep]
    distinct, weight = np.unique(np.column_stack([x, t_x, T]), axis=0, return_counts=True)
    xs, x_at = np.unique(distinct[:, 0], return_inverse=True)
    times, time_at = np.unique(distinct[:, 1:], return_inverse=True)
    time_at = time_at.reshape(-1, 2)
    result = optimize.minimize(
        _bgnbd_nll,
        np.log([1.0, max(float(np.mean(T)), 1.0), 1.0, 1.0]),
        args=(xs, x_at, times, time_at[:, 0], time_at[:, 1], weight.astype(np.float64)),
        method="L-BFGS-B",
        bounds=[(-10, 10)] * 4,
    )
    r, alpha, a, b = np.exp(result.x)
    return BgNbd(float(r), float(alpha), float(a), float(b))


@dataclass(frozen=True)
class GammaGamma:
    """Fitted Gamma-Gamma spend parameters."""

    p: float
    q: float
    gamma: float

    def expected_spend(self, x, monetary) -> np.ndarray:
        """Expected purchase value given ``x`` earlier purchase days of mean ``monetary`` (else the population mean)."""
        x = np.asarray(x, dtype=np.float64) + 1.0
        m = np.nan_to_num(np.asarray(monetary, dtype=np.float64), nan=0.0)
        population = self.p * self.gamma / (self.q - 1) if self.q > 1 else float("nan")
        known = m > 0
        value = (self.p * (self.gamma + x * m)) / (self.p * x + self.q - 1)
        return np.where(known, value, population)


def _gg_nll(log_params, x, m):
    p, q, g = np.exp(log_params)
    ll = (
        special.gammaln(p * x + q)
        - special.gammaln(p * x)
        - special.gammaln(q)
        + q * np.log(g)
        + (p * x - 1) * np.log(m)
        + p * x * np.log(x)
        - (p * x + q) * np.log(g + m * x)
    )
    return -np.sum(ll)


def fit_gamma_gamma(x, monetary) -> GammaGamma:
    """Maximum-likelihood Gamma-Gamma parameters on customers with a positive mean purchase value.

    ``x`` counts purchase days before the one being valued (so ``x + 1`` purchases make up ``monetary``).
    """
    n = np.asarray(x, dtype=np.float64) + 1.0
    m = np.asarray(monetary, dtype=np.float64)
    keep = np.isfinite(m) & (m > 0)
    n, m = n[keep], m[keep]
    result = optimize.minimize(
        _gg_nll,
        np.log([1.0, 2.0, max(float(np.mean(m)), 1.0)]),
        args=(n, m),
        method="L-BFGS-B",
        bounds=[(-10, 10), (-10, 10), (-10, 20)],
    )
    p, q, g = np.exp(result.x)
    return GammaGamma(float(p), float(q), float(g))
