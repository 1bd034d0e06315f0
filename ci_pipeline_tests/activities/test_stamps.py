"""Activity timestamps written as text are read in one order of day and month per column, the one its values
show; values of the other order are quarantined, and a column no value decides is read by the documented default
with a warning naming the setting."""

from __future__ import annotations

import pandas as pd

from ci_pipeline.activities import build_timeline, parse_timestamps
from ci_pipeline.ingest.stamps import StampOrder
from ci_pipeline_tests.activities.test_timeline import NOW, ORDERS, alternate_key


def dates(values: list[str]) -> list[str]:
    return parse_timestamps(pd.Series(values, dtype="string")).dt.strftime("%Y-%m-%d %H:%M").fillna("NaT").tolist()


def test_a_day_first_column_is_read_day_first_for_every_value_not_only_those_above_12():
    # pandas' per-value parser read 04/02/2025 as the 2nd of April next to the 22nd of January.
    assert dates(["04/02/2025 17:58", "22/01/2025 20:54", "2025-03-01"]) == [
        "2025-02-04 17:58",
        "2025-01-22 20:54",
        "2025-03-01 00:00",
    ]
    assert dates(["04.02.2025", "25.01.2025"]) == ["2025-02-04 00:00", "2025-01-25 00:00"]
    assert dates(["04/02/2025", "01/25/2025"]) == ["2025-04-02 00:00", "2025-01-25 00:00"]


def test_a_column_no_value_decides_follows_the_default_and_warns_with_the_setting():
    assert dates(["04/02/2025", "05/03/2025"]) == ["2025-04-02 00:00", "2025-05-03 00:00"]  # slashes month first
    assert dates(["04.02.2025"]) == ["2025-02-04 00:00"]  # dots day first
    told = StampOrder.of(pd.Series(["04/02/2025 10:00", "05/03/2025 11:00"])).warning("orders", "order_date")
    assert "they were read mm/dd/yyyy" in told
    assert 'declare activities.tables.orders.timestamp_format: "%d/%m/%Y %H:%M"' in told
    assert StampOrder.of(pd.Series(["22/01/2025"])).warning("orders", "order_date") is None


def test_values_of_the_minority_order_are_quarantined_naming_the_format_to_declare():
    frame = pd.DataFrame(
        {
            "order_id": ["o1", "o2", "o3", "o4"],
            "customer_id": [1, 1, 2, 2],
            "order_date": ["22/01/2025", "23/01/2025", "01/25/2025", "04/02/2025"],
            "total": [1.0, 2.0, 3.0, 4.0],
            "ret": [False] * 4,
            "status": ["done"] * 4,
        }
    )
    result = build_timeline({"orders": (ORDERS, frame, "order_id")}, alternate_key(), NOW)
    (reason,) = result.corrupt["Reason"]
    assert reason.startswith("timestamp order_date '01/25/2025' can only be read mm/dd/yyyy, but 2 value(s)")
    assert reason.endswith('declare activities.tables.orders.timestamp_format: "%d/%m/%Y"')
    placed = result.unified.set_index("SourceActivityId")["ActivityTimeStamp"].dt.strftime("%Y-%m-%d")
    assert placed["o4"] == "2025-02-04"
