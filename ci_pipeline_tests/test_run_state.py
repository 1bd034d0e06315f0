"""A stage's state for its next run: written whole or not at all, and when written ahead, the last good state stays
the state until the new one is committed."""

import pandas as pd
import pyarrow as pa
import pytest

from ci_pipeline.lake import Lake
from ci_pipeline.run_state import read_run_state, write_ahead, write_run_state

FOLDER = "ci_pipeline/_state/example"


def _read(lake):
    found = read_run_state(lake, FOLDER, lambda meta: list(meta["tables"]))
    assert not isinstance(found, str), found
    return found


def test_a_state_written_ahead_is_the_state_only_once_committed_and_the_earlier_files_are_removed(tmp_path):
    lake = Lake.local(tmp_path)
    write_run_state(lake, FOLDER, {"rows": pd.DataFrame({"a": [1, 2]})}, {"tables": ["rows"], "run": 1})
    ahead = write_ahead(lake, FOLDER, {"rows": pd.DataFrame({"a": [3]})}, {"tables": ["rows"], "run": 2})
    ahead._written.result()  # the new table is on disk beside the old one ...
    meta, tables = _read(lake)
    assert meta["run"] == 1 and tables["rows"]["a"].tolist() == [1, 2]  # ... and the old state is still the state
    ahead.commit()
    meta, tables = _read(lake)
    assert meta == {"tables": ["rows"], "run": 2} and tables["rows"]["a"].tolist() == [3]
    files = [p.rsplit("/", 1)[-1] for p in lake.find(FOLDER)]
    assert sorted(files) == sorted(["meta.json", *ahead.files.values()])


def test_a_state_whose_tables_fail_to_be_written_is_never_committed(tmp_path):
    lake = Lake.local(tmp_path)
    write_run_state(lake, FOLDER, {"rows": pd.DataFrame({"a": [1]})}, {"tables": ["rows"], "run": 1})
    unwritable = pd.DataFrame({"a": [object()]})  # Parquet has no type for it
    ahead = write_ahead(lake, FOLDER, {"rows": unwritable}, {"tables": ["rows"], "run": 2})
    with pytest.raises(pa.ArrowInvalid):
        ahead.commit()
    meta, tables = _read(lake)
    assert meta["run"] == 1 and tables["rows"]["a"].tolist() == [1]
