"""Condition scores: swapped letters and ambiguous nicknames."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ci_pipeline.config.unify import Condition
from ci_pipeline.unify.compare import Prepared, score
from ci_pipeline.unify.normalize import Normalizer, alternative_nicknames, nicknames


def first_name_scores(pairs: list[tuple[str, str]]) -> list[float]:
    values = [v for pair in pairs for v in pair]
    prep = Prepared(pd.DataFrame({"first_name": pd.Series(values, dtype="string")}), Normalizer(), 25)
    left = np.arange(0, len(values), 2)
    cond = Condition(field="first_name", precision="high")
    return [round(float(s), 3) for s in score(prep, cond, left, left + 1)]


def test_swapped_letters_cost_one_edit():
    heather, jennifer = first_name_scores([("Heather", "Heahter"), ("Jennifer", "Jennifre")])
    assert heather == round(6 / 7, 3)
    assert jennifer == round(7 / 8, 3)


def test_nickname_of_two_formal_names_matches_either_but_they_differ():
    sam_samuel, sam_samantha, samuel_samantha, chris_christina = first_name_scores(
        [("Sam", "Samuel"), ("Sam", "Samantha"), ("Samuel", "Samantha"), ("Chris", "Christina")]
    )
    assert sam_samuel == 1.0 and sam_samantha == 1.0 and chris_christina == 1.0
    assert samuel_samantha < 0.8


def test_ambiguous_nicknames_have_an_alternative_reading():
    assert nicknames()["sam"] == "samuel"
    assert alternative_nicknames()["sam"] == "samantha"
    assert alternative_nicknames()["bob"] == "robert"
