"""What a stage keeps in the lake for its next run: a folder of Parquet tables and a ``meta.json`` written last.

Unification, measures and segments reuse their last run's results for what did not change. Their state must never
be half read: the meta file goes last, so a run killed while writing leaves no state, and any damage on reading is
a reason to compute everything, never a wrong reuse.

A stage may also write its next state ahead, on a thread beside its other work (:func:`write_ahead`): the tables go
to files of their own beside the current state, which stays the state until the stage commits the new one (its meta
file names them); a step that fails before committing leaves the last good state.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterable
from concurrent.futures import Future

import pandas as pd

from ci_pipeline.side_by_side import started

META = "meta.json"
#: The meta key naming the files of a state written ahead (table name -> file in the state's folder).
FILES = "_files"


def write_run_state(lake, folder: str, tables: dict[str, pd.DataFrame], meta: dict) -> None:
    """Store ``tables`` as ``<folder>/<name>.parquet``, then the meta file."""
    lake.delete(f"{folder}/{META}")
    for name, table in tables.items():
        lake.write_parquet(f"{folder}/{name}.parquet", table)
    lake.write_bytes(f"{folder}/{META}", json.dumps(meta, sort_keys=True).encode())


class StateAhead:
    """A state's tables being written beside the current state (:func:`write_ahead`); :meth:`commit` makes them the
    state once the stage's outputs are stored."""

    def __init__(self, lake, folder: str, tables: dict[str, pd.DataFrame], meta: dict):
        self.lake, self.folder, self.meta = lake, folder, meta
        tag = uuid.uuid4().hex[:12]
        self.files = {name: f"{name}.{tag}.parquet" for name in tables}
        self._written: Future[None] = started(lambda: self._write(tables), f"state-{folder.rsplit('/', 1)[-1]}")

    def _write(self, tables: dict[str, pd.DataFrame]) -> None:
        for name, table in tables.items():
            self.lake.write_parquet(f"{self.folder}/{self.files[name]}", table)

    def commit(self) -> None:
        """Wait for the tables (raising what failed), write the meta file naming them, then remove the files of
        earlier states."""
        self._written.result()
        meta = json.dumps({**self.meta, FILES: self.files}, sort_keys=True).encode()
        self.lake.write_bytes(f"{self.folder}/{META}", meta)
        for path in self.lake.find(self.folder):
            name = path[len(self.folder) + 1 :]
            if name.endswith(".parquet") and "/" not in name and name not in self.files.values():
                self.lake.delete(path)


def write_ahead(lake, folder: str, tables: dict[str, pd.DataFrame], meta: dict) -> StateAhead:
    """Begin writing the next state's ``tables`` on a thread of their own, beside the current state; the caller
    calls :meth:`StateAhead.commit` when the rest of its work has succeeded."""
    return StateAhead(lake, folder, tables, meta)


def read_run_state(
    lake, folder: str, names: Callable[[dict], Iterable[str]]
) -> tuple[dict, dict[str, pd.DataFrame]] | str:
    """The meta and the tables ``names(meta)`` of the state kept in ``folder``, or why there is none to use."""
    if not lake.exists(f"{folder}/{META}"):
        return f"no state of an earlier run at {lake.url(f'{folder}/{META}')}"
    try:
        meta = json.loads(lake.read_bytes(f"{folder}/{META}"))
        files = meta.pop(FILES, {})
        return meta, {name: lake.read_parquet(f"{folder}/{files.get(name, name + '.parquet')}") for name in names(meta)}
    except Exception as exc:  # any damage means computing everything, never a wrong reuse
        return f"the state at {lake.url(folder)} is unreadable ({type(exc).__name__}: {exc})"
