"""The purchase signal of the generated web shop: one-time buyers, seasonality, returns, fading before leaving."""

from __future__ import annotations

import filecmp

import numpy as np
import pandas as pd
import pytest

from ci_pipeline.generate import behaviour, generate


@pytest.fixture(scope="module")
def shop(tmp_path_factory):
    out = tmp_path_factory.mktemp("shop")
    generate(people=4000, seed=11, out=out)
    orders = pd.read_parquet(out / "ecommerce" / "orders.parquet")
    # Leave out the injected faults: orders dated decades ahead and orders of accounts that do not exist.
    accounts = pd.read_parquet(out / "ecommerce" / "customers.parquet")["customer_id"]
    orders = orders[(orders["order_date"].dt.year < 2100) & orders["customer_id"].isin(accounts)]
    lines = pd.read_parquet(out / "ecommerce" / "order_lines.parquet")
    return out, orders, lines


def test_about_half_to_two_thirds_of_buyers_buy_once_and_some_accounts_never(shop):
    out, orders, _ = shop
    bought = orders[~orders["is_return"]]
    days = bought.assign(day=bought["order_date"].dt.floor("D")).groupby("customer_id")["day"].nunique()
    assert 0.5 <= (days == 1).mean() <= 0.7
    accounts = pd.read_parquet(out / "ecommerce" / "customers.parquet")
    assert 0.05 < 1 - len(days) / len(accounts) < 0.3


def test_orders_peak_in_the_holiday_season_and_dip_at_the_end_of_the_week(shop):
    _, orders, _ = shop
    bought = orders[~orders["is_return"]]
    month = bought["order_date"].dt.month.value_counts(normalize=True)
    assert month[12] > 1.25 * month.drop([11, 12]).mean()
    weekday = bought["order_date"].dt.day_of_week.value_counts(normalize=True)
    assert weekday[[4, 5]].mean() < 0.95 * weekday[[0, 1, 2]].mean()


def test_returns_are_negative_lines_of_an_earlier_purchase_of_the_same_customer(shop):
    _, orders, lines = shop
    returned = lines[lines["quantity"] < 0]
    assert 0.01 < len(returned) / len(lines) < 0.06
    assert (returned["line_amount"] < 0).all()
    flagged = orders.set_index("order_id")["is_return"]
    assert flagged.loc[returned["order_id"]].all()
    assert (orders.loc[orders["is_return"], "total_amount"] < 0).all()
    bought = lines[lines["quantity"] > 0]
    pairs = returned.merge(bought, on=["customer_id", "product_id", "unit_price"], suffixes=("", "_bought"))
    pairs = pairs[pairs["order_date_bought"] < pairs["order_date"]]
    assert set(pairs["line_id"]) == set(returned["line_id"])


def test_people_who_leave_buy_less_often_in_their_last_months(shop):
    out, orders, _ = shop
    people = pd.read_parquet(out / "ground_truth" / "people.parquet").set_index("person_id")
    records = pd.read_parquet(out / "ground_truth" / "records.parquet")
    account = records[records["table"] == "customers"].set_index("key")["person_id"]
    bought = orders[~orders["is_return"]].assign(person_id=lambda f: account.loc[f["customer_id"]].to_numpy())
    bought = bought.join(people[["churned", "churn_date"]], on="person_id")
    leavers = bought[bought["churned"]].copy()
    before = (pd.to_datetime(leavers["churn_date"]) - leavers["order_date"].dt.floor("D")).dt.days
    # Orders per day in the last 60 days before leaving against 120-360 days before: a fade, not a sudden stop.
    late = (before <= 60).sum() / 60
    earlier = ((before > 120) & (before <= 360)).sum() / 240
    assert late < 0.7 * earlier


def test_the_people_and_customer_records_do_not_depend_on_the_purchase_behaviour(shop, tmp_path, monkeypatch):
    out, _, _ = shop
    monkeypatch.setattr(behaviour, "REPEAT_P", np.array([0.1, 0.1, 0.1, 0.1, 0.1]))
    monkeypatch.setattr(behaviour, "RETURN_P", (0.5, 0.5))
    generate(people=4000, seed=11, out=tmp_path)
    for rel in ("crm/contacts.csv", "support/tickets.csv", "ground_truth/records.parquet"):
        assert filecmp.cmp(out / rel, tmp_path / rel, shallow=False), rel
    for rel in ("ecommerce/customers.parquet", "ground_truth/people.parquet"):
        pd.testing.assert_frame_equal(pd.read_parquet(out / rel), pd.read_parquet(tmp_path / rel))
    changed = pd.read_parquet(tmp_path / "ecommerce" / "orders.parquet")
    assert len(changed) != len(pd.read_parquet(out / "ecommerce" / "orders.parquet"))
