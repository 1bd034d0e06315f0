"""Dataverse logical names of the output tables and their columns.

Mapping (prefix ``p``, default ``msdynci``): table ``AlternateKey`` -> logical name ``p_alternatekey``, entity set
``p_alternatekeys``; column ``CustomerId`` -> ``p_customerid``; a column already named ``msdynci_x`` -> ``p_x``.
CustomerProfile has no GUID column of its own: its primary key ``p_customerprofileid`` is ``guid(CustomerId)``.
"""

from __future__ import annotations

import pandas as pd

from ci_pipeline import outputs
from ci_pipeline.dataverse.sink import SinkTable
from ci_pipeline.errors import UserError

_CI_PREFIX = "msdynci_"


def logical_column(column: str, prefix: str = "msdynci") -> str:
    """``CustomerId`` -> ``msdynci_customerid``; ``msdynci_identifier`` -> ``<prefix>_identifier``."""
    lower = column.lower()
    return f"{prefix}_{lower.removeprefix(_CI_PREFIX)}"


def logical_table(table: str, prefix: str = "msdynci") -> str:
    """``AlternateKey`` -> ``msdynci_alternatekey``."""
    return f"{prefix}_{table.lower()}"


def entity_set(table: str, prefix: str = "msdynci") -> str:
    """The Web API entity set: ``msdynci_alternatekeys``, ``msdynci_unifiedactivities``, ..."""
    name = logical_table(table, prefix)
    return name[:-1] + "ies" if name.endswith("y") and name[-2] not in "aeiou" else name + "s"


def primary_key(table: str, prefix: str = "msdynci") -> str:
    """The GUID primary-key column of a table, by its logical name."""
    if table == "CustomerProfile":
        return logical_column(outputs.CUSTOMER_PROFILE_KEY, prefix)
    return logical_column(outputs.contract(table).key, prefix)


def _as_text(series: pd.Series) -> pd.Series:
    if isinstance(series.dtype, pd.DatetimeTZDtype) or pd.api.types.is_datetime64_any_dtype(series.dtype):
        stamps = pd.to_datetime(series, utc=True)
        return stamps.dt.strftime("%Y-%m-%dT%H:%M:%SZ").astype("string")
    return series.astype("string")


def sink_table(table: str, shaped: pd.DataFrame, prefix: str = "msdynci", entity_sets: dict | None = None) -> SinkTable:
    """A shaped output table renamed to logical names, every value as text (ISO 8601 UTC for DateTime), primary
    key first and rows sorted by it.

    Args:
        table: output table name (``AlternateKey``, ...).
        shaped: the table checked by :func:`ci_pipeline.outputs.finish`.
        prefix: logical-name prefix.
        entity_sets: entity-set overrides per table.
    """
    pk = primary_key(table, prefix)
    frame = pd.DataFrame(index=shaped.index)
    if table == "CustomerProfile":
        frame[pk] = outputs.customer_profile_keys(shaped["CustomerId"])
    renamed: dict[str, str] = {}
    for column in shaped.columns:
        name = logical_column(str(column), prefix)
        if name in renamed.values() or (name == pk and table == "CustomerProfile"):
            raise UserError(
                f"{table}: column {column!r} maps to the Dataverse column {name!r}, which another column already "
                "uses; rename one of them in the configuration"
            )
        renamed[column] = name
        frame[name] = _as_text(shaped[column])
    frame = frame[[pk, *[c for c in frame.columns if c != pk]]]
    if not frame[pk].is_monotonic_increasing:
        frame = frame.sort_values(pk, kind="stable")
    frame = frame.reset_index(drop=True)
    sets = entity_sets or {}
    return SinkTable(
        name=table,
        logical_name=logical_table(table, prefix),
        entity_set=sets.get(table, entity_set(table, prefix)),
        primary_key=pk,
        frame=frame,
    )
