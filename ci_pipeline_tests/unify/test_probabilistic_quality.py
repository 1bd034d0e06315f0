"""Probabilistic matching where fields go together: strata fitted apart (housemates, namesakes), the place
comparison, the default threshold, and the bad inputs of a stratum (too few pairs, an insane fit, EM that does not
converge, keys null or constant everywhere, malformed or unmapped strata)."""

from __future__ import annotations

import dataclasses
import warnings

import numpy as np
import pandas as pd
import pytest

from ci_pipeline.unify.probabilistic import (
    DEFAULT_THRESHOLD,
    ConvergenceWarning,
    DateComparison,
    EmailComparison,
    ExactMatch,
    Model,
    NameComparison,
    PostalCodeComparison,
    Settings,
    SettingsError,
    default_settings,
    explain_pair,
    normalize_records,
    predict,
    prepare,
    train,
)
from ci_pipeline.unify.probabilistic import model as model_module
from ci_pipeline.unify.probabilistic.blocking import BlockingRule
from ci_pipeline.unify.probabilistic.comparisons import PlaceComparison
from ci_pipeline.unify.probabilistic.model import ComparisonParameters, Stratum

#: First names no two of which look alike (housemates' names are told apart by the name comparison's levels).
FIRST = np.array(
    [
        "anna",
        "bernard",
        "carmen",
        "dmitri",
        "eleanor",
        "francesco",
        "gustav",
        "hildegard",
        "ingrid",
        "jasper",
        "kwame",
        "ludmila",
        "maximilian",
        "noor",
        "octavia",
        "priya",
        "quentin",
        "rosalind",
        "sebastian",
        "tatiana",
        "ulrich",
        "valentina",
        "wolfgang",
        "xiomara",
        "yusuf",
        "zenobia",
    ]
)
LAST = np.array([f"{a}{b}{c}" for a in ("berg", "holm", "dal", "vik") for b in "aeiouy" for c in "klmnrst"])


def households(n: int = 500, seed: int = 3) -> tuple[pd.DataFrame, np.ndarray]:
    """``n`` households of two people sharing a surname, an e-mail address and a street, with their own first names
    and birth dates; every person has two records (the second sometimes with a nickname-free typo in the first
    name), and a birth date is known on half of them."""
    rng = np.random.default_rng(seed)
    rows = []
    for h in range(n):
        last, street = rng.choice(LAST), f"{rng.integers(1, 200)} {rng.choice(LAST)} st"
        email = f"{last}{h}@home.example"
        firsts = rng.choice(FIRST, 2, replace=False)
        for member, first in enumerate(firsts):
            born = f"{rng.integers(1940, 2000)}-{rng.integers(1, 13):02d}-{rng.integers(1, 29):02d}"
            for copy in range(2):
                typo = copy == 1 and rng.random() < 0.1
                rows.append(
                    {
                        "person": 2 * h + member,
                        "first": first[:-1] + "x" if typo else first,
                        "last": last,
                        "email": email,
                        "street": street,
                        "born": born if rng.random() < 0.5 else None,
                    }
                )
    frame = pd.DataFrame(rows)
    return frame.drop(columns="person").astype("string"), frame["person"].to_numpy()


def household_settings(**options) -> Settings:
    return Settings(
        comparisons=(
            NameComparison("first", term_frequency=True, swap_with="last"),
            NameComparison("last", term_frequency=True, swap_with="first"),
            EmailComparison("email"),
            PlaceComparison("street", then=("city",)) if options.pop("place", False) else ExactMatch("street"),
            DateComparison("born"),
        ),
        blocking=tuple(
            BlockingRule.parse(r, "blocking")
            for r in (["email"], ["first", "last"], ["first", "born"], ["last", "born"])
        ),
        **options,
    )


def links(model: Model, records: pd.DataFrame, person: np.ndarray) -> tuple[int, int]:
    """(links of one person, links of two people)."""
    scored = predict(model, records)
    linked = scored[scored["link"]]
    same = person[linked["left"]] == person[linked["right"]]
    return int(same.sum()), int((~same).sum())


def quiet_train(records: pd.DataFrame, settings: Settings) -> Model:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return train(records, settings)


def test_housemates_sharing_an_email_address_and_a_surname_are_not_linked_when_their_pairs_are_a_stratum():
    records, person = households()
    # Taken as independent evidence, a shared surname, e-mail address and street outweigh different first names.
    independent = quiet_train(records, household_settings())
    right, wrong = links(independent, records, person)
    assert wrong > 100
    # Fitted apart, the pairs sharing an e-mail address show that most of them are housemates.
    stratified = quiet_train(records, household_settings(strata=((("email",),),)))
    right_s, wrong_s = links(stratified, records, person)
    assert wrong_s < 10 and right_s >= right - 10
    (stratum,) = stratified.strata
    assert stratum.keys == (("email",),) and stratum.pairs == 6 * 500
    # One person in three of the stratum's pairs: two per household of six.
    assert stratum.share == pytest.approx(1 / 3, abs=0.03)
    first = stratum.parameters[0]
    assert first.weights[first.levels.index("else")] < -5  # housemates differ in first name


def test_the_main_fit_leaves_the_stratum_pairs_out_and_both_fits_round_trip():
    records, _ = households()
    model = quiet_train(records, household_settings(strata=((("email",),),)))
    # Every pair sharing an address is in the stratum: none is left to the main fit's blocked pairs.
    assert model.training["strata_pairs"] == [3000]
    assert all(c["rule"] != "email" or c["pairs"] == 3000 for c in model.training["pairs_per_rule"])
    again = Model.from_dict(model.to_dict())
    assert again == model
    with pytest.raises(SettingsError, match="strata changed"):
        predict(model, records, settings=household_settings())


def test_a_pair_of_a_stratum_is_weighed_by_its_fit_and_explained_with_its_prior():
    from ci_pipeline.unify.probabilistic import explain_pair

    records, person = households(n=300)
    model = quiet_train(records, household_settings(strata=((("email",),),)))
    # Records 0 and 2 are housemates: one e-mail address, two first names.
    assert person[0] != person[2] and records.loc[0, "email"] == records.loc[2, "email"]
    waterfall = explain_pair(model, records, 0, 2)
    assert waterfall.iloc[0]["weight"] == pytest.approx(model.strata[0].prior_weight)
    assert waterfall.iloc[-1]["probability"] < 0.5
    scored = predict(model, records).set_index(["left", "right"])
    assert scored.loc[(0, 2), "match_weight"] == pytest.approx(waterfall.iloc[-1]["weight"])


def test_a_rare_name_weighs_more_than_a_common_one_within_the_name_stratum():
    rng = np.random.default_rng(5)
    n = 800
    # Many people named "smith", a few with rare surnames; each person twice, an e-mail address, a birth date and a
    # town per person (what tells namesakes apart within the stratum), each known on half the records.
    last = np.where(rng.random(n) < 0.5, "smith", np.array([f"rare{i}" for i in range(n)]))
    first = rng.choice(FIRST[:6], n)
    frame = pd.DataFrame(
        {
            "first": np.repeat(first, 2),
            "last": np.repeat(last, 2),
            "email": np.repeat([f"p{i}@x.example" for i in range(n)], 2),
            "born": np.repeat(
                [f"{rng.integers(1940, 2000)}-0{rng.integers(1, 9)}-1{rng.integers(0, 9)}" for _ in range(n)], 2
            ),
            "town": np.repeat(rng.choice(np.array([f"town{i}" for i in range(20)]), n), 2),
        }
    ).astype("string")
    for column in ("email", "born", "town"):
        frame.loc[rng.random(2 * n) < 0.5, column] = None
    settings = Settings(
        comparisons=(
            NameComparison("first", term_frequency=True),
            NameComparison("last", term_frequency=True),
            EmailComparison("email"),
            DateComparison("born"),
            ExactMatch("town"),
        ),
        blocking=(BlockingRule.parse(["first", "last"], "b"), BlockingRule.parse(["email"], "b")),
        strata=((("first", "last"),),),
    )
    model = quiet_train(frame, settings)
    assert len(model.strata) == 1
    scored = predict(model, frame).set_index(["left", "right"])
    # People whose two records share nothing else known on both sides.
    known = frame[["email", "born", "town"]].notna().to_numpy()
    name_only = ~(known[::2] & known[1::2]).any(axis=1)
    common = int(np.flatnonzero((last == "smith") & name_only)[0])
    rare = int(np.flatnonzero((last != "smith") & name_only)[0])
    # Both pairs: the same first and last name, nothing else known on both sides.
    assert (
        scored.loc[(2 * rare, 2 * rare + 1), "match_weight"] > scored.loc[(2 * common, 2 * common + 1), "match_weight"]
    )


def test_place_comparison_levels_run_from_the_street_to_the_general_places():
    records = pd.DataFrame(
        {
            "street": ["1 main st", "1 main st", "1 main str", None, "9 oak rd", "5 elm st", None, None],
            "zip": ["10001", "10001", "10001", "10001", "10001", "20002", None, "30003"],
            "city": ["york", "york", "york", "york", "york", "york", None, None],
        },
        dtype="string",
    )
    place = PlaceComparison("street", then=("zip", "city"))
    assert place.levels == (
        "exact",
        "jaro_winkler>=0.92",
        "jaro_winkler>=0.8",
        "same_zip",
        "same_city",
        "else",
    )
    table = prepare(records, place.columns)
    left = np.array([0, 0, 0, 0, 0, 6, 7])
    right = np.array([1, 2, 3, 4, 5, 3, 5])
    # exact; a close spelling; street unknown but same zip; another street, same zip; same city only; nothing
    # known on both sides (null); a zip each, different (else).
    assert place.gamma(table, left, right).tolist() == [0, 1, 3, 3, 4, -1, 5]
    # A left-out level falls through to the next one that holds.
    no_zip = PlaceComparison("street", then=("zip", "city"), without=("same_zip",))
    assert no_zip.gamma(table, left, right).tolist() == [0, 1, 3, 3, 3, -1, 4]
    assert Settings.from_dict({**household_settings(place=True).to_dict()}).comparisons[3] == PlaceComparison(
        "street", then=("city",)
    )


def test_a_postal_code_with_general_places_counts_them_only_where_the_postal_codes_say_nothing():
    records = pd.DataFrame(
        {
            "zip": ["10001", "10001", "10002", "10017", "20002", None, None, "30003", "10001"],
            "city": ["york", "york", "york", "york", "york", "york", None, "troy", "troy"],
        },
        dtype="string",
    )
    zip_code = PostalCodeComparison("zip", then=("city",))
    assert zip_code.levels == ("exact", "one_typo", "same_prefix_3", "same_city", "else")
    assert zip_code.columns == ("zip", "city")
    table = prepare(records, zip_code.columns)
    left = np.array([0, 0, 0, 0, 0, 6, 7, 0])
    right = np.array([1, 2, 3, 4, 5, 5, 4, 8])
    # exact (the city agreeing adds nothing); one typo; same prefix; another zip, same city; zip unknown on one
    # side, same city; nothing known on both sides (null); different zip and city (else); same zip, another city
    # (the zip's level: the city is not looked at).
    assert zip_code.gamma(table, left, right).tolist() == [0, 1, 2, 3, 3, -1, 4, 0]
    # A left-out level falls through to the next one that holds; without general places the levels are the plain
    # ones.
    no_prefix = PostalCodeComparison("zip", then=("city",), without=("same_prefix_3",))
    assert no_prefix.gamma(table, left, right).tolist() == [0, 1, 2, 2, 2, -1, 3, 0]
    assert PostalCodeComparison("zip").gamma(table, left, right).tolist() == [0, 1, 2, 3, -1, -1, 3, 0]
    # The waterfall of a pair that reached same_city shows the cities.
    levels = ComparisonParameters(
        "zip", zip_code.levels, (0.7, 0.1, 0.1, 0.05, 0.05), (0.001, 0.002, 0.01, 0.05, 0.937)
    )
    model = Model(Settings((zip_code,), (BlockingRule.parse(["zip"], "b"),)), (levels,), 0.01, True, (), {})
    waterfall = explain_pair(model, records, 0, 4).set_index("comparison")
    assert waterfall.loc["zip", ["left_value", "right_value", "level"]].tolist() == ["york", "york", "same_city"]
    assert explain_pair(model, records, 0, 1).set_index("comparison").loc["zip", "left_value"] == "10001"
    spec = {"kind": "postal_code", "column": "zip", "then": ["city"]}
    assert Settings.from_dict({"comparisons": [spec], "blocking": ["zip"]}).comparisons[0] == zip_code
    assert zip_code.to_dict() == spec
    with pytest.raises(SettingsError, match=r"'zip'\.then: names zip twice \(or the compared column itself\)"):
        PostalCodeComparison("zip", then=("zip",))
    with pytest.raises(SettingsError, match=r"comparisons\[0\]\.then: list the more general places' columns"):
        Settings.from_dict({"comparisons": [{**spec, "then": "city"}], "blocking": ["zip"]})


def test_place_comparison_mistakes_are_named():
    with pytest.raises(SettingsError, match="needs 'then'"):
        Settings.from_dict({"comparisons": [{"kind": "place", "column": "street"}], "blocking": ["street"]})
    with pytest.raises(SettingsError, match="then names zip twice"):
        PlaceComparison("street", then=("zip", "zip"))
    with pytest.raises(SettingsError, match="comparisons\\[0\\].*out of order"):
        Settings.from_dict(
            {
                "comparisons": [{"kind": "place", "column": "s", "then": ["z"], "thresholds": [0.5, 0.9]}],
                "blocking": ["s"],
            }
        )


def test_an_implied_place_becomes_a_lower_level_of_the_specific_one_by_default():
    rng = np.random.default_rng(2)
    n = 400
    zips = rng.integers(0, 20, n)
    raw = pd.DataFrame(
        {
            "First": [f"name{i}" for i in range(n)],
            "Street": [f"{z} main st {i % 3}" for i, z in enumerate(zips)],
            "Zip": [f"{10000 + z}" for z in zips],
        },
        dtype="string",
    )
    mapping = {"First": "first_name", "Street": "street", "Zip": "postal_code"}
    settings, notes = default_settings(normalize_records(raw, mapping), mapping)
    street = next(c for c in settings.comparisons if c.column == "Street")
    assert street == PlaceComparison(
        "Street", term_frequency=True, thresholds=(0.92, 0.8), same_numbers=True, then=("Zip",)
    )
    assert "Zip" not in [c.name for c in settings.comparisons]
    assert any("Zip compared after all, as lower levels of Street" in n for n in notes)


def test_default_strata_are_the_shared_contacts_then_the_name():
    raw = pd.DataFrame(
        {"First": ["ann"], "Last": ["berg"], "Mail": ["a@b.example"], "Tel": ["5551234"], "Road": ["1 main st"]},
        dtype="string",
    )
    mapping = {"First": "first_name", "Last": "last_name", "Mail": "email", "Tel": "phone", "Road": "street"}
    settings, _ = default_settings(normalize_records(raw, mapping), mapping)
    # Pairs of one name include a name written as a nickname (Bob for Robert): the first name's key folds them.
    assert settings.strata == ((("Mail",),), (("Tel",),), (("Road",),), (("nickname(First)", "Last"),))
    text = Settings.from_dict(settings.to_dict())
    assert text.strata == settings.strata
    assert settings.to_dict()["strata"] == [["Mail"], ["Tel"], ["Road"], [["nickname(First)", "Last"]]]


@pytest.mark.parametrize(
    ("places", "address"),
    [({"Zip": "postal_code", "Town": "city"}, ("Road", "Zip")), ({"Town": "city"}, ("Road", "Town"))],
)
def test_the_address_stratum_is_a_street_within_its_most_specific_place(places, address):
    # "1 main st" is in many towns: strangers of other towns are not housemates.
    raw = pd.DataFrame(
        {
            "First": ["ann", "bo"],
            "Mail": ["a@b.example", "b@c.example"],
            "Road": ["1 main st"] * 2,
            "Zip": ["02134"] * 2,
        }
        | {"Town": ["boston", "boston"]},
        dtype="string",
    )
    mapping = {"First": "first_name", "Mail": "email", "Road": "street"} | places
    settings, _ = default_settings(normalize_records(raw[list(mapping)], mapping), mapping)
    assert settings.strata == ((("Mail",),), (address,))
    assert settings.to_dict()["strata"] == [["Mail"], [list(address)]]


def test_a_name_written_as_a_nickname_belongs_to_the_stratum_of_one_name():
    frame = pd.DataFrame(
        {"first": ["robert", "bob", "robert", "ann", "bobby"], "last": ["lee", "lee", "kay", "lee", "lee"]},
        dtype="string",
    )
    table = prepare(frame, ["first", "last"])
    left, right = np.array([0, 0, 0, 1]), np.array([1, 2, 3, 4])
    folded = Stratum((("nickname(first)", "last"),), 0.5, (), 0)
    as_written = Stratum((("first", "last"),), 0.5, (), 0)
    # Robert Lee and Bob Lee (and Bob and Bobby Lee) are one name; Robert Kay and Ann Lee are not.
    assert folded.members(table, left, right).tolist() == [True, False, False, True]
    assert as_written.members(table, left, right).tolist() == [False, False, False, False]
    assert folded.columns == {"first", "last"}


def nickname_people(n: int = 600, seed: int = 7) -> pd.DataFrame:
    """Each of ``n`` people twice; the second record sometimes writes Robert as Bob. Namesakes share first and last
    name; birth date, city and e-mail address tell them apart (each missing on half the records)."""
    rng = np.random.default_rng(seed)
    first = rng.choice(np.array(["robert", "ann", "james", "mary"]), n)
    last = rng.choice(LAST[:40], n)
    second = np.where((first == "robert") & (rng.random(n) < 0.5), "bob", first)
    frame = pd.DataFrame(
        {
            "first": np.column_stack([first, second]).ravel(),
            "last": np.repeat(last, 2),
            "born": np.repeat(
                [f"19{rng.integers(40, 99)}-0{rng.integers(1, 9)}-1{rng.integers(0, 9)}" for _ in range(n)], 2
            ),
            "city": np.repeat(rng.choice(np.array([f"town{i}" for i in range(30)]), n), 2),
            "email": np.repeat(
                [f"{f}.{x}{i}@mail.example" for i, (f, x) in enumerate(zip(first, last, strict=True))], 2
            ),
        }
    ).astype("string")
    for column in ("born", "city", "email"):
        frame.loc[rng.random(2 * n) < 0.5, column] = None
    return frame


NICKNAME_SETTINGS = Settings(
    comparisons=(
        NameComparison("first"),
        NameComparison("last"),
        DateComparison("born"),
        ExactMatch("city"),
        EmailComparison("email"),
    ),
    blocking=(BlockingRule.parse(["last"], "b"), BlockingRule.parse(["first", "born"], "b")),
    strata=((("nickname(first)", "last"),),),
)


def test_a_nickname_pair_is_weighed_by_the_name_stratum_and_its_prior():
    from ci_pipeline.unify.probabilistic import explain_pair

    frame = nickname_people()
    model = quiet_train(frame, NICKNAME_SETTINGS)
    (stratum,) = model.strata
    assert stratum.converged and 0.05 < stratum.share < 0.95
    bob = int(np.flatnonzero(frame["first"].to_numpy() == "bob")[0])
    waterfall = explain_pair(model, frame, bob - 1, bob)
    assert frame.loc[bob - 1, "first"] == "robert"
    # Weighed as a pair of one name (one person or namesakes), not as a random pair of the main fit.
    assert waterfall.iloc[0]["weight"] == pytest.approx(stratum.prior_weight)
    assert waterfall.set_index("comparison").loc["first", "level"] == "nickname"


def test_a_stratum_too_few_comparisons_describe_stops_early_near_its_start_and_says_why():
    # Beside the names the stratum agrees on, only the birth date could tell its matches apart: two classes with free
    # m and u are not identifiable from one comparison. Run to the end, EM slid to a match share of nothing; it
    # stops after a hundred plain steps instead, near its starting values, and the warning says why.
    frame = nickname_people().drop(columns=["city", "email"])
    settings = dataclasses.replace(NICKNAME_SETTINGS, comparisons=NICKNAME_SETTINGS.comparisons[:3])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = train(frame, settings)
    said = [str(w.message) for w in caught if issubclass(w.category, ConvergenceWarning)]
    assert len(said) == 1 and said[0].startswith(
        "pairs agreeing on [nickname(first) & last]: EM did not converge after 100 iteration(s) (only 1 "
        "comparison(s) read none of its key columns: born; fewer than 3 cannot pin"
    )
    # Stopping early is the design here, not a fault to fix: the run logs it as information.
    assert said[0].endswith("the last parameters are kept (they are sane; no action needed)")
    (stratum,) = model.strata
    assert not stratum.converged and 0.1 < stratum.share < 0.5


def test_the_default_threshold_links_a_match_likelier_than_not():
    assert DEFAULT_THRESHOLD == 0.5
    assert household_settings().threshold == 0.5


def test_a_stratum_with_too_few_pairs_is_left_to_the_main_fit_with_a_warning():
    records, _ = households(n=20)
    with pytest.warns(UserWarning, match=r"pairs agreeing on \[email\]: 120 pair\(s\), too few to fit apart"):
        model = train(records, household_settings(strata=((("email",),),)))
    assert model.strata == () and model.training["strata_pairs"] == []


def test_a_stratum_whose_fit_is_not_sane_is_left_to_the_main_fit_with_a_warning():
    records, _ = households()
    # Every record its own first name: no pair of the stratum agrees on it, so neither start finds a split in which
    # the fields outside the stratum agree more often among matches.
    records["first"] = pd.array([f"solo{i}" for i in range(len(records))], dtype="string")
    with pytest.warns(UserWarning, match=r"pairs agreeing on \[email\]: their fit apart is not sane"):
        model = train(records, household_settings(strata=((("email",),),)))
    assert model.strata == ()


def one_person_per_address(n: int = 150, seed: int = 5) -> tuple[pd.DataFrame, np.ndarray]:
    """``n`` people with four records each, all four holding the person's own e-mail address (nobody shares one).
    A copy is damaged two times in five: first and last name swapped or both misspelt, and sometimes another
    street or a birth date a month off; the damaged records differ from the others in several fields at once."""
    rng = np.random.default_rng(seed)
    rows = []
    for p in range(n):
        first, last = rng.choice(FIRST), rng.choice(LAST)
        born = f"{rng.integers(1940, 2000)}-{rng.integers(1, 13):02d}-{rng.integers(1, 29):02d}"
        street = f"{rng.integers(1, 200)} {rng.choice(LAST)} st"
        for copy in range(4):
            damaged = copy > 0 and rng.random() < 0.4
            names = (first, last)
            if damaged:
                names = (last, first) if rng.random() < 0.5 else (first[:-1] + "x", last[:-2] + "q")
            moved = damaged and rng.random() < 0.5
            misdated = damaged and rng.random() < 0.3
            rows.append(
                {
                    "person": p,
                    "first": names[0],
                    "last": names[1],
                    "email": f"{first}.{last}{p}@mail.example",
                    "street": f"{rng.integers(1, 200)} {rng.choice(LAST)} st" if moved else street,
                    "born": f"{born[:5]}{int(born[5:7]) % 12 + 1:02d}{born[7:]}" if misdated else born,
                }
            )
    frame = pd.DataFrame(rows)
    return frame.drop(columns="person").astype("string"), frame["person"].to_numpy()


def test_a_stratum_of_one_persons_records_is_not_split_in_two_by_their_errors():
    # EM fitting two classes to pairs that are all one person's takes the damaged records for the other class, and
    # pairs of one address, one birth date and swapped names came out as non-matches. Their birth dates say that
    # those "non-matches" are the same people: the fit is refused and the main fit weighs the pairs.
    records, person = one_person_per_address()
    with pytest.warns(
        UserWarning, match=r"\[email\]: their fit apart is not sane: .* \(its non-matches share a date as "
    ):
        model = train(records, household_settings(strata=((("email",),),)))
    assert model.strata == ()
    right, wrong = links(model, records, person)
    assert wrong == 0 and right >= 0.95 * 150 * 6


def _levels(n: int, exact: float, other: float) -> np.ndarray:
    """Level probabilities: ``exact`` on the first level, ``other`` on the last (else), the rest spread evenly (two
    levels: ``exact`` and the rest)."""
    if n == 2:
        return np.r_[exact, 1 - exact]
    middle = np.full(n - 2, (1 - exact - other) / (n - 2))
    return np.r_[exact, middle, other]


@pytest.mark.parametrize(("first_exact", "refused"), [(0.74, False), (0.069, True)])
def test_a_stratum_fit_whose_matches_differ_in_first_name_is_refused(first_exact, refused):
    # Keyed on a street alone at a million people, a stratum held housemates and strangers of other towns, and EM
    # split it into one surname against the rest: its "matches" were housemates, different first names (m exact
    # 0.069, else 0.887). One person's records agree on their name far more often than they differ entirely.
    comparisons = household_settings().comparisons
    sizes = [len(c.levels) for c in comparisons]
    m = [_levels(k, 0.5, 0.3) for k in sizes]
    u = [_levels(k, 0.05, 0.8) for k in sizes]
    m[0] = _levels(sizes[0], first_exact, 0.955 - first_exact)
    m[1], u[1] = _levels(sizes[1], 0.95, 0.01), _levels(sizes[1], 0.005, 0.97)
    u_random = [_levels(k, 0.01, 0.9) for k in sizes]
    # The non-matches' birth dates those of random pairs: unlike one person's, as the date check asks.
    m[4], u[4] = _levels(sizes[4], 0.9, 0.05), u_random[4]
    street = [c.name for c in comparisons].index("street")
    bound = [j == street for j in range(len(comparisons))]
    found = model_module._stratum_insanity(
        comparisons, (0.1, m, u, []), np.ones(len(comparisons), bool), bound, u_random
    )
    if refused:
        assert found == (
            "its matches differ in name more often than they agree, as different people do: 'first' (m exact "
            "0.069, else 0.886)"
        )
    else:
        assert found is None


@pytest.mark.parametrize("share", [1e-9, 1 - 1e-9])
def test_a_stratum_fit_that_lost_a_class_is_refused(share):
    # Otherwise sane levels; but one class holds (next to) every pair: nothing tells its pairs apart.
    comparisons = household_settings().comparisons
    sizes = [len(c.levels) for c in comparisons]
    m, u = [_levels(k, 0.9, 0.05) for k in sizes], [_levels(k, 0.05, 0.8) for k in sizes]
    fit = (share, m, u, [])
    everything = np.ones(len(comparisons), bool)
    found = model_module._stratum_insanity(comparisons, fit, everything, [False] * len(comparisons), u)
    assert found == f"one of its two classes vanished (match share {share:.2g})"
    assert (
        model_module._stratum_insanity(comparisons, (0.3, m, u, []), everything, [False] * len(comparisons), u) is None
    )


def test_a_stratum_of_housemates_still_passes_the_birth_date_check():
    records, _ = households()
    model = quiet_train(records, household_settings(strata=((("email",),),)))
    assert [s.keys for s in model.strata] == [(("email",),)]


def test_a_stratum_em_that_does_not_converge_warns_and_keeps_its_sane_parameters():
    records, person = households()
    with pytest.warns(
        ConvergenceWarning, match=r"pairs agreeing on \[email\]: EM did not converge after 2 iter.*match share per iter"
    ):
        model = train(records, household_settings(strata=((("email",),),), max_iterations=2))
    assert len(model.strata) == 1 and not model.strata[0].converged


def _plain_em(patterns, counts, m, u, steps: int):
    """Plain EM over level patterns (match share, m and u all free), the fixed point SQUAREM must reach: the last
    share, m and u, and the share after each step."""
    flat = model_module._Patterns(patterns, [len(x) for x in m], np.arange(len(m)))
    share, shares = 0.5, []
    for _ in range(steps):
        posterior, _ = flat.posterior(share, m, u)
        matched = posterior * counts
        share = float(np.clip(matched.sum() / counts.sum(), 1e-9, 1 - 1e-9))
        m, u = flat.frequencies(matched), flat.frequencies(counts - matched)
        shares.append(share)
    return share, m, u, np.asarray(shares)


def test_a_stratum_em_accelerated_reaches_the_fixed_point_of_plain_em_in_fewer_steps():
    # Two overlapping classes over four comparisons: plain EM creeps towards its fixed point.
    rng = np.random.default_rng(11)
    n = 20_000
    match = rng.random(n) < 0.3
    rates = ((0.7, 0.4), (0.8, 0.5), (0.6, 0.3), (0.75, 0.45))
    agree = [np.where(match, rng.random(n) < p_m, rng.random(n) < p_u) for p_m, p_u in rates]
    patterns, counts = model_module._distinct_rows(np.column_stack([np.where(a, 0, 1) for a in agree]).astype(np.int8))
    counts = counts.astype(np.float64)
    start_m, start_u = [np.array([0.9, 0.1])] * 4, [np.array([0.3, 0.7])] * 4
    settings = Settings(
        comparisons=tuple(ExactMatch(f"c{j}") for j in range(4)), blocking=(BlockingRule.parse(["c0"], "b"),)
    )
    share, m, u, trace = model_module._em_both(patterns, counts, start_m, start_u, np.ones(4, bool), settings)
    assert trace[-1].change < settings.tolerance
    plain_share, plain_m, plain_u, shares = _plain_em(patterns, counts, list(start_m), list(start_u), 20_000)
    assert share == pytest.approx(plain_share, abs=1e-3)
    for j in range(4):
        assert m[j] == pytest.approx(plain_m[j], abs=1e-3) and u[j] == pytest.approx(plain_u[j], abs=1e-3)
    # Plain EM needs more steps to come as close than the cycles cost (two EM steps each, and one per jump tried).
    steps = int(np.flatnonzero(np.abs(shares - plain_share) < abs(share - plain_share) + 1e-6)[0]) + 1
    assert (2 + model_module.JUMP_TRIES) * len(trace) < steps


def test_a_stratum_key_null_or_constant_everywhere_is_skipped():
    records, _ = households(n=300)
    records["nothing"] = pd.array([None] * len(records), dtype="string")
    records["same"] = pd.array(["x"] * len(records), dtype="string")
    settings = household_settings(strata=((("nothing",), ("same",)), (("email",),)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = train(records, settings)
    assert [s.keys for s in model.strata] == [(("email",),)]


def test_malformed_or_unmapped_strata_are_named():
    base = household_settings().to_dict()
    with pytest.raises(SettingsError, match=r"strata\[0\]: key 3 is neither a column nor a list of columns"):
        Settings.from_dict({**base, "strata": [[3]]})
    with pytest.raises(SettingsError, match=r"strata: 'email' is no list of strata"):
        Settings.from_dict({**base, "strata": "email"})
    with pytest.raises(SettingsError, match=r"strata\[0\] reads column 'phone', which is not mapped"):
        household_settings(strata=((("phone",),),)).check_columns(["first", "last", "email", "street", "born"])
    with pytest.raises(SettingsError, match=r"strata\[0\] reads column 'nick', which is not mapped"):
        household_settings(strata=((("nickname(nick)",),),)).check_columns(["first", "last", "email", "street", "born"])
    with pytest.raises(SettingsError, match=r"strata\[0\]: unknown blocking function 'metaphone'"):
        Settings.from_dict({**base, "strata": [["metaphone(last)"]]})


def _reference_weight(model: Model, rows: list[dict], counts: dict, gamma: np.ndarray, a: int, b: int):
    """The fit (stratum index, -1 = the main fit) and the match weight of records ``a`` and ``b`` from the
    definitions, pair by pair: the fit of the first stratum whose key both records hold alike, its prior, and per
    comparison log2(m / u) of the level reached (0 for null); exact agreement on value v of a term-frequency
    comparison adds log2(u / f(v)) in the main fit and log2(a / f(v)) in a stratum keyed on that column (no
    adjustment in another stratum), f(v) being the share of v among the other N - 1 known values and a the chance
    that two random records agree, both from the ``counts`` of the column's N known values.

    ``rows`` are the records as plain values, None for a missing one (:func:`_plain_rows`): read a pair at a time,
    a data frame's rows made this reference most of the test's time."""
    values = (rows[a], rows[b])
    held = [
        any(
            all(values[0][c] is not None and values[1][c] is not None and values[0][c] == values[1][c] for c in k)
            for k in s.keys
        )
        for s in model.strata
    ]
    index = held.index(True) if any(held) else -1
    fit = model if index < 0 else model.strata[index]
    total = fit.prior_weight
    for j, (comparison, params) in enumerate(zip(model.settings.comparisons, fit.parameters, strict=True)):
        level = int(gamma[j])
        if level < 0 or not params.active:
            continue
        total += float(np.log2(params.m[level] / params.u[level]))
        if comparison.term_frequency and level == 0 and (index < 0 or comparison.column in fit.columns):
            c = counts[comparison.column]
            n = c.sum()
            agree = params.u[0] if index < 0 else float((c * (c - 1)).sum() / (n * (n - 1)))
            total += float(np.log2(agree * (n - 1) / (c[values[0][comparison.column]] - 1)))
    return index, total


def _plain_rows(records: pd.DataFrame) -> list[dict]:
    """Each record as a dict of its values, None where the value is missing."""
    return records.astype(object).where(records.notna(), None).to_dict("records")


def test_pairs_compared_and_weighed_a_chunk_at_a_time_give_the_same_bits(monkeypatch):
    records, _ = households(n=300)
    settings = household_settings(strata=((("first", "last"),), (("email",),)))
    model = quiet_train(records, settings)
    whole = predict(model, records, settings=settings)
    monkeypatch.setattr(model_module, "CHUNK_PAIRS", 7)
    chunked = predict(model, records, settings=settings)
    assert len(whole) > 10 * 7  # many chunks, the last one short
    pd.testing.assert_frame_equal(chunked, whole, check_exact=True)


def test_strata_weights_looked_up_per_fit_equal_the_pair_by_pair_definition():
    records, _ = households(n=300)
    settings = household_settings(strata=((("first", "last"),), (("email",),)))
    model = quiet_train(records, settings)
    assert [s.keys for s in model.strata] == [(("first", "last"),), (("email",),)]
    # Scored with pairs of one surname in two households too: the main fit weighs them.
    scoring = dataclasses.replace(settings, blocking=(*settings.blocking, BlockingRule.parse(["last"], "blocking")))
    scored = predict(model, records, settings=scoring)
    gamma = scored[[f"gamma_{c.name}" for c in model.settings.comparisons]].to_numpy()
    counts = {c: records[c].value_counts() for c in records.columns}
    rows = _plain_rows(records)
    fits, expected = zip(
        *(
            _reference_weight(model, rows, counts, g, a, b)
            for a, b, g in zip(scored["left"], scored["right"], gamma, strict=True)
        ),
        strict=True,
    )
    assert scored["match_weight"].to_numpy() == pytest.approx(np.asarray(expected), rel=1e-12, abs=1e-12)
    # Every fit weighs some of the pairs.
    assert set(fits) == {-1, 0, 1}


def test_training_rules_whose_every_pair_is_in_a_stratum_warn_that_no_other_pair_will_link():
    records, _ = households(n=300)
    names = household_settings(strata=((("first", "last"),),))
    # The training rule finds only pairs of one name, all fitted apart: outside them the model expects no match.
    settings = dataclasses.replace(names, training_blocking=(BlockingRule.parse(["first", "last"], "blocking"),))
    with pytest.warns(UserWarning, match=r"agrees on a key of the strata \(\[first, last\]\).*links only pairs"):
        model = train(records, settings)
    assert model.prior <= 1e-12
    # Trained on the blocking rules, some pairs fall outside the stratum: no such warning.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        train(records, names)
    assert not [w for w in caught if "agrees on a key of the strata" in str(w.message)]


def test_the_model_asset_shows_each_stratum_fit_by_its_keys_beside_the_main_fit():
    from ci_pipeline.defs.unify import _model_metadata

    records, _ = households(n=300)
    model = quiet_train(records, household_settings(strata=((("first", "last"),), (("email",),))))
    model.training["settings_yaml"] = ""
    metadata = _model_metadata(model, {("crm", "contacts"): records}, "lake/match_model.json", "r1")
    strata = [row.data for row in metadata["strata"].records]
    assert [s["stratum"] for s in strata] == ["stratum [first, last]", "stratum [email]"]
    assert [s["pairs"] for s in strata] == [s.pairs for s in model.strata]
    assert strata[0]["prior_weight"] == pytest.approx(model.strata[0].prior_weight, abs=1e-3)
    rows = [row.data for row in metadata["parameters"].records]
    email = [r for r in rows if r["fit"] == "stratum [email]" and r["comparison"] == "first"]
    # The stratum's own weights: within it a different first name is what housemates look like.
    assert [r["weight"] for r in email] == [round(w, 3) for w in model.strata[1].parameters[0].weights]
    assert {r["fit"] for r in rows} == {"main", "stratum [first, last]", "stratum [email]"}


def test_the_training_rules_pairs_add_up_to_the_main_fits_and_the_strata():
    records, _ = households(n=300)
    model = quiet_train(records, household_settings(strata=((("email",),),)))
    training = model.training
    found = sum(rule["new"] for rule in training["pairs_per_rule"])
    assert training["blocked_pairs_in_strata"] > 0
    assert found == training["blocked_pairs"] + training["blocked_pairs_in_strata"]


def test_a_field_one_persons_records_give_differently_neither_stops_training_nor_undoes_the_strata():
    # Each record names an employer, one person's two records two different ones (two jobs), while strangers often
    # share one. That "insane" field made the e-mail stratum's fit insane, the main fit took the housemates for
    # matches, and every household became one customer. It is switched off, saying why; the stratum holds.
    records, person = households()
    rng = np.random.default_rng(8)
    employer = np.empty(len(records), dtype=object)
    for p in np.unique(person):
        held = np.flatnonzero(person == p)
        employer[held] = rng.choice(8, len(held), replace=False).astype(str)
    records["employer"] = pd.array(employer, dtype="string")
    settings = household_settings(strata=((("email",),),))
    settings = dataclasses.replace(settings, comparisons=(*settings.comparisons, ExactMatch("employer")))
    with pytest.warns(UserWarning, match=r"'employer' came out rarer among one person's records"):
        model = train(records, settings)
    assert [s.keys for s in model.strata] == [(("email",),)]
    assert [p.name for p in model.parameters if not p.active] == ["employer"]
    right, wrong = links(model, records, person)
    assert wrong == 0 and right == 1000
