"""An activity whose customer column holds another column of the customer table is told so, with the fix."""

from __future__ import annotations

import json

import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds

from ci_pipeline.activities.diagnose import key_column_hint, missing_keys
from ci_pipeline.config.activities import ActivityTable
from ci_pipeline.defs.activities import quarantine_summary

HELPDESK = ActivityTable.model_validate(
    {
        "source": "extra",
        "table": "helpdesk",
        "type": "SupportCase",
        "timestamp": "opened_at",
        "customer": {"source": "crm", "table": "contacts", "column": "email"},
    }
)
CONTACTS = ds.dataset(
    pa.table({"contact_id": ["C1", "C2", "C3"], "email": ["Ann@example.com", "bob@example.org", None], "n": [1, 2, 3]})
)


def corrupt(keys: list[str]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "Activity": "helpdesk",
            "SourceActivityId": [f"H{i}" for i in range(len(keys))],
            "Reason": [f"no crm.contacts record with key '{k}'" for k in keys],
            "Record": [json.dumps({"case_id": f"H{i}", "email": k}) for i, k in enumerate(keys)],
        }
    )


def test_keys_that_are_another_column_of_the_customer_table_are_named_with_the_fix():
    rows = corrupt(["ann@example.com", "bob@example.org", "ann@example.com"])
    missing, keys = missing_keys(rows, "helpdesk", HELPDESK)
    assert missing == 3 and keys.tolist() == ["ann@example.com", "bob@example.org"]
    hint = key_column_hint("helpdesk", HELPDESK, keys, ("case_id", "contact_id"), CONTACTS)
    assert hint.startswith(
        "activities.tables.helpdesk.customer.column 'email' must hold the primary key of crm.contacts (contact_id), "
        "by which rows are placed; its values are in crm.contacts column email (2 of 2 sampled keys). To place the "
        "rows by that email instead, add extra.helpdesk to unify.tables"
    )
    assert "set customer: {source: extra, table: helpdesk, column: case_id}" in hint
    # Without the customer table, the shape of the keys is told; keys that look like keys get no hint.
    unread = key_column_hint("helpdesk", HELPDESK, keys, ("case_id", "contact_id"), None)
    assert "its values look like e-mail addresses" in unread
    plain = pd.Series(["C9", "C10"], dtype="string")
    assert key_column_hint("helpdesk", HELPDESK, plain, ("case_id", "contact_id"), CONTACTS) is None


def test_the_summary_shows_the_value_of_the_most_frequent_reason_and_the_hint():
    rows = corrupt(["ann@example.com", "bob@example.org"])
    lost = {"helpdesk": {"read": 2, "placed": 0, "quarantined": 2}}
    told = quarantine_summary(rows, lost, ["helpdesk"], {"helpdesk": "the hint"})
    assert told == (
        "helpdesk placed no row at all (check its primary_key, timestamp and customer); rows quarantined in "
        "activities/unified_activity_corrupt: helpdesk 2 of 2 row(s), most often (2 row(s) alike): no crm.contacts "
        "record with key 'ann@example.com'. the hint"
    )
