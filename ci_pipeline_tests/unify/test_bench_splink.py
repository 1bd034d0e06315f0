"""The Splink side of `bench unify --compare-splink`: our settings translated to Splink's library, run by Splink."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ci_pipeline.benchmarks.splink_side import blocking, deterministic_rules, em_sessions, iso_dates, splink_settings
from ci_pipeline.unify.probabilistic import Settings

SETTINGS = Settings.from_dict(
    {
        "comparisons": [
            {"kind": "name", "column": "first_name", "term_frequency": True},
            {"kind": "name", "column": "last_name"},
            {"kind": "date", "column": "birth_date"},
            {"kind": "email", "column": "email"},
            {"kind": "identifier", "column": "phone"},
            {"kind": "place", "column": "street", "then": ["city"]},
            {"kind": "jaro_winkler", "column": "company", "thresholds": [0.9]},
            {"kind": "levenshtein", "column": "county", "thresholds": [1, 2]},
            {"kind": "damerau_levenshtein", "column": "state", "thresholds": [1]},
            {"kind": "postal_code", "column": "postal_code", "then": ["region"]},
            {"kind": "exact", "column": "gender"},
        ],
        "blocking": [
            ["email"],
            ["first_name", "last_name"],
            ["prefix(last_name, 3)", "year(birth_date)"],
            ["unordered(first_name, last_name)"],
            ["soundex(first_name)", "postal_code"],
        ],
        "training_blocking": [["first_name", "last_name"], ["birth_date", "postal_code"], ["email"]],
    }
)


def people(n: int = 300) -> pd.DataFrame:
    """Made-up people, each twice: the copy with the date written another way, a third with a typo in the first
    name."""
    rng = np.random.default_rng(2)
    first = np.array(["anna", "bert", "carla", "dirk", "emma", "frank", "greta", "hans", "ida", "jan"])
    last = np.array(["smit", "jansen", "bakker", "visser", "mulder", "bos", "vos", "peters", "hendriks", "dekker"])
    base = pd.DataFrame(
        {
            "first_name": first[rng.integers(0, 10, n)],
            "last_name": last[rng.integers(0, 10, n)],
            "birth_date": [f"19{y:02d}-{m:02d}-{d:02d}" for y, m, d in rng.integers([40, 1, 1], [99, 13, 29], (n, 3))],
            "email": [f"p{i}@mail.example" for i in range(n)],
            "phone": [f"06{i:08d}" for i in range(n)],
            "street": [f"{i % 40} main street" for i in range(n)],
            "postal_code": [f"{1000 + i % 40}" for i in range(n)],
            "city": "utrecht",
            "county": "utrecht",
            "region": "midden",
            "state": "ut",
            "company": None,
            "gender": rng.choice(["f", "m"], n),
        }
    )
    copy = base.copy()
    typo = np.arange(n) % 3 == 0
    copy.loc[typo, "first_name"] = copy.loc[typo, "first_name"].str[:-1] + "x"
    copy["birth_date"] = copy["birth_date"].str.replace("-", "")
    return pd.concat([base, copy], ignore_index=True).astype("string")


def test_em_sessions_leave_no_comparison_untrained():
    sessions = em_sessions(SETTINGS)
    blocked = [{c for k in rule.keys for c in k.columns} for rule in sessions]
    for comparison in SETTINGS.comparisons:
        assert any(not set(comparison.columns) & used for used in blocked), comparison.column
    assert len(sessions) < len(SETTINGS.training_rules)
    assert len(deterministic_rules(SETTINGS)) == len(sessions)


def test_splink_trains_and_links_with_the_translated_settings():
    from splink import DuckDBAPI, Linker

    records = iso_dates(people(), SETTINGS)
    assert records["birth_date"].str.fullmatch(r"\d{4}-\d{2}-\d{2}").all()
    records.insert(0, "unique_id", range(len(records)))
    linker = Linker(DuckDBAPI().register(records), splink_settings(SETTINGS), log_level=None)
    linker.training.estimate_probability_two_random_records_match(deterministic_rules(SETTINGS), recall=0.7)
    linker.training.estimate_u_using_random_sampling(max_pairs=50_000, seed=1)
    for rule in blocking(em_sessions(SETTINGS)):
        linker.training.estimate_parameters_using_expectation_maximisation(rule)
    links = linker.inference.predict(threshold_match_probability=0.9).as_pandas_dataframe()
    pairs = set(zip(links["unique_id_l"], links["unique_id_r"], strict=True))
    # Each person's two records are linked: the e-mail, phone and date agree; the typo'd first name is fuzzy.
    found = sum((i, i + 300) in pairs or (i + 300, i) in pairs for i in range(300))
    assert found >= 290
