"""Condition scores: swapped letters and ambiguous nicknames."""

from __future__ import annotations

import threading

import numpy as np
import pandas as pd

from ci_pipeline.config.unify import Condition
from ci_pipeline.unify.compare import Prepared, score, scores_json
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


def test_personal_phone_ignores_numbers_held_by_several_first_names():
    # 555-0001: Rob and Robert Smith (one first name once nicknames fold) and Mary Smith: the household's landline.
    # 555-0002: only Rob's records. 555-0003: one record with no first name.
    records = pd.DataFrame(
        {
            "first_name": ["Rob", "Robert", "Mary", "Robert", "Rob", None],
            "phone": ["555-010-0001", "(555) 010-0001", "555 010 0001", "555-010-0002", "555-010-0002", "555-010-0003"],
        },
        dtype="string",
    )
    prep = Prepared(records, Normalizer(), 25)
    personal = Condition(field="phone", allow_missing=True, normalize=["phone", "personal_phone"])
    assert prep.normalized(personal).tolist() == [pd.NA, pd.NA, pd.NA, "15550100002", "15550100002", "15550100003"]
    assert prep.shared[("phone", ("phone", "personal_phone"))] == {"15550100001": 2}
    # a landline against a mobile counts as missing (the condition holds); two personal numbers still differ
    sims = score(prep, personal, np.array([0, 3]), np.array([3, 5]))
    assert np.isnan(sims[0]) and sims[1] == 0.0
    # the plain phone normalization is untouched
    assert prep.normalized(Condition(field="phone")).isna().sum() == 0


def test_warming_gives_the_columns_codes_and_notes_computed_when_first_asked(monkeypatch):
    rng = np.random.default_rng(5)
    n = 400
    firsts = np.array(["Rob", "Robert", "Mary", "Jennifer", "Jenny", None], dtype=object)
    records = pd.DataFrame(
        {
            "first_name": rng.choice(firsts, n),
            "last_name": rng.choice(np.array(["Smith", "smith ", "Nguyen", "O'Brien", None], dtype=object), n),
            # One address on most records: over the frequency cap, so masked and noted.
            "email": np.where(rng.random(n) < 0.5, "info@shop.example", [f"p{i}@mail.example" for i in range(n)]),
            "phone": rng.choice(np.array(["555-010-0001", "555 010 0002", "(555) 010-0003", None], dtype=object), n),
        },
        dtype="string",
    )
    # The phone numbers first: they take longest, so the e-mail addresses are noted first unless put in order.
    conds = [
        Condition(field="phone"),
        Condition(field="phone", allow_missing=True, normalize=["phone", "personal_phone"]),
        Condition(field="email"),
        Condition(field="last_name", precision="medium"),
        Condition(field="first_name", precision="high"),
        Condition(field="first_name", normalize=["name_plain"]),
    ]
    lazy = Prepared(records, Normalizer(), 25)
    expected = [(lazy.normalized(c), lazy.codes(c)) for c in conds]
    threads = []
    monkeypatch.setattr("ci_pipeline.side_by_side.os.cpu_count", lambda: 2)  # threads on any machine
    warm = Prepared(records, Normalizer(), 25)
    original = Prepared.codes

    def noted(self, cond):
        threads.append(threading.current_thread().name)
        return original(self, cond)

    monkeypatch.setattr(Prepared, "codes", noted)
    warm.warm(conds)
    assert any(name.startswith("unify-normalize") for name in threads)
    for cond, (values, codes) in zip(conds, expected, strict=True):
        pd.testing.assert_series_equal(warm.normalized(cond), values)
        np.testing.assert_array_equal(warm.codes(cond), codes)
    assert len(lazy.frequent) == 2 and list(warm.frequent.items()) == list(lazy.frequent.items())
    assert lazy.shared and list(warm.shared.items()) == list(lazy.shared.items())
    # The fields in whatever order the threads finish them: the notes still in the order of the conditions.
    monkeypatch.setattr("ci_pipeline.unify.compare.each", lambda work, items, *_: [work(i) for i in list(items)[::-1]])
    backwards = Prepared(records, Normalizer(), 25)
    backwards.warm(conds)
    assert list(backwards.frequent.items()) == list(lazy.frequent.items())


def _python_scores_json(names: list[str], scores: list[np.ndarray]) -> list[str]:
    """The text a pair's scores had before they were written in Arrow: ``str()`` of each score rounded."""
    heads = [f'"{name}": ' for name in names]
    texts = [["null" if v != v else str(v) for v in np.round(s, 3).tolist()] for s in scores]
    rows = zip(*texts, strict=True)
    return ["{" + ", ".join(h + t for h, t in zip(heads, parts, strict=True)) + "}" for parts in rows]


def test_scores_are_written_as_str_writes_each_rounded_score():
    rng = np.random.default_rng(3)
    n = 5000
    edge = [0.0, -0.0, -0.0004, 0.0005, 0.9995, 1.0, -1.0, 1.5, 123456.789, 1e20, np.inf, -np.inf, np.nan]
    first = np.concatenate([edge, rng.random(n - len(edge))])
    second = np.where(rng.random(n) < 0.3, np.nan, rng.random(n))
    third = np.round(rng.random(n), 2)
    names = ["email", "first_name", "first_name_2"]
    written = scores_json(names, [first, second, third], n)
    assert written.dtype == "string"
    assert written.tolist() == _python_scores_json(names, [first, second, third])
    assert scores_json(["email"], [first], n).tolist() == _python_scores_json(["email"], [first])
    assert [w.split(", ")[0] for w in written[:3]] == ['{"email": 0.0', '{"email": -0.0', '{"email": -0.0']
    assert scores_json(["email"], [first[:0]], 0).tolist() == []
    assert scores_json([], [], 3).tolist() == ["{}"] * 3


def test_shared_values_count_the_first_names_holding_each_value():
    from ci_pipeline.unify.normalize import shared_values

    values = pd.Series(["555", "555", "555", "777", "777", None, "888"], dtype="string")
    names = pd.Series(["ann", "bob", "bob", "cy", "cy", "dee", None], dtype="string")
    found = shared_values(values, names)
    # 555 is held by two names; 777 by one name twice; a missing value or a missing name counts for nothing.
    assert found.to_dict() == {"555": 2}
    assert shared_values(values.iloc[:0], names.iloc[:0]).empty


def test_rule_statistics_per_stage_and_rule_in_the_order_they_first_appear():
    from ci_pipeline.unify.engine import _rule_stats

    pairs = pd.DataFrame(
        {
            "left": [0, 1, 2, 3, 4, 5],
            "right": [1, 2, 3, 3, 5, 6],
            "stage": pd.Series(["match", "dedup", "match", "attach", "match", "match"], dtype="string"),
            "rule_name": pd.Series(["email", "name", "email", "namesake", "phone", None], dtype="string"),
            "accepted": [True, True, False, False, True, True],
            "linked": [True, False, False, False, True, True],
        }
    )
    # A record paired with itself (an attach outcome) is no candidate; a pair with no rule name is not counted.
    assert _rule_stats(pairs) == [
        {"stage": "match", "rule": "email", "candidates": 2, "accepted": 1, "linked": 1},
        {"stage": "dedup", "rule": "name", "candidates": 1, "accepted": 1, "linked": 0},
        {"stage": "match", "rule": "phone", "candidates": 1, "accepted": 1, "linked": 1},
    ]


def test_fuzzy_scores_are_per_pair_though_computed_once_per_distinct_pair_of_values():
    from rapidfuzz.distance import OSA

    streets = ["12 Oak St", "12 Oak Street", "12 Oka St", None, "9 Elm Rd", "12 Oak St"]
    prep = Prepared(pd.DataFrame({"street": pd.Series(streets, dtype="string")}), Normalizer(), 25)
    cond = Condition(field="street", precision="high", normalize=["case"])
    # The same value pairs in both orders and several times over, a missing value, equal values.
    left = np.array([0, 1, 0, 2, 5, 0, 3, 4, 5])
    right = np.array([1, 0, 1, 0, 1, 5, 0, 2, 2])
    sims = score(prep, cond, left, right)
    norm = prep.normalized(cond)
    expected = [
        0.0 if pd.isna(norm[i]) or pd.isna(norm[j]) else OSA.normalized_similarity(norm[i], norm[j])
        for i, j in zip(left.tolist(), right.tolist(), strict=True)
    ]
    # rapidfuzz's bulk call gives float32 similarities
    assert sims.tolist() == np.asarray(expected, np.float32).astype(np.float64).tolist()
    assert sims[5] == 1.0 and sims[6] == 0.0 and sims[0] == sims[2] == sims[4]


def test_a_blocking_key_is_one_number_per_whole_key_made_once_and_made_again_after_a_mask():
    records = pd.DataFrame(
        {
            "last_name": ["Smith", "Smith", "Smith", "Jones", None, "Jones"],
            "postal_code": ["02139", "02139", "10001", "02139", "02139", "02139"],
        },
        dtype="string",
    )
    prep = Prepared(records, Normalizer(), 25)
    conds = [Condition(field="last_name"), Condition(field="postal_code")]
    key = prep.block_key(conds)
    # Equal keys exactly where both values are equal; a missing value has no block.
    assert key[4] == -1 and (key[[0, 1, 2, 3, 5]] >= 0).all()
    assert key[0] == key[1] and key[3] == key[5]
    assert len({key[0], key[2], key[3]}) == 3
    # Every rule blocking on the same fields gets the same array.
    assert prep.block_key(list(conds)) is key
    # One field alone: its codes are the key.
    assert prep.block_key(conds[:1]) is prep.codes(conds[0])
    # Masking a value (as too frequent) makes the key again without it.
    prep.mask(conds[0], ["smith"])
    masked = prep.block_key(conds)
    assert masked is not key
    assert (masked[[0, 1, 2, 4]] == -1).all() and masked[3] == masked[5] >= 0
