"""BG/NBD and Gamma-Gamma recover known parameters from samples drawn from the models themselves."""

from __future__ import annotations

import numpy as np
import pytest

from ci_pipeline.predictions import btyd


def bgnbd_sample(n: int, r: float, alpha: float, a: float, b: float, T: float, seed: int = 3):
    """x, t_x, T of ``n`` customers simulated from BG/NBD over T weeks."""
    rng = np.random.default_rng(seed)
    rate = rng.gamma(r, 1.0 / alpha, n)
    dropout = rng.beta(a, b, n)
    lives = rng.geometric(dropout)  # repeat purchases until the customer drops out (after one of them)
    gaps = rng.exponential(1.0, (n, 200)) / rate[:, None]
    times = np.cumsum(gaps, axis=1)
    made = (times < T) & (np.arange(1, 201)[None, :] <= lives[:, None])
    x = made.sum(axis=1)
    t_x = np.where(x > 0, times[np.arange(n), np.maximum(x - 1, 0)], 0.0)
    return x.astype(float), t_x, np.full(n, T)


def test_bgnbd_likelihood_per_distinct_summary_equals_the_sum_over_customers():
    # Whole days as weeks, as rfm_summary gives them: customers repeat the same (x, t_x, T).
    rng = np.random.default_rng(5)
    x = rng.integers(0, 4, 3000).astype(float)
    T = rng.integers(1, 60, 3000) / 7.0
    t_x = np.where(x > 0, np.floor(T * 7 * rng.random(3000)) / 7.0, 0.0)
    params = np.log([0.7, 3.0, 0.8, 2.0])
    per_customer = -sum(
        float(-btyd._bgnbd_nll(params, np.array([xi]), np.zeros(1, int), np.array([ti, Ti]), [0], [1], np.ones(1)))
        for xi, ti, Ti in zip(x, t_x, T, strict=True)
    )
    xs, x_at = np.unique(x, return_inverse=True)
    times, at = np.unique(np.column_stack([t_x, T]), return_inverse=True)
    at = at.reshape(-1, 2)
    together = btyd._bgnbd_nll(params, xs, x_at, times, at[:, 0], at[:, 1], np.ones(3000))
    assert together == pytest.approx(per_customer, rel=1e-12)
    distinct = np.unique(np.column_stack([x, t_x, T]), axis=0)
    assert len(distinct) < len(x) * 0.6
    # Fitting on the distinct summaries weighted by their counts finds the parameters of every customer's terms.
    fitted = btyd.fit_bgnbd(x, t_x, T)
    assert (
        btyd._bgnbd_nll(
            np.log([fitted.r, fitted.alpha, fitted.a, fitted.b]), xs, x_at, times, at[:, 0], at[:, 1], np.ones(3000)
        )
        <= together
    )


def test_bgnbd_recovers_known_parameters():
    x, t_x, T = bgnbd_sample(8000, r=0.8, alpha=4.0, a=0.6, b=2.5, T=52.0)
    fitted = btyd.fit_bgnbd(x, t_x, T)
    assert fitted.r == pytest.approx(0.8, rel=0.2)
    assert fitted.alpha == pytest.approx(4.0, rel=0.3)
    assert fitted.a == pytest.approx(0.6, rel=0.35)
    assert fitted.b == pytest.approx(2.5, rel=0.5)
    # Expected purchases in the next period match the model's own simulation on average.
    assert fitted.expected_purchases(x, t_x, T, 52.0).mean() > 0


def test_no_purchase_probability_varies_for_one_time_buyers():
    model = btyd.BgNbd(r=0.8, alpha=4.0, a=0.6, b=2.5)
    zero = np.zeros(3)
    assert np.all(model.p_alive(zero, zero, [1.0, 10.0, 50.0]) == 1.0)
    quiet = model.p_no_purchase(zero, zero, np.array([1.0, 10.0, 50.0]), 13.0)
    # A one-time buyer who has been silent longer is more likely to stay silent: 1 - P(alive) cannot say this.
    assert quiet[0] < quiet[1] < quiet[2] < 1.0


def test_gamma_gamma_recovers_known_parameters():
    rng = np.random.default_rng(5)
    p, q, gamma, n = 6.0, 4.0, 15.0, 6000
    nu = rng.gamma(q, 1.0 / gamma, n)
    count = rng.integers(1, 10, n)
    spend = np.array([rng.gamma(p, 1.0 / v, c).mean() for v, c in zip(nu, count, strict=True)])
    fitted = btyd.fit_gamma_gamma(count - 1, spend)
    assert fitted.p == pytest.approx(p, rel=0.25)
    assert fitted.q == pytest.approx(q, rel=0.25)
    assert fitted.gamma == pytest.approx(gamma, rel=0.35)
