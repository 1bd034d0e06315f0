"""An activity whose amounts are in several currencies is told, with the currencies and their shares: measures and
predictions add amounts up as written."""

from __future__ import annotations

import pandas as pd

from ci_pipeline.activities.currencies import currency_mix
from ci_pipeline_tests.activities.test_timeline import ORDERS


def test_an_activity_of_two_currencies_is_named_with_their_shares_and_the_key():
    orders = ORDERS.model_copy(update={"fields": {"amount": "total", "currency": "cur"}})
    counts = pd.DataFrame(
        {
            "Activity": ["orders", "orders", "orders", "lines"],
            "currency": ["EUR", "JPY", None, "EUR"],
            "rows": [90, 10, 5, 7],
        }
    )
    told = currency_mix(counts, {"orders": orders, "lines": orders})
    assert list(told) == ["orders"]  # one currency (and missing ones) is nothing to tell
    assert told["orders"].startswith(
        "activity orders holds amounts in 2 currencies (activities.tables.orders.fields.currency = cur): "
        "EUR 90.0%, JPY 10.0% of its rows; measures, churn and CLV add its amounts up as written"
    )
    assert "Convert the amounts to one currency" in told["orders"]
