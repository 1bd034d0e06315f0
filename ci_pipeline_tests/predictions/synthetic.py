"""Small seeded purchase histories made in the tests (customers with their own rates and churn dates)."""

from __future__ import annotations

import numpy as np
import pandas as pd

END = pd.Timestamp("2026-06-30T12:00:00Z")


def purchases(customers: int = 600, days: int = 720, seed: int = 1, one_time_share: float = 0.2) -> pd.DataFrame:
    """Purchases of ``customers`` people over ``days`` days ending at :data:`END`.

    Each customer joins at a random day, buys at a rate drawn from a gamma distribution until a random churn day,
    and spends around their own mean amount; ``one_time_share`` of them buy exactly once.
    """
    rng = np.random.default_rng(seed)
    start = rng.uniform(0, days * 0.6, customers)
    churn = start + rng.exponential(days * 0.8, customers)
    rate = rng.gamma(1.5, 1 / 40, customers)
    span = np.clip(np.minimum(churn, days) - start, 0, None)
    counts = np.maximum(rng.poisson(rate * span), 1)
    counts[rng.random(customers) < one_time_share] = 1
    owner = np.repeat(np.arange(customers), counts)
    offset = start[owner] + rng.random(len(owner)) * np.maximum(span[owner], 1.0)
    mean = rng.gamma(4.0, 20.0, customers)
    amount = np.round(rng.gamma(4.0, mean[owner] / 4.0), 2)
    times = END - pd.Timedelta(days=days) + pd.to_timedelta(offset, unit="D")
    frame = pd.DataFrame(
        {
            "CustomerId": pd.array([f"C{i:05d}" for i in owner], dtype="string"),
            "Time": times,
            "Amount": amount,
        }
    )
    return frame.sort_values(["CustomerId", "Time"], kind="stable").reset_index(drop=True)


def lines(purchases: pd.DataFrame, products: int = 30, seed: int = 2) -> pd.DataFrame:
    """One to three product lines per purchase, each customer favouring a few products of one group."""
    rng = np.random.default_rng(seed)
    per = rng.integers(1, 4, len(purchases))
    rows = np.repeat(np.arange(len(purchases)), per)
    codes = purchases["CustomerId"].str.slice(1).astype(int).to_numpy()
    group = codes[rows] % 5
    pick = (group * (products // 5) + rng.integers(0, products // 5, len(rows))) % products
    return pd.DataFrame(
        {
            "CustomerId": purchases["CustomerId"].to_numpy()[rows],
            "Time": purchases["Time"].to_numpy()[rows],
            "Product": pd.array([f"P{p:03d}" for p in pick], dtype="string"),
        }
    ).assign(Time=lambda f: pd.to_datetime(f["Time"], utc=True))
