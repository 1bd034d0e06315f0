"""From an upstream table to what a sink receives: shape it, then map it to Dataverse logical names."""

from __future__ import annotations

import pandas as pd

from ci_pipeline import outputs
from ci_pipeline.dataverse.naming import sink_table
from ci_pipeline.dataverse.sink import SinkTable


def prepare(
    table: str,
    df: pd.DataFrame | None,
    prefix: str = "msdynci",
    provider: str = "ci_pipeline",
    entity_sets: dict[str, str] | None = None,
) -> SinkTable:
    """Shape one output table (an empty one when no stage produces it) and name it for the sink.

    Args:
        table: output table name, e.g. ``AlternateKey``.
        df: the upstream frame, or None when no stage produces the table.
        prefix: Dataverse logical-name prefix.
        provider: SegmentProvider for segment memberships that carry none (the project name).
        entity_sets: entity-set overrides.
    """
    if df is None:
        shaped = outputs.empty_table(table)
    elif table == "SegmentMembership":
        shaped = outputs.shape_segment_membership(df, provider=provider)
    else:
        shaped = outputs.SHAPERS[table](df)
    return sink_table(table, shaped, prefix, entity_sets)
