"""What a stage keeps in the lake for its next run: a folder of Parquet tables and a ``meta.json`` written last.

Unification, measures and segments reuse their last run's results for what did not change. Their state must never
be half read: the meta file goes last, so a run killed while writing leaves no state, and any damage on reading is
a reason to compute everything, never a wrong reuse.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable

import pandas as pd

META = "meta.json"


def write_run_state(lake, folder: str, tables: dict[str, pd.DataFrame], meta: dict) -> None:
    """Store ``tables`` as ``<folder>/<name>.parquet``, then the meta file."""
    lake.delete(f"{folder}/{META}")
    for name, table in tables.items():
        lake.write_parquet(f"{folder}/{name}.parquet", table)
    lake.write_bytes(f"{folder}/{META}", json.dumps(meta, sort_keys=True).encode())


def read_run_state(
    lake, folder: str, names: Callable[[dict], Iterable[str]]
) -> tuple[dict, dict[str, pd.DataFrame]] | str:
    """The meta and the tables ``names(meta)`` of the state kept in ``folder``, or why there is none to use."""
    if not lake.exists(f"{folder}/{META}"):
        return f"no state of an earlier run at {lake.url(f'{folder}/{META}')}"
    try:
        meta = json.loads(lake.read_bytes(f"{folder}/{META}"))
        return meta, {name: lake.read_parquet(f"{folder}/{name}.parquet") for name in names(meta)}
    except Exception as exc:  # any damage means computing everything, never a wrong reuse
        return f"the state at {lake.url(folder)} is unreadable ({type(exc).__name__}: {exc})"
