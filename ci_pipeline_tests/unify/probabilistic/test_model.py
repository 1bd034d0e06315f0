"""Training and scoring: EM recovers known m and u, term-frequency adjustment, determinism, serialisation, and
the bad inputs (non-convergence, insane fits, null or constant fields, a model from other settings)."""

from __future__ import annotations

import dataclasses
import json
import threading
import warnings

import numpy as np
import pandas as pd
import pytest

from ci_pipeline.errors import UserError
from ci_pipeline.grammar.comparisons import DATE_LEVELS, bands
from ci_pipeline.unify.probabilistic import (
    ConvergenceWarning,
    DateComparison,
    ExactMatch,
    IdentifierComparison,
    Model,
    NameComparison,
    PlaceComparison,
    Settings,
    SettingsError,
    TrainingError,
    clusters,
    explain_pair,
    predict,
    prepare,
    train,
    training_notes,
)
from ci_pipeline.unify.probabilistic import model as model_module
from ci_pipeline.unify.probabilistic.blocking import BlockingRule
from ci_pipeline.unify.probabilistic.model import (
    ComparisonParameters,
    NoPersonFit,
    Stratum,
    _frequencies,
    _judge_fit,
    _Patterns,
    _stratum_insanity,
    _support,
    _with_main_m,
    exact_first,
    monotone,
)

#: Probability that a duplicate keeps each field (the true m of exact agreement) and each field's vocabulary.
KEEP = {"a": 0.95, "b": 0.9, "c": 0.8, "d": 0.7}
VOCABULARY = {"a": 1000, "b": 500, "c": 60, "d": 20}


def synthetic(people: int = 3000, seed: int = 1) -> tuple[pd.DataFrame, np.ndarray]:
    """Each person has two records; a duplicate field is replaced by a random vocabulary value with 1 - KEEP."""
    rng = np.random.default_rng(seed)
    data, person = {}, np.repeat(np.arange(people), 2)
    for field, size in VOCABULARY.items():
        original = rng.integers(0, size, people)
        values = np.repeat(original, 2)
        changed = (np.arange(2 * people) % 2 == 1) & (rng.random(2 * people) > KEEP[field])
        values[changed] = rng.integers(0, size, changed.sum())
        data[field] = pd.array([f"{field}{v}" for v in values], dtype="string")
    return pd.DataFrame(data), person


def exact_settings(**options) -> Settings:
    return Settings(
        comparisons=tuple(ExactMatch(f) for f in KEEP),
        blocking=tuple(BlockingRule.parse(r, "blocking") for r in (["a", "b"], ["a", "c"], ["b", "c"], ["c", "d"])),
        **options,
    )


def test_em_recovers_known_m_and_u():
    records, _ = synthetic()
    model = train(records, exact_settings())
    assert model.converged
    for params in model.parameters:
        field = params.name
        # Agreement on a kept field, or on a replaced one by chance: KEEP + (1 - KEEP) / size.
        true_m = KEEP[field] + (1 - KEEP[field]) / VOCABULARY[field]
        assert params.m[0] == pytest.approx(true_m, abs=0.03), field
        assert params.u[0] == pytest.approx(1 / VOCABULARY[field], rel=0.15), field


def test_exact_agreement_is_held_at_least_as_likely_among_matches_as_each_difference_but_the_last():
    # Levels EM gave more than exact are pooled with it: the maximum-likelihood shares under that order.
    assert np.allclose(exact_first(np.array([0.1, 0.5, 0.4, 0.0])), [1 / 3, 1 / 3, 1 / 3, 0.0])
    assert np.allclose(exact_first(np.array([0.002, 0.0004, 0.6, 0.02, 0.3778])), [0.301, 0.0004, 0.301, 0.02, 0.3778])
    # In order already, or only the last level (else) above exact: unchanged.
    for m in ([0.6, 0.3, 0.05, 0.05], [0.2, 0.1, 0.7], [0.4, 0.6]):
        assert np.array_equal(exact_first(np.array(m)), m)
    pooled = exact_first(np.array([0.05, 0.3, 0.25, 0.2, 0.2]))
    assert np.isclose(pooled.sum(), 1.0) and pooled[0] >= pooled[1:-1].max()


def test_em_on_a_seeded_sample_of_the_blocked_pairs_estimates_what_all_of_them_give():
    records, _ = synthetic()
    everything = train(records, exact_settings())
    blocked = everything.training["blocked_pairs"]
    sampled = train(records, exact_settings(em_sample_pairs=blocked // 3))
    assert everything.training["em_pairs"] == blocked and sampled.training["em_pairs"] == blocked // 3
    assert train(records, exact_settings(em_sample_pairs=blocked // 3)).to_dict() == sampled.to_dict()
    for full, part in zip(everything.parameters, sampled.parameters, strict=True):
        assert part.m[0] == pytest.approx(full.m[0], abs=0.02), full.name
    # Expected matches are counted over every blocked pair, not only the sample's.
    assert sampled.prior == pytest.approx(everything.prior, rel=0.1)
    with pytest.raises(SettingsError, match="em_sample_pairs: 0 must be a whole number of 1 or more"):
        exact_settings(em_sample_pairs=0)


def test_scoring_finds_the_duplicates_and_clusters_them():
    records, person = synthetic()
    model = train(records, exact_settings())
    scored = predict(model, records)
    # Links from a probability of 0.9 on are nearly all right; the default threshold (0.5) trades some for recall.
    linked = scored[scored["match_probability"] >= 0.9]
    truth = person[linked["left"]] == person[linked["right"]]
    assert truth.mean() > 0.99
    assert scored["link"].sum() > len(linked)
    # A duplicate that lost two of its four fields holds too little evidence: about one in eight.
    assert truth.sum() / (len(person) // 2) > 0.8
    label, density = clusters(len(records), linked)
    assert (label[0::2] == label[1::2]).mean() > 0.8
    assert set(density.columns) == {"cluster", "size", "links", "density"}
    assert (density["density"] <= 1).all()


def test_clusters_report_density():
    links = pd.DataFrame({"left": [0, 1, 4, 4, 5], "right": [1, 2, 5, 6, 6]})
    label, density = clusters(8, links)
    assert label.tolist() == [0, 0, 0, 3, 4, 4, 4, 7]
    rows = density.set_index("cluster")
    # A chain of three (2 links of 3 possible) and a triangle (3 of 3).
    assert rows.loc[0, "density"] == pytest.approx(2 / 3)
    assert rows.loc[4, "density"] == 1.0
    assert 3 not in rows.index


def test_same_input_same_weights():
    records, _ = synthetic(people=800)
    first = train(records, exact_settings())
    second = train(records, exact_settings())
    assert first.to_dict() == second.to_dict()
    a, b = predict(first, records), predict(second, records)
    pd.testing.assert_frame_equal(a, b)


@pytest.mark.parametrize("shuffled", [False, True])
def test_scoring_touched_records_beside_kept_levels_scores_as_scoring_every_pair(shuffled):
    """The pairs of untouched records handed in with their levels (in order, or in any order with some the other
    way round), the others blocked and compared: the same pairs, levels, rules and weights as scoring everything."""
    from ci_pipeline.unify.probabilistic.scoring import Candidates, score_pairs
    from ci_pipeline.unify.probabilistic.table import prepare

    records, _ = synthetic(people=600, seed=4)
    model = train(records, exact_settings())
    table = prepare(records, list(KEEP))
    everything = score_pairs(model, table)
    rng = np.random.default_rng(9)
    touched = rng.random(len(records)) < 0.1
    pairs = everything.pairs
    rows = np.flatnonzero(~touched[pairs.left] & ~touched[pairs.right])
    left, right = pairs.left[rows], pairs.right[rows]
    if shuffled:
        rows = rng.permutation(rows)
        left, right = pairs.left[rows], pairs.right[rows]
        turned = rng.random(len(rows)) < 0.3
        left, right = np.where(turned, right, left), np.where(turned, left, right)
    kept = Candidates(left, right, pairs.rule[rows], pairs.gamma[rows].copy())
    if shuffled:
        kept.gamma[turned] = 99  # levels of a pair turned round are not trusted: it is compared again
    again = score_pairs(model, table, touched=touched, kept=kept)
    assert 0 < len(rows) < len(pairs.left)
    for name in ("left", "right", "rule", "gamma"):
        np.testing.assert_array_equal(getattr(again.pairs, name), getattr(pairs, name), err_msg=name)
    np.testing.assert_array_equal(again.weight, everything.weight)
    np.testing.assert_array_equal(again.link, everything.link)


def test_term_frequency_adjustment_weighs_rare_values_more():
    records, _ = synthetic(people=1500)
    rng = np.random.default_rng(3)
    # A surname per person, kept by the duplicate: "smith" for a fifth of the people, every other one rare.
    surnames = np.where(rng.random(1500) < 0.2, "smith", np.char.add("name", np.arange(1500).astype(str)))
    records["last"] = pd.array(np.repeat(surnames, 2), dtype="string")
    smith = int(np.flatnonzero(surnames == "smith")[0])
    rare = int(np.flatnonzero(surnames != "smith")[0])
    comparisons = (*exact_settings().comparisons, NameComparison("last", term_frequency=True))
    model = train(records, Settings(comparisons, exact_settings().blocking))
    common_pair = explain_pair(model, records, 2 * smith, 2 * smith + 1).set_index("comparison")
    rare_pair = explain_pair(model, records, 2 * rare, 2 * rare + 1).set_index("comparison")
    counts = records["last"].value_counts()
    assert common_pair.loc["last", "level"] == rare_pair.loc["last", "level"] == "exact"
    # Each weighs log2(m / f), f the chance that another record holds the value: those holding it but the pair's
    # first one, over all records but that one.
    m = model.parameters[-1].m[0]
    for pair, value in ((common_pair, "smith"), (rare_pair, surnames[rare])):
        share = (counts[value] - 1) / (len(records) - 1)
        assert pair.loc["last", "weight"] == pytest.approx(np.log2(m / share))
    # Without the adjustment both would weigh log2(m / u); the waterfall says how much of the weight the value's
    # frequency makes.
    plain = model.parameters[-1].weights[0]
    assert common_pair.loc["last", "weight"] < plain < rare_pair.loc["last", "weight"]
    for pair in (common_pair, rare_pair):
        assert pair.loc["last", "term_frequency"] == pytest.approx(pair.loc["last", "weight"] - plain)
        assert pair.drop(index=["prior", "total", "last"])["term_frequency"].isna().all()


def test_a_stratum_adjusts_for_term_frequency_on_its_own_names_not_on_its_places():
    from ci_pipeline.unify.probabilistic.scoring import _adjustment

    records = pd.DataFrame(
        {
            "last": ["lee", "lee", "lee", "wu"],
            "street": ["1 elm st", "1 elm st", "2 oak st", "2 oak st"],
            "city": ["york", "york", "york", "york"],
        },
        dtype="string",
    )
    name = NameComparison("last", term_frequency=True)
    place = PlaceComparison("street", then=("city",), term_frequency=True)
    table = prepare(records, ["last", "street", "city"])
    params = ComparisonParameters("x", ("exact", "else"), (0.9, 0.1), (0.5, 0.5))
    by_name = Stratum((("last",),), 0.5, (params,), 3)
    by_street = Stratum((("street",),), 0.5, (params,), 2)
    # Three of the four hold "lee": 3 * 2 ordered pairs of 4 * 3.
    assert _adjustment(by_name, params, name, table) == pytest.approx(0.5)
    assert np.isnan(_adjustment(by_street, params, place, table))


def test_term_frequencies_of_values_each_held_by_one_person_count_no_stranger():
    # Every surname is one person's, on both of their records: agreeing on it weighs what one other record in all
    # holding it would, the least the adjustment counts (counting the pair's first record in, it weighed as if two
    # did). The plain weight, from u without the matches among the random pairs, is far higher: the adjustment
    # counts the pair's own other record, which the u of non-matches leaves out.
    records, _ = synthetic(people=1500)
    records["last"] = pd.array(np.repeat([f"name{i}" for i in range(1500)], 2), dtype="string")
    comparisons = (*exact_settings().comparisons, NameComparison("last", term_frequency=True))
    model = train(records, Settings(comparisons, exact_settings().blocking))
    pair = explain_pair(model, records, 10, 11).set_index("comparison")
    assert pair.loc["last", "level"] == "exact"
    m = model.parameters[-1].m[0]
    assert pair.loc["last", "weight"] == pytest.approx(np.log2(m * (len(records) - 1)))


def test_explain_pair_adds_up_to_the_predicted_weight():
    records, _ = synthetic(people=500)
    model = train(records, exact_settings())
    scored = predict(model, records).iloc[0]
    waterfall = explain_pair(model, records, int(scored["left"]), int(scored["right"]))
    assert waterfall["comparison"].tolist() == ["prior", "a", "b", "c", "d", "total"]
    assert waterfall["weight"].iloc[:-1].sum() == pytest.approx(scored["match_weight"])
    assert waterfall["weight"].iloc[-1] == pytest.approx(scored["match_weight"])


def test_model_round_trips_through_json():
    records, _ = synthetic(people=500)
    model = train(records, exact_settings())
    again = Model.from_dict(json.loads(json.dumps(model.to_dict())))
    assert again == model
    pd.testing.assert_frame_equal(predict(again, records), predict(model, records))


def test_a_model_from_other_settings_is_refused():
    records, _ = synthetic(people=500)
    model = train(records, exact_settings())
    changed = Settings(
        comparisons=(*model.settings.comparisons[:3], NameComparison("d")),
        blocking=model.settings.blocking,
    )
    with pytest.raises(SettingsError, match=r"'d' changed\): retrain the model"):
        predict(model, records, settings=changed)
    # Blocking and threshold may change without retraining.
    looser = Settings(model.settings.comparisons, model.settings.blocking[:1], threshold=0.5)
    assert len(predict(model, records, settings=looser)) > 0
    with pytest.raises(UserError, match="layout"):
        Model.from_dict({**model.to_dict(), "format": 99})


def test_em_that_does_not_converge_warns_with_its_trace_and_keeps_sane_parameters():
    records, _ = synthetic(people=500)
    with pytest.warns(ConvergenceWarning, match=r"did not converge after 1 iteration.*match share per iteration"):
        model = train(records, exact_settings(max_iterations=1))
    assert not model.converged
    assert len(model.trace) == 1


def test_an_insane_fit_is_a_clear_error_naming_the_comparison():
    records, _ = synthetic(people=1000)
    # The two records of a person never share "side"; two random records share it half of the time.
    records["side"] = pd.array(["left", "right"] * 1000, dtype="string")
    settings = Settings(
        comparisons=(*exact_settings().comparisons, IdentifierComparison("side")),
        blocking=exact_settings().blocking,
    )
    with pytest.raises(TrainingError, match=r"not sane: exact agreement on 'side'.*few or no duplicates"):
        train(records, settings)
    # A field that describes rather than identifies (an employer: two payroll forms of one person name two) may
    # well differ between one person's records: switched off with a warning, the others trained.
    settings = dataclasses.replace(settings, comparisons=(*exact_settings().comparisons, ExactMatch("side")))
    with pytest.warns(UserWarning, match=r"exact agreement on column 'side' came out rarer among one person's"):
        model = train(records, settings)
    assert [p.name for p in model.parameters if not p.active] == ["side"]


def level_shares(c, exact: float, other: float) -> np.ndarray:
    """Probabilities of ``c``'s levels: ``exact`` for the first, ``other`` for the last (else), the rest shared."""
    rest = (1 - exact - other) / (len(c.levels) - 2)
    return np.r_[exact, [rest] * (len(c.levels) - 2), other]


def test_a_match_class_that_agrees_on_no_name_is_refused_as_no_person():
    # What EM found in a census file without duplicates: a class of people of one sex and town, whose names agree
    # no more often than strangers' do. Every weight is "sane" (agreement is rarer among random pairs), yet linking
    # by it would join strangers.
    first, last, sex = NameComparison("first"), NameComparison("last"), ExactMatch("sex")
    comparisons = [first, last, sex]

    u = [level_shares(first, 0.002, 0.97), level_shares(last, 0.0005, 0.98), np.r_[0.5, 0.5]]
    no_person = [level_shares(first, 0.18, 0.77), level_shares(last, 0.007, 0.985), np.r_[1.0, 1e-9]]
    with pytest.raises(TrainingError, match=r"differ entirely in every name more often than they agree.*'first'"):
        _judge_fit(comparisons, no_person, u, np.ones(3, bool), [None] * 3, [], True, 1e-5)
    # Households taken for matches still agree on the surname: not refused here (the strata weigh them).
    households = [level_shares(first, 0.3, 0.56), level_shares(last, 0.9, 0.05), np.r_[0.6, 0.4]]
    _judge_fit(comparisons, households, u, np.ones(3, bool), [None] * 3, [], True, 1e-5)


def test_a_match_class_under_other_names_that_agrees_on_the_birth_date_is_one_person():
    # A sanctions list linked to another: each person is listed under several aliases, so one person's records
    # differ entirely in both names more often than they agree, and agree on the birth date (m exact 0.76 there).
    first, last, born = NameComparison("first"), NameComparison("last"), DateComparison("born")
    comparisons = [first, last, born]

    u = [level_shares(first, 0.007, 0.95), level_shares(last, 0.0014, 0.97), level_shares(born, 0.0009, 0.8)]
    aliases = [level_shares(first, 0.33, 0.4), level_shares(last, 0.09, 0.7), level_shares(born, 0.76, 0.1)]
    _judge_fit(comparisons, aliases, u, np.ones(3, bool), [None] * 3, [], True, 1e-5)
    _judge_fit(comparisons, aliases, u, np.ones(3, bool), [None] * 3, [], True, 1e-5, strict=True)
    # Agreeing on the birth date for fewer than half of its pairs, the class is no person's (a cohort of one town).
    cohort = [level_shares(first, 0.33, 0.4), level_shares(last, 0.09, 0.7), level_shares(born, 0.3, 0.4)]
    with pytest.raises(TrainingError, match="differ entirely in every name"):
        _judge_fit(comparisons, cohort, u, np.ones(3, bool), [None] * 3, [], True, 1e-5)


def test_a_match_class_drawn_to_a_shared_field_is_fitted_again_without_it(monkeypatch):
    # On a register of foreigners (86% of one country; copies with typos in both names and the year) EM's class
    # with the country compared was the pairs of one country, not one person's records; without it, the fit is
    # sane. Such a field is tried without, one at a time, and the first sane fit kept with a warning.
    records, person = synthetic(people=1000)
    judge = model_module._judge_fit
    settings = exact_settings()
    shared = [c.name for c in settings.comparisons].index("d")

    def drawn_while_shared_compared(comparisons, m, u, active, *rest):
        if active[shared]:
            raise NoPersonFit("its matches differ entirely in every name")
        return judge(comparisons, m, u, active, *rest)

    monkeypatch.setattr(model_module, "_judge_fit", drawn_while_shared_compared)
    with pytest.warns(UserWarning, match=r"column 'd' is not compared: with it, EM's match class was the pairs"):
        model = train(records, settings)
    assert [p.name for p in model.parameters if not p.active] == ["d"]
    scored = predict(model, records)
    links = scored[scored["link"]]
    assert (person[links["left"]] == person[links["right"]]).mean() > 0.95
    # Where no field taken out gives a sane fit, the first refusal stands.
    monkeypatch.setattr(model_module, "_judge_fit", lambda *a: (_ for _ in ()).throw(NoPersonFit("no person")))
    with pytest.raises(NoPersonFit, match="no person"):
        train(records, settings)


def test_a_match_class_drawn_to_either_of_two_shared_fields_is_fitted_again_without_both(monkeypatch):
    # On that register with its region code mapped too, EM's class was the pairs of one country with the region
    # compared, and of one region with the country compared: only without both is the fit sane.
    records, person = synthetic(people=1000)
    judge = model_module._judge_fit
    settings = dataclasses.replace(
        exact_settings(), comparisons=(NameComparison("a"), NameComparison("b"), ExactMatch("c"), ExactMatch("d"))
    )

    def drawn_while_either_compared(comparisons, m, u, active, *rest):
        if active[2] or active[3]:
            raise NoPersonFit("its matches differ entirely in every name")
        return judge(comparisons, m, u, active, *rest)

    monkeypatch.setattr(model_module, "_judge_fit", drawn_while_either_compared)
    with pytest.warns(UserWarning) as caught:
        model = train(records, settings)
    told = [str(w.message) for w in caught]
    for column in "cd":
        assert [t for t in told if t.startswith(f"column '{column}' is not compared") and "without c, d the fit" in t]
    assert [p.name for p in model.parameters if not p.active] == ["c", "d"]
    links = predict(model, records).query("link")
    assert (person[links["left"]] == person[links["right"]]).mean() > 0.95
    # Every comparison one several people share: none is left to fit without them all, so the refusal stands.
    monkeypatch.setattr(model_module, "_judge_fit", lambda *a: (_ for _ in ()).throw(NoPersonFit("no person")))
    with pytest.raises(NoPersonFit, match="no person"):
        train(records, exact_settings())


def test_a_place_shared_more_by_a_strata_namesakes_than_by_one_persons_records_leaves_its_fit_sane():
    # Within pairs of one name, namesakes may share a place (a father and son at one address, people of one name
    # born in one town) that one person's records, kept across a move, do not: as for a describing field, that
    # alone does not make the fit insane. An identifier agreeing so still does.
    first = NameComparison("first")
    place = PlaceComparison("town", then=("country",))
    ident = IdentifierComparison("ssn")
    comparisons = [first, place, ident]

    def levels(c, exact):  # the other levels share the rest alike
        return level_shares(c, exact, (1 - exact) / (len(c.levels) - 1))

    u = [levels(first, 0.01), levels(place, 0.3), levels(ident, 0.001)]
    m = [levels(first, 0.9), levels(place, 0.1), levels(ident, 0.8)]
    active, bound = np.ones(3, bool), [False] * 3
    assert _stratum_insanity(comparisons, (0.5, m, u, []), active, bound, u) is None
    m[2] = levels(ident, 0.0001)
    assert "'ssn'" in _stratum_insanity(comparisons, (0.5, m, u, []), active, bound, u)


def test_a_level_no_pair_reaches_in_training_weighs_nothing():
    # Whole birth dates only: no pair reaches same_year (a date known in part). From smoothing alone its m and u
    # differ by the sizes of the two samples, and a stored model meeting a year of birth alone later would have
    # taken two records of one year for a near-exact date.
    rng = np.random.default_rng(3)
    people = 600
    born = [f"19{rng.integers(40, 99)}-{rng.integers(1, 13):02d}-{rng.integers(1, 29):02d}" for _ in range(people)]
    first = rng.choice(["ann", "bob", "cy", "dee", "eve", "fay", "gus", "hal"], people)
    last = [f"name{i}" for i in rng.integers(0, 200, people)]
    frame = pd.DataFrame({"first": first, "last": last, "born": born}, dtype="string")
    records = pd.concat([frame, frame.assign(first=frame["first"] + "x")], ignore_index=True)
    settings = Settings(
        comparisons=(NameComparison("first"), NameComparison("last"), DateComparison("born")),
        blocking=tuple(BlockingRule.parse(r, "blocking") for r in (["last", "born"], ["first", "last"], ["born"])),
    )
    model = train(records, settings)
    dates = next(p for p in model.parameters if p.name == "born")
    level = dates.levels.index("same_year")
    assert dates.m[level] == dates.u[level]
    # Levels the data reach keep their weights.
    exact = dates.levels.index("exact")
    assert dates.m[exact] > 100 * dates.u[exact]


def test_a_stratum_keeps_its_own_m_only_of_the_comparisons_most_of_its_matches_know():
    # Two pattern rows of a stratum: 90 pairs agreeing on both comparisons, 10 agreeing on the first with the second
    # unknown on one side. All of them matches: the first comparison is known on all 100, the second on 90.
    patterns = np.array([[0, 0], [0, -1]])
    m = [np.r_[0.9, 0.1], np.r_[0.8, 0.2]]
    u = [np.r_[0.01, 0.99], np.r_[0.01, 0.99]]
    support = _support(patterns, np.r_[90.0, 10.0], 0.999999, m, u, np.ones(2, bool))
    assert support == pytest.approx([100, 90], rel=1e-4)
    # A stratum of 1,000 pairs, 100 of them matches; the birth date known on both sides of 30 of them (the payroll
    # file holds none): its m of the birth date comes from those few, and the main fit's is taken instead.
    own = (
        ComparisonParameters("first", ("exact", "else"), (0.95, 0.05), (0.01, 0.99)),
        ComparisonParameters("born", ("exact", "else"), (0.05, 0.95), (0.01, 0.99)),
    )
    stratum = Stratum((("email",),), 0.1, own, 1000, True, (100.0, 30.0))
    main = [np.r_[0.9, 0.1], np.r_[0.7, 0.3]]
    mended = _with_main_m(stratum, main)
    assert mended.parameters[0] == own[0]
    assert mended.parameters[1].m == (0.7, 0.3) and mended.parameters[1].u == own[1].u
    assert _with_main_m(dataclasses.replace(stratum, support=(100.0, 60.0)), main) == stratum


def test_training_notes_collect_this_threads_training_warnings_and_nothing_else():
    records, _ = synthetic(people=500)
    records["same"] = pd.array(["x"] * len(records), dtype="string")
    settings = Settings(
        comparisons=(*exact_settings().comparisons, ExactMatch("same")), blocking=exact_settings().blocking
    )
    with warnings.catch_warnings(record=True) as escaped:
        warnings.simplefilter("always")
        with training_notes() as notes:
            # Another step warning on its own thread meanwhile keeps its warning (a process-wide catch took it).
            other = threading.Thread(target=lambda: warnings.warn("another step's warning", UserWarning, stacklevel=1))
            other.start()
            other.join()
            train(records, settings)
    assert any("'same' holds the same value in every record" in n for n in notes)
    assert not any("another step" in n for n in notes)
    assert [str(w.message) for w in escaped] == ["another step's warning"]  # training's went to the notes only


def test_a_field_null_or_constant_everywhere_carries_no_evidence():
    records, _ = synthetic(people=500)
    records["empty"] = pd.array([None] * len(records), dtype="string")
    records["same"] = pd.array(["x"] * len(records), dtype="string")
    settings = Settings(
        comparisons=(*exact_settings().comparisons, ExactMatch("empty"), ExactMatch("same")),
        blocking=exact_settings().blocking,
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = train(records, settings)
    messages = [str(w.message) for w in caught]
    assert any("'empty' is null in every record" in m for m in messages)
    assert any("'same' holds the same value in every record" in m for m in messages)
    by_name = {p.name: p for p in model.parameters}
    assert not by_name["empty"].active and not by_name["same"].active
    assert (by_name["empty"].weights == 0).all()
    assert model.parameters[0].active


def test_a_field_agreeing_as_often_for_non_matches_carries_no_evidence():
    records, _ = synthetic(people=1000)
    rng = np.random.default_rng(5)
    # Originals all "us", duplicates "us" 60% of the time: matches agree less often (0.6) than random pairs (0.68).
    country = np.where((np.arange(2000) % 2 == 0) | (rng.random(2000) < 0.6), "us", "ca")
    records["country"] = pd.array(country, dtype="string")
    settings = Settings((*exact_settings().comparisons, ExactMatch("country")), exact_settings().blocking)
    with pytest.warns(UserWarning, match=r"exact agreement on column 'country' is about as likely for non-matches"):
        model = train(records, settings)
    assert not model.parameters[-1].active
    assert "carries no evidence" in model.parameters[-1].note


def test_no_comparison_with_evidence_is_an_error():
    records = pd.DataFrame({"a": ["x"] * 10, "b": pd.array([None] * 10, dtype="string")}, dtype="string")
    settings = Settings((ExactMatch("a"), ExactMatch("b")), (BlockingRule.parse("a", "b"),))
    with pytest.raises(TrainingError, match="no comparison carries evidence"):
        train(records, settings)


def test_labelled_pairs_seed_m_and_bad_labels_are_named():
    records, _ = synthetic(people=500)
    labels = pd.DataFrame({"left": [0, 2, 4], "right": [1, 3, 5], "match": [True, True, True]})
    model = train(records, exact_settings(), labels=labels)
    assert model.converged
    with pytest.raises(UserError, match=r"labelled pair row 1: \(2, 2000\)"):
        train(records, exact_settings(), labels=pd.DataFrame({"left": [0, 2], "right": [1, 2000], "match": [1, 1]}))


def test_a_comparison_every_blocking_rule_reads_cannot_be_trained():
    records, _ = synthetic(people=300)
    settings = Settings(
        comparisons=tuple(ExactMatch(f) for f in KEEP),
        blocking=(BlockingRule.parse(["a", "b"], "b0"), BlockingRule.parse(["a", "c"], "b1")),
    )
    with pytest.raises(
        TrainingError, match=r"comparison\(s\) 'a': every training blocking rule reads the compared column"
    ):
        train(records, settings)


def test_em_trains_on_the_training_rules_and_scores_the_blocking_rules():
    records, _ = synthetic(people=800)
    base = exact_settings()
    settings = Settings(base.comparisons, blocking=base.blocking, training_blocking=base.blocking[:3])
    model = train(records, settings)
    assert [r["rule"] for r in model.training["pairs_per_rule"]] == ["a & b", "a & c", "b & c"]
    scored = predict(model, records)
    assert set(scored["rule"].unique()) == {"a & b", "a & c", "b & c", "c & d"}
    with pytest.raises(SettingsError, match=r"training_blocking\[0\] \[e\] reads column 'e'"):
        Settings(base.comparisons, base.blocking, training_blocking=(BlockingRule.parse("e", "t"),)).check_columns(
            records.columns
        )


def test_level_patterns_packed_into_integers_match_row_by_row_counting():
    from ci_pipeline.unify.probabilistic.model import _distinct_rows

    gamma = np.random.default_rng(0).integers(-1, 7, (1000, 9)).astype(np.int8)
    gamma[:500] = gamma[500:]
    rows, counts = _distinct_rows(gamma)
    expected_rows, expected_counts = np.unique(gamma, axis=0, return_counts=True)
    assert np.array_equal(rows, expected_rows) and np.array_equal(counts, expected_counts)
    wide = np.zeros((4, 20), dtype=np.int8)  # too wide to pack: rows compared as they are
    assert _distinct_rows(wide)[1].tolist() == [4]


def test_no_candidate_pair_scores_to_an_empty_frame_and_singleton_clusters():
    records, _ = synthetic(people=300)
    model = train(records, exact_settings())
    # Every record with its own value of a: a rule on a and b finds nothing.
    unique = records.assign(a=pd.array([f"u{i}" for i in range(len(records))], dtype="string"))
    settings = Settings(model.settings.comparisons, (BlockingRule.parse(["a", "b"], "b"),))
    scored = predict(model, unique, settings=settings)
    assert len(scored) == 0 and "match_probability" in scored.columns
    label, density = clusters(len(unique), scored[scored["link"]])
    assert label.tolist() == list(range(len(unique))) and density.empty


def test_em_on_flat_level_tables_gives_the_per_comparison_sums_to_the_last_bit():
    """EM gathers every comparison's levels from one flat table; its level counts and posteriors are those of
    summing one comparison at a time (nulls adding nothing), bit for bit, so the fit does not move."""
    rng = np.random.default_rng(3)
    sizes = [2, 4, 7, 3]
    patterns = np.stack([rng.integers(-1, size, 500) for size in sizes], axis=1).astype(np.int8)
    weights = rng.random(500) * 10
    m = [rng.dirichlet(np.ones(size)) for size in sizes]
    u = [rng.dirichlet(np.ones(size)) for size in sizes]
    columns = np.asarray([0, 2, 3])
    flat = _Patterns(patterns, sizes, columns)
    counted = flat.frequencies(weights)
    assert counted[1] is None
    for j in columns:
        assert np.array_equal(counted[j], _frequencies(sizes[j], patterns[:, j], weights))
    share = rng.random(500) * 0.5
    log_m, log_u = np.log(share), np.log1p(-share)
    for j in columns:
        known = patterns[:, j] >= 0
        log_m[known] += np.log(m[j][patterns[known, j]])
        log_u[known] += np.log(u[j][patterns[known, j]])
    top = np.maximum(log_m, log_u)
    evidence = top + np.log(np.exp(log_m - top) + np.exp(log_u - top))
    posterior, found = flat.posterior(share, m, u)
    assert np.array_equal(found, evidence)
    assert np.array_equal(posterior, np.exp(log_m - evidence))


def test_u_leaves_out_the_matches_among_the_random_pairs():
    # Ten records a person: a random pair is one person's about once in 27, and a field that no two people share
    # agrees on no other random pair, so its raw share of exact agreement is all matches.
    rng = np.random.default_rng(3)
    people, copies = 150, 10
    person = np.repeat(np.arange(people), copies)
    data = {}
    for field, size in VOCABULARY.items():
        values = np.repeat(rng.integers(0, size, people), copies)
        changed = rng.random(people * copies) > KEEP[field]
        values[changed] = rng.integers(0, size, changed.sum())
        data[field] = pd.array([f"{field}{v}" for v in values], dtype="string")
    data["own"] = pd.array([f"p{p}" for p in person], dtype="string")  # one value a person, no two share one
    records = pd.DataFrame(data)
    settings = Settings(
        comparisons=tuple(ExactMatch(f) for f in [*KEEP, "own"]),
        blocking=tuple(BlockingRule.parse(r, "blocking") for r in (["a", "b"], ["a", "c"], ["b", "c"])),
    )
    model = train(records, settings)
    own = model.parameters[-1]
    raw_share = (copies - 1) / (people * copies - 1)
    # Left: the matches among the random pairs that no blocking rule finds (the prior counts those it finds).
    assert own.u[0] < raw_share / 5
    # Where strangers do agree, their share is kept: that of the pairs of different people in the records (where
    # strangers agree less often than matches are left among the random pairs, somewhat more).
    apart = person[:, None] != person[None, :]
    for params in model.parameters[:-1]:
        values = records[params.name].to_numpy()
        strangers = ((values[:, None] == values[None, :]) & apart).sum() / apart.sum()
        raw = (values[:, None] == values[None, :]).sum() - len(values)
        raw /= len(values) * (len(values) - 1)
        assert 0.85 * strangers < params.u[0] < raw, params.name
        if params.name in ("c", "d"):
            assert params.u[0] == pytest.approx(strangers, rel=0.15), params.name


def test_a_stored_model_whose_comparison_has_other_levels_in_this_version_names_it():
    # A model stored before a comparison kind gained a level (the date's same_month_day) has one parameter fewer.
    records, _ = synthetic(people=300)
    described = train(records, exact_settings()).to_dict()
    first = described["parameters"][0]
    first.update(levels=["exact", "older", "else"], m=[*first["m"][:1], 0.0, first["m"][1]])
    first.update(u=[*first["u"][:1], 0.0, first["u"][1]])
    with pytest.raises(UserError, match=r"comparison 'a' has the levels exact, else in this version, the model was "):
        Model.from_dict(described)


def test_a_comparison_whose_column_no_training_pair_holds_on_both_sides_is_switched_off_with_a_warning():
    # A middle name a handful of records give: none of the blocked pairs holds it twice, which is no fault of
    # the settings; the other comparisons train and score as before.
    records, _ = synthetic(people=300)
    sparse = records.assign(e=pd.Series(pd.NA, index=records.index, dtype="string"))
    sparse.loc[sparse.index[[0, 7]], "e"] = ["anne", "beth"]
    settings = Settings(
        comparisons=(*exact_settings().comparisons, ExactMatch("e")), blocking=exact_settings().blocking
    )
    with pytest.warns(UserWarning, match=r"column 'e' is known on both sides of none of the [\d,]+ pairs training"):
        model = train(sparse, settings)
    assert [p.name for p in model.parameters if not p.active] == ["e"]
    plain = train(records, exact_settings())
    assert [p.m for p in model.parameters[:-1]] == [p.m for p in plain.parameters]


def test_a_less_alike_band_never_weighs_more_than_a_more_alike_one():
    # Runs of bands of one measure: thresholds of one similarity, else below them, a date's distance in years.
    levels = ("exact", "nickname", "jaro_winkler>=0.92", "jaro_winkler>=0.88", "jaro_winkler>=0.7", "else")
    assert bands(levels) == [[2, 3, 4, 5]]
    assert bands(DATE_LEVELS) == [[6, 7, 8]]
    assert bands(("exact", "jaro_winkler>=0.92", "jaro_winkler>=0.8", "same_city", "else")) == [[1, 2]]
    assert bands(("exact", "one_typo", "else")) == []
    # Weights 1, 3, -1 bits along a run: the first two pooled at their joint m over joint u (2 bits each).
    u = np.array([0.1, 0.1, 0.1, 0.7])
    m = np.array([0.5, 0.1, 0.3, 0.1])
    held = monotone(m, u, ("exact", "jaro_winkler>=0.9", "jaro_winkler>=0.8", "else"))
    assert np.allclose(held, [0.5, 0.2, 0.2, 0.1]) and np.isclose(held.sum(), m.sum())
    # In order already: unchanged.
    assert np.array_equal(monotone(held, u, ("exact", "jaro_winkler>=0.9", "jaro_winkler>=0.8", "else")), held)


def test_dates_years_apart_weigh_no_more_than_dates_a_year_apart():
    # A third of the duplicates hold a birth date drawn again two to four years off (an age given, not a date):
    # EM finds more matches five years apart than one year apart, and a model weighing each band by its own
    # share alone linked pairs for being further apart.
    rng = np.random.default_rng(5)
    people = 800
    year = rng.integers(1940, 1999, people)
    born = [f"{y}-{rng.integers(1, 13):02d}-{rng.integers(1, 29):02d}" for y in year]
    first = rng.choice([f"first{i}" for i in range(60)], people)
    last = [f"name{i}" for i in rng.integers(0, 300, people)]
    frame = pd.DataFrame({"first": first, "last": last, "born": born}, dtype="string")
    copy = frame.copy()
    redrawn = rng.random(people) < 1 / 3
    shift = rng.integers(2, 5, people) * rng.choice([-1, 1], people)
    copy.loc[redrawn, "born"] = [
        f"{y}-{rng.integers(1, 13):02d}-{rng.integers(1, 29):02d}" for y in (year + shift)[redrawn]
    ]
    records = pd.concat([frame, copy], ignore_index=True)
    settings = Settings(
        comparisons=(NameComparison("first"), NameComparison("last"), DateComparison("born")),
        blocking=tuple(
            BlockingRule.parse(r, "blocking") for r in (["first", "last"], ["last", "born"], ["first", "born"])
        ),
    )
    model = train(records, settings)
    for fit in (model.parameters, *(s.parameters for s in model.strata)):
        for p in fit:
            for run in bands(p.levels):
                assert np.all(np.diff(p.weights[run]) <= 1e-9), (p.name, p.levels, p.weights)
    dates = next(p for p in model.parameters if p.name == "born")
    far = dates.levels.index("within_5_years")
    assert dates.weights[far] > 0  # the redrawn dates are evidence still, as much as a year apart


def test_the_untrainable_comparison_error_names_the_setting_and_a_rule_that_would_train_it():
    records, _ = synthetic(people=300)
    settings = Settings(comparisons=tuple(ExactMatch(f) for f in KEEP), blocking=(BlockingRule.parse(["a"], "b0"),))
    with pytest.raises(TrainingError, match=r"'a': .* unify\.match\.probabilistic\.training_blocking .* \[b, c, d\]"):
        train(records, settings)
