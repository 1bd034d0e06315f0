"""Arrow text helpers: fixed-width keys, membership and positions by hash lookup, checked against pandas and NumPy."""

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from ci_pipeline.arrow_text import _hashes, duckdb_hashes, fixed_width_bytes, text_isin, text_positions

VALUES = ["a", None, "b", "c", "a", ""]


def _lookup_id(lookup) -> str:
    # A set's repr follows the hash seed, which differs between xdist workers; they must agree on test names.
    return f"set{sorted(lookup)}" if isinstance(lookup, set) else repr(lookup)


@pytest.mark.parametrize("dtype", ["str", "string"])
@pytest.mark.parametrize(
    "lookup",
    [
        ["a", None],
        ["b"],
        {"c", "a", ""},
        [],
        ("zz",),
        pd.Series(["a", None], dtype="string"),
        pd.Index(["c"], dtype="str"),
        pd.Series(["b", "b"], dtype="str"),
    ],
    ids=_lookup_id,
)
def test_text_isin_answers_as_pandas_does(dtype, lookup):
    values = pd.Series(VALUES, dtype=dtype)
    got = text_isin(values, lookup)
    assert got.dtype == bool
    assert got.tolist() == values.isin(lookup).tolist()
    assert text_isin(pd.Index(values), lookup).tolist() == pd.Index(values).isin(lookup).tolist()


@pytest.mark.parametrize(
    ("values", "lookup"),
    [(pd.Series([1, 2, 3]), [2]), (pd.Series(["a", "b"], dtype=object), ["b"]), (pd.Series(["a"], dtype="str"), [1])],
)
def test_text_isin_leaves_what_is_not_text_on_both_sides_to_pandas(values, lookup):
    assert text_isin(values, lookup).tolist() == values.isin(lookup).tolist()


def test_fixed_width_bytes_views_keys_of_one_width_and_refuses_the_rest():
    keys = pa.array(["bb", "ab", "ba"])
    assert fixed_width_bytes(keys).tolist() == [b"bb", b"ab", b"ba"]
    assert np.argsort(fixed_width_bytes(keys), kind="stable").tolist() == [1, 2, 0]
    for refused in (pa.array(["a", "bb"]), pa.array(["a", None]), pa.array(["", ""]), pa.array(["a\0", "bb"])):
        assert fixed_width_bytes(refused) is None


@pytest.mark.parametrize("dtype", ["str", "string"])
@pytest.mark.parametrize(
    "lookup",
    [["c", "a", ""], ["a", None], [], ["zz"], ["b"]],
    ids=repr,
)
def test_text_positions_answer_as_get_indexer_does(dtype, lookup):
    index = pd.Index(lookup, dtype=dtype)
    for values in (pd.Series(VALUES, dtype=dtype), pd.Index(VALUES, dtype="string")):
        got = text_positions(values, index)
        assert got.dtype == np.intp
        assert got.tolist() == index.get_indexer(values).tolist()


def test_text_positions_leave_what_is_not_text_to_pandas():
    assert text_positions(pd.Series([3, 1, 5]), pd.Index([1, 2, 3])).tolist() == [2, 0, -1]


def test_a_text_index_finds_what_index_in_finds_collisions_and_all(monkeypatch):
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    from ci_pipeline import arrow_text
    from ci_pipeline.arrow_text import TextIndex

    values = pa.array([f"k{i}" for i in range(500)] + [None], pa.large_string())
    asked = pa.array(["k3", "nope", None, "k499", "k0", "k3", ""], pa.string())
    expected = pc.index_in(asked, value_set=values, skip_nulls=True)
    assert TextIndex(values).positions(asked).to_pylist() == expected.to_pylist()
    # Every text of one hash: each is found by its text, never by its hash alone.
    monkeypatch.setattr(arrow_text, "_hashes", lambda text: np.zeros(len(text), dtype=np.uint64))
    assert TextIndex(values).positions(asked).to_pylist() == expected.to_pylist()
    assert TextIndex(pa.array([], pa.string())).positions(asked).null_count == len(asked)


@pytest.mark.parametrize("distinct", [3, 600])
def test_take_repeated_takes_as_arrow_does(distinct):
    from ci_pipeline.unify.text import take_repeated

    # Repeated texts (and a missing one) go through dictionary codes; mostly distinct ones are taken directly.
    values = [f'{{"email": {i % distinct}}}' for i in range(600)]
    text = pa.array([None if i % 7 == 0 else v for i, v in enumerate(values)], pa.large_string())
    for at in (np.array([], np.int64), np.random.default_rng(distinct).integers(0, 600, 1000)):
        assert take_repeated(text, at).equals(text.take(pa.array(at, pa.int64())))


def test_text_hashes_are_the_same_on_every_thread_and_call():
    # Each thread keeps a DuckDB connection of its own for hashing: the hashes must not depend on which one.
    text = pa.array([f"name {i}" for i in range(500)], pa.large_string())
    fresh = duckdb_hashes(pa.table({"t": text}), ["hash(t)"])[0]
    with ThreadPoolExecutor(4) as pool:
        found = list(pool.map(lambda _: _hashes(text), range(8)))
    assert all((f == fresh).all() for f in found) and (_hashes(text) == fresh).all()
