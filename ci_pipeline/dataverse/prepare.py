"""From a stage's output table to what a sink receives: check it against the contract, then map it to Dataverse
logical names. Nothing is recomputed here: the producing stage built identifiers and GUIDs once."""

from __future__ import annotations

import pandas as pd

from ci_pipeline import outputs
from ci_pipeline.dataverse.naming import sink_table
from ci_pipeline.dataverse.sink import SinkTable


def prepare(
    table: str, df: pd.DataFrame | None, prefix: str = "msdynci", entity_sets: dict[str, str] | None = None
) -> SinkTable:
    """Check one output table (an empty one when no stage produces it) and name it for the sink.

    Args:
        table: output table name, e.g. ``AlternateKey``.
        df: the table as its stage built it (:func:`ci_pipeline.outputs.build` / ``with_ids``), or None when no
            stage produces the table.
        prefix: Dataverse logical-name prefix.
        entity_sets: entity-set overrides.
    """
    shaped = outputs.empty_table(table) if df is None else outputs.finish(table, df)
    return sink_table(table, shaped, prefix, entity_sets)
