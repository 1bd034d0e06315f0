"""Public purchase data (CDNOW) written as a user's lake would hold it, with the configuration a new user writes.

CDNOW is the classic data set of buy-till-you-die research: the 23,570 customers who made their first purchase at
the CD retailer CDNOW in the first quarter of 1997, and their 69,659 purchases until the end of June 1998
(customer id, date YYYYMMDD, number of CDs, dollar amount). It ships inside the ``lifetimes`` wheel (a dev
dependency) as ``lifetimes/datasets/CDNOW_master.txt``, with ``CDNOW_sample.txt`` (a tenth of the customers, 6,919
purchases); the files are read from the installed package folder without importing it.

:func:`write_project` writes a customer table holding only the id (nothing to match on) and an orders table
(customer id, date, quantity, amount; ``order_id`` numbers the rows in file order, as the file has no order key),
and a ``ci_pipeline.yaml`` configured as docs/configuration.md and docs/predictions.md tell a new user. The
prediction settings are the defaults except where the data leaves no choice (see :data:`CONFIG`).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from ci_pipeline.benchmarks.packaged import packaged_data
from ci_pipeline.errors import UserError

#: Data set -> (file in the lifetimes package's datasets folder, its columns in file order).
DATASETS = {
    "cdnow": ("CDNOW_master.txt", ["customer_id", "date", "quantity", "amount"]),
    # The sample adds the customer's number within the sample after the master id; the master id is kept.
    "cdnow_sample": ("CDNOW_sample.txt", ["customer_id", "sample_id", "date", "quantity", "amount"]),
}

#: The configuration of the written project. Prediction settings are the documented defaults except:
#: - ``as_of: last_purchase``: the data ends in June 1998, long before any run; scoring at the run date would read
#:   the quiet years since as churn (docs/predictions.md, "Cutoffs, backtest and the no-leak rule").
#: - ``clv.period_months: 6``: the default 12 months needs 24 months of history (two periods, the documented
#:   minimum) and CDNOW has 18; two periods of at most 8 months fit, and half a year is the period chosen, fixed
#:   before any figure was seen (never searched against the reported window).
#: - ``models: [churn, clv]`` and ``product_activity: null``: CDNOW names no product, so there is no product
#:   activity and recommendation is refused by the configuration check (the bench reports that refusal).
CONFIG = """\
# CDNOW purchases (lifetimes/datasets/{file}) as a user's lake holds them: a customer table holding only the
# customer id and an orders table. Written by `ci-pipeline bench predictions --dataset {dataset}`.
name: cdnow
lake:
  url: lake

sources:
  shop:
    owner: team:analytics
    description: The CD shop's customers and orders (CSV exports).
    tables:
      customers:
        format: csv
        path: data/customers.csv
        primary_key: customer_id
        description: One row per customer; the id is all the shop exported.
      orders:
        format: csv
        path: data/orders.csv
        primary_key: order_id
        description: One row per purchase (order_id numbers the rows of the export).
        columns:
          date: {{type: datetime, format: "%Y%m%d"}}
          quantity: int64
          amount: double

unify:
  tables:
    - source: shop
      table: customers
      # Each customer id is one customer: nothing else is known of them, so there is nothing to match on (and the
      # run need not warn that no rule can compare these records).
      columns:
        customer_id: custom
      one_customer_per_record: true

activities:
  tables:
    orders:
      source: shop
      table: orders
      type: SalesOrder
      timestamp: date
      fields: {{amount: amount, quantity: quantity}}
      customer: {{source: shop, table: customers, column: customer_id}}

predictions:
  # The purchases end in June 1998: score at the last purchase, not at the run date.
  as_of: last_purchase
  # No product is named in the data: churn and lifetime value only.
  models: [churn, clv]
  purchases:
    activity: orders
    amount: amount
    product_activity: null
  # 18 months of history: the default 12-month period would need 24 (two periods); half a year fits.
  clv:
    period_months: 6
"""


def cdnow_file(dataset: str) -> Path:
    """The CDNOW text file of ``dataset`` inside the installed ``lifetimes`` package (found without importing it)."""
    if dataset not in DATASETS:
        raise UserError(f"unknown public data set {dataset!r}; choose one of {', '.join(DATASETS)}")
    return packaged_data("lifetimes", "datasets", DATASETS[dataset][0], what="the CDNOW data sets")


def read_cdnow(dataset: str) -> pd.DataFrame:
    """The purchases of ``dataset`` in file order: customer_id and date as text, quantity and amount as numbers."""
    path = cdnow_file(dataset)
    columns = DATASETS[dataset][1]
    # The master file starts with a header line; the sample has none. Both are whitespace-separated.
    with path.open(encoding="ascii") as handle:
        header = not handle.readline().split()[0].isdigit()
    frame = pd.read_csv(
        path,
        sep=r"\s+",
        header=None,
        skiprows=1 if header else 0,
        names=columns,
        dtype={"customer_id": "string", "sample_id": "string", "date": "string"},
    )
    if len(frame.columns) != len(columns) or frame[columns].isna().any().any():
        raise UserError(f"{path}: expected {len(columns)} whitespace-separated values per line ({', '.join(columns)})")
    return frame[["customer_id", "date", "quantity", "amount"]]


def write_project(folder: Path, dataset: str, customers: int | None = None) -> Path:
    """Write the customer and order tables of ``dataset`` and their configuration into ``folder``.

    Args:
        folder: the project folder (created when missing).
        dataset: ``cdnow`` or ``cdnow_sample``.
        customers: keep only the first this many customers (by id), for a small slice; None keeps all.

    Returns:
        The configuration file's path.
    """
    purchases = read_cdnow(dataset)
    ids = pd.Series(purchases["customer_id"].unique(), dtype="string").sort_values(ignore_index=True)
    if customers is not None:
        ids = ids.iloc[:customers]
        purchases = purchases[purchases["customer_id"].isin(ids)]
    data = Path(folder) / "data"
    data.mkdir(parents=True, exist_ok=True)
    pd.DataFrame({"customer_id": ids}).to_csv(data / "customers.csv", index=False)
    orders = purchases.reset_index(drop=True)
    orders.insert(0, "order_id", range(1, len(orders) + 1))
    orders.to_csv(data / "orders.csv", index=False)
    config = Path(folder) / "ci_pipeline.yaml"
    config.write_text(CONFIG.format(file=cdnow_file(dataset).name, dataset=dataset), encoding="utf-8")
    return config
