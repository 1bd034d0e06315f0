import numpy as np
import pytest

from ci_pipeline.arrays import isin, pair_ids, pairs_sharing_code, stable_order, unique


@pytest.mark.parametrize("shape", [(0,), (1000,), (40, 25)])
def test_isin_agrees_with_numpy(shape):
    rng = np.random.default_rng(5)
    values = rng.integers(-50, 10**12, shape)
    test = np.concatenate([rng.choice(values.ravel(), 300) if values.size else [], rng.integers(0, 10**12, 300)])
    test = test.astype(np.int64)
    got = isin(values, test)
    assert got.shape == values.shape and got.dtype == bool
    np.testing.assert_array_equal(got, np.isin(values, test))


def test_isin_with_nothing_to_find():
    assert isin(np.array([1, 2]), np.array([], dtype=np.int64)).tolist() == [False, False]


@pytest.mark.parametrize(
    "values",
    [
        np.array([], dtype=np.int64),
        np.array([7]),
        np.random.default_rng(1).integers(-5, 5, 1000),
        np.random.default_rng(2).integers(0, 10**15, 1000),
        np.array([True, False, True]),
        np.array([2.5, np.nan, 1.0, np.nan]),
        np.array(["b", "a", "b"], dtype=object),
    ],
)
def test_unique_agrees_with_numpy(values):
    got = unique(values)
    expected = np.unique(values)
    assert got.dtype == expected.dtype
    np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("codes", [np.array([], np.int64), np.array([-1, -1]), np.array([5]), None])
def test_pairs_sharing_code_are_the_self_join_of_each_code(codes):
    if codes is None:
        codes = np.random.default_rng(3).integers(-3, 40, 500)
    left, right = pairs_sharing_code(codes)
    expected = sorted(
        (i, j) for i in range(len(codes)) for j in range(i + 1, len(codes)) if codes[i] >= 0 and codes[i] == codes[j]
    )
    assert sorted(zip(left.tolist(), right.tolist(), strict=True)) == expected
    # By code, then left, then right.
    keys = list(zip(codes[left].tolist(), left.tolist(), right.tolist(), strict=True))
    assert keys == sorted(keys)


def test_take_rows_is_iloc_with_a_fresh_index():
    import pandas as pd

    from ci_pipeline.arrays import take_rows

    frame = pd.DataFrame(
        {"a": [1, 2, 3], "b": pd.array(["x", None, "z"], dtype="string"), "c": [0.5, 1.5, 2.5]}, index=[7, 8, 9]
    )
    rows = np.array([2, 0, 1, 0])
    pd.testing.assert_frame_equal(take_rows(frame, rows), frame.iloc[rows].reset_index(drop=True))
    assert take_rows(frame, np.array([], np.int64)).columns.tolist() == ["a", "b", "c"]


@pytest.mark.parametrize(
    "keys",
    [
        [np.array([], np.int64), np.array([], np.int64)],
        [np.random.default_rng(4).integers(-3, 3, 2000), np.random.default_rng(5).integers(0, 50, 2000)],
        # Ranges too wide to pack into one integer: the lexsort.
        [np.random.default_rng(6).integers(0, 2**40, 500), np.random.default_rng(7).integers(0, 2**40, 500)],
        # Two sorted runs end to end, as reused pairs after the pairs found anew.
        [np.r_[np.arange(0, 100, 3), np.arange(100)], np.r_[np.zeros(34, np.int64), np.ones(100, np.int64)]],
    ],
)
def test_stable_order_is_the_lexsort_of_the_keys(keys):
    np.testing.assert_array_equal(stable_order(keys), np.lexsort(keys[::-1]))


def test_pair_ids_name_an_unordered_pair_once_and_tell_pairs_apart():
    rng = np.random.default_rng(3)
    left, right = rng.integers(0, 50, 2000), rng.integers(0, 50, 2000)
    ids = pair_ids(left, right, 50)
    assert (ids == pair_ids(right, left, 50)).all()
    pairs = {(min(a, b), max(a, b)) for a, b in zip(left.tolist(), right.tolist(), strict=True)}
    assert len(np.unique(ids)) == len(pairs)
