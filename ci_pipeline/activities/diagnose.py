"""Why most rows of an activity find no customer: its ``customer.column`` holds another column of the customer table.

An activity is placed by the customer table's primary key (through AlternateKey). A support desk export keyed by
e-mail address, pointed at a CRM table keyed by ``contact_id``, finds no record for any row, although every address
is in that table: each row's reason (``no crm.contacts record with key 'ann@example.com'``) is true but does not say
what is wrong. :func:`key_column_hint` tells it from a sample of the keys that found nothing: the column of the
customer table that holds them, or that they look like e-mail addresses, and how to place such rows.
"""

from __future__ import annotations

import json

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds

from ci_pipeline.config.activities import ActivityTable

#: Keys looked up in the customer table's other columns: enough to tell a column, few enough to scan cheaply.
SAMPLE = 50
_EMAIL = r"^[^@\s]+@[^@\s]+\.[^@\s]+$"


def missing_keys(corrupt: pd.DataFrame, name: str, spec: ActivityTable) -> tuple[int, pd.Series]:
    """How many of activity ``name``'s rows were quarantined because no customer record has their key, and a sample
    of those keys (distinct, as text)."""
    table = f"{spec.customer.source}.{spec.customer.table}"
    rows = corrupt[(corrupt["Activity"] == name) & corrupt["Reason"].str.startswith(f"no {table} record with key '")]
    # At most SAMPLE distinct keys are wanted: a few more rows than that are decoded, never the whole quarantine.
    records = rows["Record"].head(SAMPLE * 4)
    keys = [json.loads(r).get(spec.customer.column) for r in records]
    return len(rows), pd.Series(keys, dtype="string").str.strip().dropna().drop_duplicates()


def key_column_hint(
    name: str, spec: ActivityTable, keys: pd.Series, primary_keys: tuple[str, str], customers: ds.Dataset | None
) -> str | None:
    """What ``keys`` (customer keys that found no record, :func:`missing_keys`) look like, and the fix; None when
    they look like keys that are simply missing.

    Args:
        name: the activity's name.
        spec: its configuration.
        keys: the keys that found no customer record.
        primary_keys: the activity table's primary key column and the customer table's.
        customers: the customer table as ingested (None: not read; only the shape of the keys is told).
    """
    own_key, primary_key = primary_keys
    sample = keys.head(SAMPLE)
    if sample.empty:
        return None
    table = f"{spec.customer.source}.{spec.customer.table}"
    column, found = _holding_column(sample, customers, primary_key) if customers is not None else (None, 0)
    if column is not None:
        holds = f"its values are in {table} column {column} ({found} of {len(sample)} sampled keys)"
    elif sample.str.fullmatch(_EMAIL).mean() >= 0.8:
        column, holds = "email", "its values look like e-mail addresses"
    else:
        return None
    wrong = (
        f"activities.tables.{name}.customer.column {spec.customer.column!r} must hold the primary key of {table} "
        f"({primary_key}), by which rows are placed; {holds}"
    )
    if (spec.source, spec.table) == (spec.customer.source, spec.customer.table):
        return f"{wrong}: set customer.column to {primary_key}"
    return (
        f"{wrong}. To place the rows by that {column} instead, add {spec.source}.{spec.table} to unify.tables (its "
        f"{spec.customer.column} column mapped under columns, as in {table}) and set customer: "
        f"{{source: {spec.source}, table: {spec.table}, column: {own_key}}}: unification then joins each row to the "
        "customer with that value (docs/config/activities.md)"
    )


def _holding_column(sample: pd.Series, customers: ds.Dataset, primary_key: str) -> tuple[str | None, int]:
    """The text column of ``customers`` (other than its key) that holds most of ``sample``, if it holds at least
    half of it, and how many it holds. E-mail addresses are compared without case, as unification compares them."""
    wanted = pa.array(sample.str.lower().unique().tolist(), type=pa.string())
    best, most = None, 0
    for column in customers.schema.names:
        kind = customers.schema.field(column).type
        if column == primary_key or not (pa.types.is_string(kind) or pa.types.is_large_string(kind)):
            continue
        values = customers.to_table(columns=[column]).column(column)
        lowered = pc.utf8_lower(pc.utf8_trim_whitespace(values))
        found = len(pc.unique(pc.filter(lowered, pc.is_in(lowered, value_set=wanted))))
        if found > most:
            best, most = column, found
    return (best, most) if most * 2 >= len(wanted) else (None, 0)
