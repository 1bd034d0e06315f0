"""How web-shop customers buy, browse and return over time: the purchase signal of the sample.

A buy-till-you-die process (Poisson purchases at a fixed rate until a memoryless drop-out) is exactly what BG/NBD
assumes, so a model evaluated on it can only tie BG/NBD. Real purchase data differs from it in ways that are well
documented, and this module draws each of them, independently of any model:

- **Heterogeneous rates.** Each person has their own order rate (segment x lognormal, in the people frame);
  purchase frequencies in retail panels are close to gamma/lognormal across customers.
- **One-time buyers.** In retail and e-commerce transaction logs (CDNOW, UCI Online Retail, most web shops) about
  half to two thirds of buyers never come back after the first order. Every account places its first order at or
  soon after sign-up; whether it ever orders again is drawn per segment (:data:`REPEAT_P`), so about half of the
  buyers stay one-time buyers, more once recent sign-ups are counted. Some accounts never order at all
  (:data:`BUYER_SHARE`): a registered account without a purchase is common in every shop.
- **Seasonality.** A yearly holiday peak (November and December sell clearly more, :data:`MONTH_WEIGHTS`) and a
  weekly pattern (online orders peak early in the week and dip on Friday and Saturday, :data:`WEEKDAY_WEIGHTS`).
- **Customers lapse.** Shops lose a large part of their repeat customers every year to competitors and changed
  needs (yearly attrition of 20-30% is typical in retail; higher online). Besides the people who leave for good
  (the people frame's churn), each repeat buyer stops buying at the shop after an exponential time with a yearly
  hazard of :data:`LAPSE_RATE`; the person still exists elsewhere (loyalty, support).
- **Engagement decays before people leave.** A customer who stops buying rarely does so from one day to the next:
  gaps between orders lengthen, baskets shrink and web visits thin out over months before the last order
  (the "fading" customer of churn studies). For people who leave or lapse, purchase and browsing intensity falls from
  full to :data:`FADE_FLOOR` over a decline of a few months (drawn per person around :data:`FADE_DAYS`). Support
  tickets before churn are in the support table (see ``tables.support_tickets``).
- **Rates drift.** Needs change with life events, so a customer's rate is not constant: each repeat buyer's rate
  drifts exponentially over the years (:data:`DRIFT_SD` per year, bounded), up for some, down for others.
- **Spend per order varies with tenure.** Customers widen what they trust a shop for: baskets grow modestly with
  tenure (:data:`BASKET_GROWTH` per year, for the first four years) and shrink while a customer fades out.
- **Returns.** A few percent of order lines come back (:data:`RETURN_P`; unhappy customers, who leave more often,
  return more), as their own order a few days to four weeks after the purchase with the same products and a
  negative amount (``is_return`` true), the way shop systems book a refund.

Everything here draws from its own random stream (see ``dataset.generate``), so the people and the customer
records are the same for a seed whatever this module does.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

#: Relative order volume per calendar month (peak in the holiday season), as a keep probability.
MONTH_WEIGHTS = np.array([0.8, 0.75, 0.85, 0.85, 0.9, 0.9, 0.85, 0.9, 0.85, 0.9, 1.1, 1.4]) / 1.4
#: Relative order volume per weekday, Monday first (online orders dip at the end of the week).
WEEKDAY_WEIGHTS = np.array([1.0, 0.97, 0.95, 0.92, 0.85, 0.8, 0.95])
#: Share of web-shop accounts that ever place an order.
BUYER_SHARE = 0.85
#: Chance that a buyer orders again after the first order, per segment (champion, loyal, regular, occasional,
#: bargain hunter).
REPEAT_P = np.array([0.92, 0.8, 0.5, 0.25, 0.4])
#: Yearly hazard of a repeat buyer lapsing (no more orders or visits at the shop).
LAPSE_RATE = 0.25
#: Typical length in days of the decline before a leaving customer's last activity, and the intensity it ends at.
FADE_DAYS = 150.0
FADE_FLOOR = 0.1
#: Standard deviation of the yearly log-drift of a repeat buyer's rate, and the bounds of the drift multiplier.
DRIFT_SD = 0.3
DRIFT_BOUNDS = (0.25, 2.5)
#: Extra expected lines per order per year of tenure (first four years), and the basket left at the end of a fade.
BASKET_GROWTH = 0.1
FADE_BASKET = 0.6
#: Chance that an order line is returned: customers who stay, customers who leave.
RETURN_P = (0.03, 0.07)
#: Days from a purchase to its return.
RETURN_LAG = (3, 29)


@dataclass(frozen=True)
class Accounts:
    """Per web-shop account: when it buys first, whether it comes back and how its engagement moves over time."""

    start: np.ndarray
    until: np.ndarray
    leaves: np.ndarray
    buys: np.ndarray
    repeats: np.ndarray
    fade_days: np.ndarray
    drift: np.ndarray

    def engagement(self, account: np.ndarray, day: np.ndarray) -> np.ndarray:
        """Relative intensity (0..1] of a leaving account's activity on ``day``: full until its fade begins."""
        left = (self.until[account] - day) / self.fade_days[account]
        fading = FADE_FLOOR + (1.0 - FADE_FLOOR) * np.clip(left, 0.0, 1.0)
        return np.where(self.leaves[account], fading, 1.0)

    def drift_factor(self, account: np.ndarray, day: np.ndarray) -> np.ndarray:
        """The account's rate multiplier on ``day`` (1 at its first order)."""
        years = (day - self.start[account]) / 365.25
        return np.clip(np.exp(self.drift[account] * years), *DRIFT_BOUNDS)


def draw_accounts(people: pd.DataFrame, signup: np.ndarray, rng: np.random.Generator, end_day: int) -> Accounts:
    """Draw each account's behaviour. ``people`` holds one row per account (the account's person)."""
    n = len(people)
    active_until = people["active_until"].to_numpy()
    lag = np.minimum(rng.geometric(0.6, n) - 1, 30)
    start = np.minimum(signup + lag, active_until)
    segment = people["segment"].to_numpy()
    buys = (rng.random(n) < BUYER_SHARE) & (signup <= active_until)
    repeats = rng.random(n) < REPEAT_P[segment]
    fade_days = np.clip(rng.lognormal(np.log(FADE_DAYS), 0.4, n), 45.0, 400.0)
    drift = rng.normal(0.0, DRIFT_SD, n)
    lapse = start + (rng.exponential(365.25 / LAPSE_RATE, n)).astype(np.int64)
    until = np.where(buys & repeats, np.minimum(active_until, lapse), active_until)
    return Accounts(
        start=start,
        until=until,
        leaves=(people["churned"].to_numpy() | (until < active_until)) & (until < end_day),
        buys=buys,
        repeats=repeats,
        fade_days=fade_days,
        drift=drift,
    )


def _days_between(start: np.ndarray, end: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    span = np.maximum(end - start, 0) + 1
    return start + (rng.random(len(start)) * span).astype(np.int64)


def _season(day: np.ndarray) -> np.ndarray:
    month = day.astype("datetime64[D]").astype("datetime64[M]").astype(np.int64) % 12
    # 1970-01-01 was a Thursday: (day + 3) % 7 is 0 on Mondays.
    return MONTH_WEIGHTS[month] * WEEKDAY_WEIGHTS[(day + 3) % 7]


def purchase_days(accounts: Accounts, rate: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(account, day) of every order: a first order per buyer, then repeat orders of the repeat buyers.

    Repeat orders are a Poisson process at ``rate`` per year, thinned by season, drift and fade: candidates are
    drawn at the highest rate the account can reach and each is kept with its own intensity over that bound.
    """
    first = np.flatnonzero(accounts.buys)
    mean_season = MONTH_WEIGHTS.mean() * WEEKDAY_WEIGHTS.mean()
    years = np.maximum(accounts.until - accounts.start, 0) / 365.25
    bound = np.clip(np.exp(np.maximum(accounts.drift, 0.0) * years), 1.0, DRIFT_BOUNDS[1])
    lam = np.where(accounts.buys & accounts.repeats, rate * years * bound / mean_season, 0.0)
    account = np.repeat(np.arange(len(rate)), rng.poisson(lam))
    day = _days_between(accounts.start[account] + 1, accounts.until[account], rng)
    keep = _season(day) * accounts.drift_factor(account, day) / bound[account] * accounts.engagement(account, day)
    kept = (rng.random(len(day)) < keep) & (day <= accounts.until[account])
    return np.concatenate([first, account[kept]]), np.concatenate([accounts.start[first], day[kept]])


def lines_per_order(accounts: Accounts, account: np.ndarray, day: np.ndarray, base: np.ndarray, rng) -> np.ndarray:
    """Lines per order: 1 + Poisson(base), growing with tenure and shrinking while the customer fades out."""
    tenure = np.clip((day - accounts.start[account]) / 365.25, 0.0, 4.0)
    fade = FADE_BASKET + (1 - FADE_BASKET) * (accounts.engagement(account, day) - FADE_FLOOR) / (1 - FADE_FLOOR)
    return 1 + rng.poisson(base * (1 + BASKET_GROWTH * tenure) * fade)


def returns(line_leaves: np.ndarray, n_orders: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(True for each returned line, days from each order to its return), given whether each line's buyer leaves.

    The returned lines of one order come back together, as one return order.
    """
    returned = rng.random(len(line_leaves)) < np.where(line_leaves, RETURN_P[1], RETURN_P[0])
    return returned, rng.integers(RETURN_LAG[0], RETURN_LAG[1] + 1, n_orders)


def browsing_days(
    accounts: Accounts,
    order_account: np.ndarray,
    order_day: np.ndarray,
    signup: np.ndarray,
    rng: np.random.Generator,
    volume: float,
) -> tuple[np.ndarray, np.ndarray]:
    """(account, day) of web sessions: visits in the days before each order, and background browsing.

    Background browsing is 1.2 visits a year from sign-up until the person leaves, thinned by the same fade as
    purchases, so visits thin out before a customer stops buying. One-time buyers and accounts that never buy
    browse at a third of that rate: they are not engaged.
    """
    before = rng.poisson(0.9 * volume, len(order_account))
    led_account = np.repeat(order_account, before)
    led_day = np.maximum(np.repeat(order_day, before) - rng.integers(0, 4, len(led_account)), signup[led_account])
    years = np.maximum(accounts.until - signup, 0) / 365.25
    engaged = np.where(accounts.buys & accounts.repeats, 1.0, 1 / 3)
    account = np.repeat(np.arange(len(signup)), rng.poisson(1.2 * years * engaged * volume))
    day = _days_between(signup[account], accounts.until[account], rng)
    kept = rng.random(len(day)) < accounts.engagement(account, day)
    return np.concatenate([led_account, account[kept]]), np.concatenate([led_day, day[kept]])
