"""Record-level reuse of scores (ci_pipeline.predictions.reuse) on tiny frames: what is computed again, and that the
result is what computing every row gives."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ci_pipeline.lake import Lake
from ci_pipeline.predictions.reuse import RowReuse, read_kept, write_kept


def features(values: dict[str, list[float]], channel: list[str]) -> pd.DataFrame:
    index = pd.Index(list(values), dtype="string", name="CustomerId")
    X = pd.DataFrame(np.array(list(values.values())), index=index, columns=["recency", "orders"])
    X["channel"] = pd.Categorical(channel, categories=["shop", "web"])
    return X


class Scorer:
    """A row-wise model: score and a reason per row; remembers which rows it was asked for."""

    def __init__(self):
        self.asked: list[list[str]] = []

    def __call__(self, X: pd.DataFrame) -> pd.DataFrame:
        self.asked.append(list(X.index))
        score = X["recency"].to_numpy() * 0.1 + X["orders"].to_numpy() / 3
        reason = ("orders " + X["orders"].astype(int).astype(str)).astype("string")
        return pd.DataFrame({"Score": score, "High": score > 1, "Reason1": reason}, index=X.index)


def kept_after(X: pd.DataFrame, lake: Lake, scorer: Scorer, digest="model-1", cutoff="2026-06-30") -> RowReuse:
    """Score ``X`` as one run does, keep its rows in ``lake``, and return the next run's reuse."""
    first = RowReuse(digest, {"k": 1}, cutoff=cutoff)
    first.apply(X, scorer)
    write_kept(lake, {"churn": first})
    kept, absent = read_kept(lake, ["churn"])
    assert absent == ""
    fingerprint, rows = kept["churn"]
    return RowReuse(digest, {"k": 1}, kept=rows, kept_fingerprint=fingerprint, cutoff=cutoff)


def test_only_new_and_changed_rows_are_computed_and_the_result_is_computing_everyone(tmp_path):
    lake = Lake.local(tmp_path)
    before = features({"a": [1, 2], "b": [3, 4], "c": [5, 6], "d": [7, 8]}, ["shop", "web", "web", "shop"])
    reuse = kept_after(before, lake, Scorer())
    # b's orders changed, c is gone, e is new, a and d unchanged (d now comes first: order does not matter).
    after = features({"d": [7, 8], "a": [1, 2], "b": [3, 5], "e": [9, 1]}, ["shop", "shop", "web", "web"])
    scorer = Scorer()
    out = reuse.apply(after, scorer)
    assert scorer.asked == [["b", "e"]]
    pd.testing.assert_frame_equal(out, Scorer()(after))
    assert reuse.report == {"reused": True, "customers": 4, "computed": 2}


def test_every_row_unchanged_still_gives_the_types_computing_gives(tmp_path):
    lake = Lake.local(tmp_path)
    X = features({"a": [1, 2], "b": [3, 4]}, ["shop", "web"])
    reuse = kept_after(X, lake, Scorer())
    scorer = Scorer()
    out = reuse.apply(X, scorer)
    assert scorer.asked == [["a"]]  # one row, for the types
    pd.testing.assert_frame_equal(out, Scorer()(X))


@pytest.mark.parametrize(
    "change",
    [
        {"digest": "model-2"},  # the model was retrained
        {"cutoff": "2026-07-01"},  # another run date
    ],
)
def test_another_model_or_cutoff_computes_every_row(tmp_path, change):
    lake = Lake.local(tmp_path)
    X = features({"a": [1, 2], "b": [3, 4]}, ["shop", "web"])
    reuse = kept_after(X, lake, Scorer())
    again = RowReuse(
        change.get("digest", "model-1"),
        {"k": 1},
        kept=reuse.kept,
        kept_fingerprint=reuse.kept_fingerprint,
        cutoff=change.get("cutoff", "2026-06-30"),
    )
    scorer = Scorer()
    again.apply(X, scorer)
    assert scorer.asked == [["a", "b"]]
    assert again.report["reused"] is False and "changed" in again.report["why_not"]


def test_new_category_levels_compute_every_row(tmp_path):
    lake = Lake.local(tmp_path)
    X = features({"a": [1, 2], "b": [3, 4]}, ["shop", "web"])
    reuse = kept_after(X, lake, Scorer())
    X["channel"] = X["channel"].cat.add_categories(["app"])
    scorer = Scorer()
    reuse.apply(X, scorer)
    assert scorer.asked == [["a", "b"]]


def test_no_state_or_a_damaged_one_computes_everyone_and_says_why(tmp_path):
    lake = Lake.local(tmp_path)
    kept, absent = read_kept(lake, ["churn"])
    assert kept == {} and "no state of an earlier run" in absent
    X = features({"a": [1, 2], "b": [3, 4]}, ["shop", "web"])
    kept_after(X, lake, Scorer())
    lake.write_bytes("ci_pipeline/_state/predictions/churn.parquet", b"not parquet")
    kept, absent = read_kept(lake, ["churn"])
    assert kept == {} and "unreadable" in absent
