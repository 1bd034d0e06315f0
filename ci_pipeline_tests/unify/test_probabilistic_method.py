"""``unify.match.method: probabilistic``: a stored model scores pairs; overrides, guard and ids work as with rules."""

from __future__ import annotations

import dataclasses
import json
import logging
import re

import dagster as dg
import numpy as np
import pandas as pd
import pytest
import yaml

from ci_pipeline.cli import main
from ci_pipeline.config import load_config
from ci_pipeline.config.unify import MODEL_SETTINGS, UnifyConfig
from ci_pipeline.defs import build_definitions
from ci_pipeline.defs import unify as unify_defs
from ci_pipeline.defs.resources import shared_resources
from ci_pipeline.errors import ConfigError, UserError
from ci_pipeline.lake import Lake
from ci_pipeline.unify import unify
from ci_pipeline.unify.engine import make_normalizer
from ci_pipeline.unify.explain import explain_pair, explain_record, render_pair
from ci_pipeline.unify.incremental import STATE_DIR
from ci_pipeline.unify.probabilistic import (
    BlockingRule,
    EmailComparison,
    IdentifierComparison,
    Key,
    Model,
    NameComparison,
    Settings,
    SettingsError,
)
from ci_pipeline.unify.probabilistic.model import ComparisonParameters, Iteration
from ci_pipeline.unify.probabilistic_method import (
    MODEL_PATH,
    SETTINGS_PATH,
    ProbabilisticMatches,
    TrainingMatches,
    check_settings,
    configured_settings,
    model_attributes,
    model_json,
    model_records,
    read_model,
    scoring_settings,
    train_from_tables,
)
from ci_pipeline.unify.records import build_records
from ci_pipeline.validation import project_problems, stored_model_problems
from ci_pipeline_tests.unify.helpers import KEYS, frames
from ci_pipeline_tests.unify.helpers import config as rules_config

SETTINGS = Settings(
    comparisons=(
        NameComparison("first_name", swap_with="last_name"),
        NameComparison("last_name", swap_with="first_name"),
        EmailComparison("email"),
        IdentifierComparison("phone"),
    ),
    blocking=(BlockingRule((Key("email"),)), BlockingRule((Key("phone"),)), BlockingRule((Key("last_name"),))),
)


def hand_model(settings: Settings = SETTINGS) -> Model:
    """A model with known weights: exact agreement +6.4 (m 0.85, u 0.01), disagreement -4.3, prior -6.6."""
    parameters = []
    for c in settings.comparisons:
        middle = len(c.levels) - 2
        m = (0.85, *[0.1 / middle] * middle, 0.05)
        u = (0.01, *[0.02 / middle] * middle, 0.97)
        parameters.append(ComparisonParameters(c.name, c.levels, m, u))
    return Model(settings, tuple(parameters), 0.01, True, (Iteration(1, 0.5, 0.0, 0.0),))


def config(**match) -> UnifyConfig:
    """The helper tables with the model as the match method: no match rules, no dedup rules."""
    raw = rules_config().model_dump()
    for t in raw["tables"]:
        t["dedup"]["rules"] = []
    raw["match"] |= {"method": "probabilistic", "rules": []} | match
    return UnifyConfig.model_validate(raw)


def customer_of(result, source, table, key):
    ak = result.alternate_key
    row = ak[(ak.DataSourceName == source) & (ak.EntityName == table) & (ak.AlternateValue == key)]
    return row.CustomerId.iloc[0]


def test_the_model_links_within_and_across_tables_and_publishes_its_scores():
    r = unify(config(), frames(), KEYS, match_method=ProbabilisticMatches(hand_model()))
    c = lambda *k: customer_of(r, *k)  # noqa: E731
    # Robert / Bob / Rob Smith: nickname levels plus e-mail, phone and last name.
    assert c("crm", "contacts", "c1") == c("shop", "customers", "s1") == c("loyalty", "members", "m1")
    # Two Ann Lee records of one table, no dedup rule: the model deduplicates them.
    assert c("crm", "contacts", "c2") == c("crm", "contacts", "c3")
    assert c("crm", "contacts", "c4") == c("shop", "customers", "s2")
    assert r.stats["customers"] == 5
    # ... and the crm table's dedup output shows them as duplicates, one the winner.
    crm = r.dedup[("crm", "contacts")].set_index("Key")
    assert crm.loc[["c2", "c3"], "GroupSize"].tolist() == [2, 2] and crm.loc[["c2", "c3"], "IsWinner"].sum() == 1
    assert r.stats["tables"][0]["duplicates"] == 1
    pairs = r.match_pairs[r.match_pairs.Rule == "probabilistic"]
    assert pairs.Accepted.all() and pairs.Linked.all()
    scores = json.loads(pairs.Scores.iloc[0])
    assert scores["match_probability"] >= 0.9 and scores["match_weight"] > 0
    assert r.stats["match_method"]["links"] == len(pairs)
    # Records the model compares are not reported as uncomparable though no rule exists.
    assert not any("no dedup, match or attach rule" in w for w in r.warnings)


def test_a_record_whose_blocking_key_function_gives_nothing_is_uncomparable():
    """A record compared by no blocking rule is uncomparable, as blocking finds it: soundex of a last name of
    digits is no key, though the last name is there."""
    by_sound = dataclasses.replace(SETTINGS, blocking=(BlockingRule.parse(["soundex(last_name)"], "blocking[0]"),))
    tables = frames()
    tables[("loyalty", "members")].loc[1, "last_name"] = "123"
    method = ProbabilisticMatches(hand_model(by_sound))
    r = unify(config(), tables, KEYS, match_method=method)
    assert r.stats["uncomparable_records"] == {"loyalty.members": 1}
    assert method.comparable.tolist() == [True] * 8 + [False]


def test_overrides_and_the_guard_apply_to_the_model_links():
    raw = config().model_dump()
    raw["match"]["never_match"] = [{"left": ["crm", "contacts", "c2"], "right": ["crm", "contacts", "c3"]}]
    raw["match"]["always_match"] = [{"left": ["crm", "contacts", "c4"], "right": ["loyalty", "members", "m2"]}]
    raw["guard"] = {"max_cluster_size": 2}
    r = unify(UnifyConfig.model_validate(raw), frames(), KEYS, match_method=ProbabilisticMatches(hand_model()))
    c = lambda *k: customer_of(r, *k)  # noqa: E731
    assert c("crm", "contacts", "c2") != c("crm", "contacts", "c3")
    assert c("crm", "contacts", "c4") == c("loyalty", "members", "m2")
    bob = {c("crm", "contacts", "c1"), c("shop", "customers", "s1"), c("loyalty", "members", "m1")}
    assert len(bob) == 2  # three records linked, cut at the size cap of two
    assert r.stats["largest_cluster"] == 2
    assert (r.match_pairs.Note == "never_match").any()


def test_match_rules_still_accept_their_pairs_beside_the_model():
    raw = rules_config().model_dump()
    raw["match"]["method"] = "probabilistic"
    strict = Settings(SETTINGS.comparisons, SETTINGS.blocking, threshold=0.999999)
    r = unify(UnifyConfig.model_validate(raw), frames(), KEYS, match_method=ProbabilisticMatches(hand_model(strict)))
    c = lambda *k: customer_of(r, *k)  # noqa: E731
    # The model links nothing at its threshold here; the rule email_name links Robert and Bob Smith outright.
    assert c("crm", "contacts", "c1") == c("shop", "customers", "s1")
    linked = r.match_pairs[r.match_pairs.Linked & (r.match_pairs.Stage == "match")]
    assert set(linked.Rule) <= {"email_name", "phone_last_name"}
    assert r.stats["match_method"]["method"] == "probabilistic with rules"


def test_ids_are_stable_across_reruns_with_the_stored_model_whatever_the_row_order():
    stored = read_model(model_json(hand_model()), "lake/match_model.json")
    first = unify(config(), frames(), KEYS, run_id="r1", match_method=ProbabilisticMatches(stored))
    shuffled = {k: f.iloc[::-1].reset_index(drop=True) for k, f in frames().items()}
    again = read_model(model_json(stored), "lake/match_model.json")
    second = unify(
        config(),
        shuffled,
        KEYS,
        first.identity.identity_map,
        first.identity.id_change,
        run_id="r2",
        match_method=ProbabilisticMatches(again),
    )
    ids = lambda r: r.alternate_key.set_index("msdynci_identifier")["CustomerId"].sort_index()  # noqa: E731
    pd.testing.assert_series_equal(ids(first), ids(second))
    assert not (second.identity.id_change["Run"] == second.identity.run).any()
    assert model_json(stored) == model_json(again)


def test_a_stored_model_that_does_not_fit_the_configuration_says_to_retrain():
    other = {
        "comparisons": [{"kind": "name", "column": "first_name"}, {"kind": "exact", "column": "email"}],
        "blocking": [["email"]],
    }
    with pytest.raises(SettingsError, match=r"does not fit.*'email' changed.*materialize the asset unify/match_model"):
        unify(config(probabilistic=other), frames(), KEYS, match_method=ProbabilisticMatches(hand_model()))
    # A model reading an attribute the tables no longer map.
    raw = config().model_dump()
    for t in raw["tables"]:
        t["columns"] = {c: k for c, k in t["columns"].items() if k != "phone"}
    with pytest.raises(SettingsError, match=r"'phone'.*not mapped.*materialize the asset unify/match_model"):
        unify(UnifyConfig.model_validate(raw), frames(), KEYS, match_method=ProbabilisticMatches(hand_model()))


def test_a_damaged_or_outdated_stored_model_is_a_clear_error():
    with pytest.raises(UserError, match=r"lake/m.json: the stored match model is not readable JSON.*retrain"):
        read_model(b"{not json", "lake/m.json")
    described = hand_model().to_dict() | {"format": 0}
    with pytest.raises(UserError, match=r"lake/m.json: .*layout.*retrain"):
        read_model(json.dumps(described).encode(), "lake/m.json")


def test_mistakes_in_the_settings_name_their_key_path():
    bad_kind = {"comparisons": [{"kind": "soundalike", "column": "email"}], "blocking": [["email"]]}
    with pytest.raises(SettingsError, match=r"unify.match.probabilistic: comparisons\[0\].*soundalike"):
        configured_settings(config(probabilistic=bad_kind))
    bad_level = {"comparisons": [{"kind": "email", "column": "email", "without": ["same_town"]}], "blocking": ["email"]}
    with pytest.raises(SettingsError, match=r"unify.match.probabilistic: comparisons\[0\].*same_town"):
        configured_settings(config(probabilistic=bad_level))
    disorder = {"comparisons": [{"kind": "jaro_winkler", "column": "city", "thresholds": [0.7, 0.9]}]}
    with pytest.raises(SettingsError, match=r"unify.match.probabilistic: comparisons\[0\].*thresholds"):
        configured_settings(config(probabilistic=disorder | {"blocking": [["city"]]}))


CONFIG = """
sources:
  crm:
    owner: me
    tables:
      contacts: {format: csv, path: c.csv, primary_key: id}
unify:
  tables:
    - source: crm
      table: contacts
      columns: {email: email, first: first_name, born: birth_date}
  match:
    method: probabilistic
"""


def load(tmp_path, match: dict):
    raw = yaml.safe_load(CONFIG)
    raw["unify"]["match"] |= match
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(raw))
    return load_config(tmp_path / "c.yaml")


def test_a_model_setting_written_beside_the_method_is_told_where_it_goes(tmp_path):
    with pytest.raises(ConfigError) as err:
        load(tmp_path, {"link_type": "link_only"})
    assert "unify.match: link_type: a setting of the probabilistic model; write it under unify.match.probabilistic" in (
        "\n".join(err.value.problems)
    )
    assert set(MODEL_SETTINGS) == {f.name for f in dataclasses.fields(Settings)}


def test_config_refuses_comparisons_and_blocking_keys_on_unmapped_attributes(tmp_path):
    assert load(tmp_path, {}).unify.match.method == "probabilistic"
    settings = {
        "comparisons": [
            {"kind": "name", "column": "first_name", "swap_with": "last_name"},
            {"kind": "date", "column": "born"},
        ],
        "blocking": [["email"], ["soundex(last_name)", "birth_date"]],
    }
    with pytest.raises(ConfigError) as err:
        load(tmp_path, {"probabilistic": settings})
    text = str(err.value)
    assert "unify.match.probabilistic.comparisons[0].swap_with: 'last_name' is not mapped" in text
    assert "unify.match.probabilistic.comparisons[1].column: 'born' is not mapped" in text
    assert "unify.match.probabilistic.blocking[1]: key 'soundex(last_name)' reads 'last_name'" in text
    assert "blocking[1]: key 'birth_date'" not in text and "blocking[0]" not in text


def test_config_refuses_probabilistic_settings_under_the_rules_method(tmp_path):
    with pytest.raises(ConfigError, match=r"method is 'rules'.*set unify.match.method: probabilistic"):
        load(tmp_path, {"method": "rules", "probabilistic": {"blocking": [["email"]]}})


def explain_robert(model: Model) -> dict:
    """``explain_pair`` of Robert Smith's CRM contact and loyalty member (nickname Bob) with ``model``."""
    cfg = config()
    records = build_records(cfg, frames(), KEYS)
    pair = (("crm", "contacts", "c1"), ("loyalty", "members", "m1"))
    return explain_pair(records, cfg, make_normalizer(cfg), *pair, model=model)


def test_explain_pair_shows_the_weight_of_each_comparison():
    info = explain_robert(hand_model())
    waterfall = info["probabilistic"]
    rows = {c["comparison"]: c for c in waterfall["comparisons"]}
    assert rows["first_name"]["level"] == "nickname" and rows["first_name"]["left_value"] == "robert"
    assert rows["last_name"]["level"] == "exact" and rows["last_name"]["weight"] == pytest.approx(np.log2(85), 1e-3)
    assert rows["email"]["level"] == "null" and rows["email"]["weight"] == 0
    total = waterfall["prior_weight"] + sum(c["weight"] for c in waterfall["comparisons"])
    assert waterfall["match_weight"] == pytest.approx(total)
    assert waterfall["link"] is True and waterfall["threshold"] == 0.5
    text = render_pair(info)
    assert "model: prior weight -6.63" in text and "nickname" in text and "LINK" in text
    assert rows["last_name"]["term_frequency"] is None and "how rare" not in text

    # With term frequencies on the last name, the waterfall says how much of its weight the value's rarity makes.
    last = dataclasses.replace(SETTINGS.comparisons[1], term_frequency=True)
    tf = dataclasses.replace(SETTINGS, comparisons=(SETTINGS.comparisons[0], last, *SETTINGS.comparisons[2:]))
    info = explain_robert(hand_model(tf))
    rows = {c["comparison"]: c for c in info["probabilistic"]["comparisons"]}
    assert rows["last_name"]["term_frequency"] == pytest.approx(rows["last_name"]["weight"] - np.log2(85))
    assert rows["last_name"]["term_frequency"] != 0 and rows["first_name"]["term_frequency"] is None
    said = next(line for line in render_pair(info).splitlines() if "last_name:" in line)
    assert said.endswith(f"exact ({rows['last_name']['term_frequency']:+.2f} of it for how rare the value is)")


def people(n: int, seed: int) -> tuple[dict, pd.DataFrame]:
    """Two tables of ``n`` made-up people with typing errors and missing values, and who is who."""
    rng = np.random.default_rng(seed)
    first = np.array(["anna", "ben", "carla", "dmitri", "elif", "farah", "goran", "hana", "ivan", "jana", "karl"])
    first = np.array([f + s for f in first for s in ("", "e", "o", "ia", "us")])
    last = np.array([f"{a}{b}" for a in ("berg", "stein", "holm", "vik", "dal", "mark") for b in "aeiouyklmn"])
    person = pd.DataFrame(
        {
            "first": rng.choice(first, n),
            "last": rng.choice(last, n),
            "born": pd.to_datetime("1950-01-01") + pd.to_timedelta(rng.integers(0, 20000, n), unit="D"),
            "phone": [f"555{x:07d}" for x in rng.choice(10_000_000, n, replace=False)],
            "zip": [f"{x:05d}" for x in rng.integers(10_000, 10_300, n)],
        }
    )
    person["email"] = person["first"] + "." + person["last"] + [f"{i}@example.org" for i in range(n)]

    def typo(values: pd.Series, share: float) -> pd.Series:
        hit = rng.random(len(values)) < share
        cut = values.str.len().to_numpy() // 2
        changed = [v[:c] + "x" + v[c + 1 :] for v, c in zip(values[hit], cut[hit], strict=True)]
        out = values.copy()
        out[hit] = changed
        return out

    def blank(values: pd.Series, share: float) -> pd.Series:
        return values.where(rng.random(len(values)) >= share)

    crm = pd.DataFrame(
        {
            "id": [f"c{i}" for i in range(n)],
            "first": typo(person["first"], 0.1),
            "last": person["last"],
            "email": blank(person["email"], 0.2),
            "born": blank(person["born"].dt.strftime("%Y-%m-%d"), 0.1),
            "zip": blank(person["zip"], 0.1),
        }
    )
    shop_people = np.sort(rng.choice(n, n * 2 // 3, replace=False))
    shop = pd.DataFrame(
        {
            "cid": [f"s{i}" for i in shop_people],
            "name": (typo(person["first"], 0.1) + " " + typo(person["last"], 0.1)).to_numpy()[shop_people],
            "mail": blank(person["email"], 0.3).to_numpy()[shop_people],
            "tel": blank(person["phone"], 0.2).to_numpy()[shop_people],
            "dob": blank(person["born"].dt.strftime("%Y-%m-%d"), 0.3).to_numpy()[shop_people],
            "postcode": blank(person["zip"], 0.1).to_numpy()[shop_people],
        }
    )
    truth = pd.concat(
        [
            pd.DataFrame({"source": "crm", "key": crm["id"], "person": np.arange(n)}),
            pd.DataFrame({"source": "shop", "key": shop["cid"], "person": shop_people}),
        ]
    )
    tables = {("crm", "contacts"): crm.astype("string"), ("shop", "customers"): shop.astype("string")}
    return tables, truth


def pairwise(result, truth: pd.DataFrame) -> tuple[float, float]:
    """Precision and recall of the record pairs a unification puts under one CustomerId, against ``truth``."""
    found = result.alternate_key[["DataSourceName", "AlternateValue", "CustomerId"]].set_axis(
        ["source", "key", "id"], axis=1
    )
    joined = truth.merge(found, on=["source", "key"])
    same_person = joined.merge(joined, on="person")
    same_person = same_person[same_person.key_x < same_person.key_y]
    same_id = joined.merge(joined, on="id")
    same_id = same_id[same_id.key_x < same_id.key_y]
    correct = (same_id.person_x == same_id.person_y).sum()
    return correct / len(same_id), correct / len(same_person)


GENERATED = {
    "tables": [
        {
            "source": "crm",
            "table": "contacts",
            "columns": {
                "first": "first_name",
                "last": "last_name",
                "email": "email",
                "born": "birth_date",
                "zip": "postal_code",
            },
        },
        {
            "source": "shop",
            "table": "customers",
            "columns": {
                "name": "full_name",
                "mail": "email",
                "tel": "phone",
                "dob": "birth_date",
                "postcode": "postal_code",
            },
        },
    ],
    "match": {"method": "probabilistic"},
}
GENERATED_KEYS = {("crm", "contacts"): "id", ("shop", "customers"): "cid"}


def test_a_model_trained_on_the_tables_links_people_and_prints_its_chosen_settings():
    tables, truth = people(600, seed=3)
    cfg = UnifyConfig.model_validate(GENERATED)
    model, said = train_from_tables(cfg, tables, GENERATED_KEYS)
    chosen = yaml.safe_load(model.training["settings_yaml"])
    assert chosen["method"] == "probabilistic" and model.training["chosen"] == "default"
    compared = {c["column"] for c in chosen["probabilistic"]["comparisons"]}
    assert compared >= {"first_name", "last_name", "email", "birth_date"}
    # The single-field rules added or left out for the pair budget head the printed settings as comments.
    budget = [line for line in model.training["settings_yaml"].splitlines() if "pair budget" in line]
    assert budget and all(line.startswith("# blocking rule [") for line in budget)
    assert [line[2:] for line in budget] == [note for note in said if "pair budget" in note]
    # The printed settings, pasted into the configuration, are read back unchanged.
    pasted = UnifyConfig.model_validate(GENERATED | {"match": chosen})
    assert pasted.match.method == "probabilistic"
    assert configured_settings(pasted).to_dict() == model.settings.to_dict()
    stored = read_model(model_json(model), "match_model.json")
    r = unify(pasted, tables, GENERATED_KEYS, match_method=ProbabilisticMatches(stored))
    precision, recall = pairwise(r, truth)
    assert precision >= 0.98 and recall >= 0.9


def test_a_block_giving_its_own_blocking_is_not_told_the_defaults_notes_on_blocking_rules():
    tables, _ = people(600, seed=3)
    given = GENERATED | {"match": {"method": "probabilistic", "probabilistic": {"blocking": [["email"], ["phone"]]}}}
    model, said = train_from_tables(UnifyConfig.model_validate(given), tables, GENERATED_KEYS)
    assert [r.keys for r in model.settings.blocking] == [
        r.keys
        for r in Settings.from_dict(
            {"comparisons": [{"kind": "exact", "column": "email"}], "blocking": [["email"], ["phone"]]}
        ).blocking
    ]
    # The default's choice among single-field rules is not what ran: neither said nor printed over the settings.
    assert not [note for note in said if "blocking rule" in note]
    assert "# blocking rule" not in model.training["settings_yaml"]
    # Its notes on the comparisons it chose still are.
    default, _ = train_from_tables(UnifyConfig.model_validate(GENERATED), tables, GENERATED_KEYS)
    assert [n for n in default.training["notes"] if not n.startswith("blocking rule")] == model.training["notes"]
    assert set(model.training["notes"]) <= set(said)


def test_link_only_without_rules_trains_where_only_one_table_holds_the_birth_year():
    # The default chose its training rules counting pairs as a dedupe would form them: the rules on the year found
    # pairs within the census, none between the files, and training stopped (every rule left reads the first name).
    rng = np.random.default_rng(6)
    n = 400
    census = pd.DataFrame(
        {
            "cid": [f"c{i}" for i in range(n)],
            "first": rng.choice(["ann", "bob", "cy", "dee", "eve", "fay", "gus", "hal", "ida", "jo"], n),
            "last": [f"name{i}" for i in rng.integers(0, 120, n)],
            "year": rng.integers(1820, 1850, n).astype(str),
            "place": rng.choice(["ny", "pa", "oh", "ir", "de"], n),
        },
        dtype="string",
    )
    service = census.drop(columns="year").assign(cid=[f"s{i}" for i in range(n)]).rename(columns={"cid": "sid"})
    service.loc[::4, "first"] = service.loc[::4, "first"] + "x"
    raw = {
        "tables": [
            {
                "source": "ua",
                "table": "cen",
                "columns": {"first": "first_name", "last": "last_name", "year": "birth_year", "place": "city"},
            },
            {"source": "ua", "table": "msr", "columns": {"first": "first_name", "last": "last_name", "place": "city"}},
        ],
        "match": {"method": "probabilistic", "probabilistic": {"link_type": "link_only"}},
    }
    tables = {("ua", "cen"): census, ("ua", "msr"): service}
    model, _ = train_from_tables(UnifyConfig.model_validate(raw), tables, {("ua", "cen"): "cid", ("ua", "msr"): "sid"})
    assert model.settings.link_type == "link_only"
    assert not [r for r in model.settings.training_rules if "birth_year" in r.columns]


def _two_waves(n: int = 500, seed: int = 8) -> tuple[dict, dict]:
    """Two waves of a survey without names or dates: coded categories only, each person once per wave, the second
    wave keying one code wrongly for one person in eight."""
    rng = np.random.default_rng(seed)
    codes = {c: rng.integers(1, k, n).astype(str) for c, k in (("sex", 3), ("born", 60), ("region", 20), ("school", 8))}
    first = pd.DataFrame({"rid": [f"a{i}" for i in range(n)], **codes}, dtype="string")
    second = first.assign(rid=[f"b{i}" for i in range(n)])
    wrong = rng.random(n) < 0.125
    second.loc[wrong, "school"] = "9"
    columns = {"sex": "gender", "born": "custom", "region": "custom", "school": "custom"}
    raw = {
        "tables": [{"source": "s", "table": t, "columns": columns} for t in ("w1", "w2")],
        "match": {"method": "probabilistic", "probabilistic": {"link_type": "link_only", "blocking": [["born"]]}},
    }
    return raw, {("s", "w1"): first, ("s", "w2"): second}


def test_blocking_given_alone_is_used_where_no_default_rule_fits_and_trains_what_it_reads():
    # No two mapped fields pair up into a default rule: the block's own blocking is what runs, and the comparison
    # every rule of it reads (born) is trained on the pairs alike in all else.
    raw, tables = _two_waves()
    keys = {("s", "w1"): "rid", ("s", "w2"): "rid"}
    model, said = train_from_tables(UnifyConfig.model_validate(raw), tables, keys)
    assert [str(r) for r in model.settings.blocking] == ["born"]
    assert [str(r) for r in model.settings.training_rules] == ["born", "gender & region & school"]
    assert any(
        n.startswith("training rule [gender & region & school] added: every other rule reads born") for n in said
    )
    born = next(p for p in model.parameters if p.name == "born")
    assert born.active and born.weights[0] > 3
    # Without the block's blocking, the default still says it has no rule to offer.
    del raw["match"]["probabilistic"]["blocking"]
    with pytest.raises(SettingsError, match="no default blocking rule fits these records"):
        train_from_tables(UnifyConfig.model_validate(raw), tables, keys)


def test_a_training_that_cannot_start_also_tells_the_birth_dates_unify_could_not_read():
    # Birth dates in three columns whose years have two digits: none is read, so no default rule fits the coded
    # fields left, and the failed run would never reach the warning that says why.
    raw, tables = _two_waves()
    del raw["match"]["probabilistic"]["blocking"]
    for t in raw["tables"]:
        t["columns"] |= {"yy": "birth_year", "mm": "birth_month", "dd": "birth_day"}
    for key, frame in tables.items():
        tables[key] = frame.assign(yy="72", mm="5", dd="17")
    with pytest.raises(SettingsError) as failed:
        unify(
            UnifyConfig.model_validate(raw),
            tables,
            {("s", "w1"): "rid", ("s", "w2"): "rid"},
            match_method=TrainingMatches(),
        )
    message = str(failed.value)
    assert message.startswith("no default blocking rule fits these records (birth_date (birth_date) neither compared")
    assert "Beware: s.w1.yy/mm/dd: 500 value(s) are not dates unify can read (e.g. '72/5/17'" in message
    assert "write the year in full (1972, not 72)" in message


def test_a_year_of_birth_beside_a_birth_date_in_another_table_is_compared_as_that_date_known_in_part():
    # A loyalty table asks the year of birth, the CRM keeps the whole date, a census the year and month: the model
    # compares all of them as one birth date, each on the parts it knows, not each within its own tables.
    raw = {
        "tables": [
            {"source": "s", "table": "crm", "columns": {"n": "last_name", "dob": "birth_date"}},
            {"source": "s", "table": "club", "columns": {"n": "last_name", "yob": "birth_year"}},
            {"source": "s", "table": "census", "columns": {"n": "last_name", "y": "birth_year", "m": "birth_month"}},
        ],
        "match": {"method": "probabilistic"},
    }
    config = UnifyConfig.model_validate(raw)
    assert model_attributes(config) == {"last_name": "last_name", "birth_date": "birth_date"}
    tables = {
        ("s", "crm"): pd.DataFrame({"id": ["1"], "n": ["berg"], "dob": ["1967-09-27"]}, dtype="string"),
        ("s", "club"): pd.DataFrame({"id": ["2", "3"], "n": ["berg", "dahl"], "yob": ["1967", None]}, dtype="string"),
        ("s", "census"): pd.DataFrame({"id": ["4"], "n": ["berg"], "y": ["1967"], "m": ["9"]}, dtype="string"),
    }
    keys = {name: "id" for name in tables}
    records = build_records(config, tables, keys)
    compared = model_records(config, records, make_normalizer(config, None))
    assert compared["birth_date"].tolist() == ["1967-09-27", "1967-00-00", pd.NA, "1967-09-00"]
    # Where no table maps a birth date, the year is compared as a year.
    raw["tables"] = raw["tables"][1:2]
    assert "birth_year" in model_attributes(UnifyConfig.model_validate(raw))


def test_a_run_that_trains_on_its_own_records_unifies_as_training_apart_then_scoring_does():
    tables, _ = people(400, seed=11)
    cfg = UnifyConfig.model_validate(GENERATED)
    model, said = train_from_tables(cfg, tables, GENERATED_KEYS)
    apart = unify(cfg, tables, GENERATED_KEYS, run_id="r1", match_method=ProbabilisticMatches(model))
    training = TrainingMatches()
    within = unify(cfg, tables, GENERATED_KEYS, run_id="r1", match_method=training)
    # The same model, warnings and unification: training reads the run's prepared records, not its own copy.
    assert model_json(training.model) == model_json(model) and training.said == said and training.train_s > 0
    for name in ("customer_profile", "alternate_key", "match_pairs"):
        pd.testing.assert_frame_equal(getattr(within, name), getattr(apart, name))
    # The state is keyed to the trained model, so the next run, scoring with the stored model, reuses its pairs.
    assert within.state.meta["method"] == ProbabilisticMatches(model).state_key(cfg)
    stored = ProbabilisticMatches(read_model(model_json(training.model), "match_model.json"))
    shuffled = {k: f.iloc[::-1].reset_index(drop=True) for k, f in tables.items()}
    ids = within.identity
    nightly = unify(
        cfg, shuffled, GENERATED_KEYS, ids.identity_map, ids.id_change, "r2", match_method=stored, state=within.state
    )
    assert nightly.stats["incremental"]["incremental"] is True
    assert nightly.stats["incremental"]["model_pairs_reused"] == len(within.state.model_pairs)


def generated_project(tmp_path, match: dict | None = None):
    """A project over two tables of made-up people, ingested into a real lake folder."""
    tables, _ = people(300, seed=5)
    sources = {}
    for (source, table), pk in GENERATED_KEYS.items():
        sources[source] = {
            "owner": "me",
            "tables": {table: {"format": "csv", "path": f"{table}.csv", "primary_key": pk}},
        }
    raw = {
        "lake": {"url": "lake"},
        "sources": sources,
        "unify": GENERATED | {"match": match or {"method": "probabilistic"}},
    }
    (tmp_path / "ci_pipeline.yaml").write_text(yaml.safe_dump(raw))
    lake = Lake.local(tmp_path / "lake")
    for (source, table), df in tables.items():
        lake.write_parquet(f"ci_pipeline/{source}/{table}.parquet", df)
    return load_config(tmp_path / "ci_pipeline.yaml"), lake


def materialize(cfg, selection, instance: dg.DagsterInstance | None = None):
    defs = build_definitions(cfg)
    assets = list(defs.assets or [])
    assets += [dg.SourceAsset(dg.AssetKey([s, t])) for s, t in GENERATED_KEYS]
    return dg.materialize(
        assets, resources=shared_resources(cfg), selection=selection, raise_on_error=True, instance=instance
    )


def materialized(result, name: str):
    return next(
        e.materialization for e in result.get_asset_materialization_events() if e.asset_key == unify_defs.key(name)
    )


def test_the_match_model_asset_is_stored_and_unification_scores_with_it(tmp_path):
    cfg, lake = generated_project(tmp_path)
    unification = dg.AssetSelection.groups("unify") - dg.AssetSelection.assets(unify_defs.key("match_model"))
    # No stored model yet: the run trains one, with a warning, and stores it; the next run scores with it.
    trained_in_run = dg.DagsterInstance.ephemeral()
    first = materialize(cfg, unification, trained_in_run)
    assert first.success and lake.exists(MODEL_PATH)
    # What training handled by design (strata too small to fit apart) informs; it does not warn.
    handled = [e for e in trained_in_run.all_logs(first.run_id) if "(no action needed)" in e.user_message]
    assert handled and {e.level for e in handled} == {logging.INFO}
    kept = lake.read_bytes(MODEL_PATH)
    # The model it stored is the model asset's materialization, with what it learnt.
    recorded = materialized(first, "match_model")
    assert recorded.description == "trained by unification"
    assert recorded.metadata["training records"].value == 500 and recorded.metadata["parameters"].records
    instance = dg.DagsterInstance.ephemeral()
    again = materialize(cfg, unification, instance)
    assert again.success and lake.read_bytes(MODEL_PATH) == kept
    said = [e.user_message for e in instance.all_logs(again.run_id)]
    assert any(m.startswith("unify: scoring with the stored match model at ") and "500 records" in m for m in said)
    assert any(re.search(r", stored on \d{4}-\d\d-\d\d \d\d:\d\d UTC, trained on", m) for m in said)
    # The run that trained kept its pairs under the model it stored: the next run reuses them.
    assert materialized(again, "unify_stats").metadata["incremental"].value is True
    trained = materialize(cfg, dg.AssetSelection.assets(unify_defs.key("match_model")))
    # Trained again on the same tables: the same model.
    assert read_model(lake.read_bytes(MODEL_PATH), "").to_dict() == read_model(kept, "").to_dict()
    metadata = materialized(trained, "match_model").metadata
    levels = [row.data for row in metadata["parameters"].records]
    exact = next(r for r in levels if (r["comparison"], r["level"]) == ("first_name", "exact"))
    assert exact["weight"] > 4 and exact["m"] > exact["u"]
    assert 0 < metadata["prior_match_probability"].value < 1
    tables = {row.data["table"]: row.data["records"] for row in metadata["training_tables"].records}
    assert tables == {"crm.contacts": 300, "shop.customers": 200}
    assert {row.data["rule"] for row in metadata["training_pairs_per_rule"].records}
    assert metadata["training records"].value == 500 and metadata["training labelled_matches"].value == 0
    assert metadata["trace"].records and "probabilistic:" in metadata["settings"].value
    # The weights drawn: one bar per level of each comparison, first name's exact level right of the axis.
    chart = metadata["weights_chart"].value.strip("`\n").splitlines()
    silent = {r["comparison"] for r in levels if r["level"] == "(no evidence)"}
    main = [r for r in levels if r["fit"] == "main" and r["level"] != "(no evidence)"]
    assert len(chart) == sum(1 for r in main if r["comparison"] not in silent)
    # Each level's weight is log2(m / u) of the m and u shown (to their four significant digits).
    for r in main:
        assert r["weight"] == pytest.approx(np.log2(r["m"] / r["u"]), abs=0.01)
    # The strata's own fits are shown too, each named by its keys, with the pairs it weighs.
    model = read_model(stored := lake.read_bytes(MODEL_PATH), "")
    strata = [row.data for row in metadata["strata"].records]
    assert [s["stratum"] for s in strata] == [
        "stratum " + " or ".join(f"[{', '.join(k)}]" for k in s.keys) for s in model.strata
    ]
    assert {r["fit"] for r in levels} == {"main"} | {s["stratum"] for s in strata}
    assert next(line for line in chart if line.startswith("first_name exact ")).split("│")[1].startswith("█")
    second = materialize(cfg, unification)
    scoring = materialized(second, "unify_stats").metadata
    assert scoring["match_method"].value == "probabilistic" and scoring["match_method links"].value > 0
    assert sum(row.data["pairs"] for row in scoring["match_pairs_per_blocking_rule"].records) == (
        scoring["match_method candidate_pairs"].value
    )
    assert lake.read_bytes(MODEL_PATH) == stored  # scoring never retrains
    profile = lake.read_parquet("ci_pipeline/unify/customer_profile.parquet")
    assert 250 <= len(profile) <= 330
    # The unify jobs leave the model alone: it is retrained on demand or by its own job.
    defs = build_definitions(cfg)
    assert [list(k.path) for k in defs.resolve_job_def("train_match_model").asset_layer.selected_asset_keys] == [
        ["unify", "match_model"]
    ]
    assert unify_defs.key("match_model") not in defs.resolve_job_def("unify_only").asset_layer.selected_asset_keys


def test_nightly_runs_with_the_stored_model_unify_incrementally_as_a_full_run_does(tmp_path):
    cfg, lake = generated_project(tmp_path)
    unification = dg.AssetSelection.groups("unify") - dg.AssetSelection.assets(unify_defs.key("match_model"))
    materialize(cfg, dg.AssetSelection.assets(unify_defs.key("match_model")))
    first = materialized(materialize(cfg, unification), "unify_stats").metadata
    assert first["incremental"].value is False
    crm = lake.read_parquet("ci_pipeline/crm/contacts.parquet")
    lake.write_parquet("ci_pipeline/crm/contacts.parquet", pd.concat([crm, crm.iloc[[0]].assign(id="new-1")]))
    second = materialized(materialize(cfg, unification), "unify_stats").metadata
    assert second["incremental"].value is True and second["incremental records_new"].value == 1
    assert 0 < second["incremental model_pairs_reused"].value < second["match_method candidate_pairs"].value
    incremental = lake.read_parquet("ci_pipeline/unify/alternate_key.parquet")
    ids = incremental.set_index("AlternateValue")["CustomerId"]
    assert ids["new-1"] == ids[crm["id"].iloc[0]]
    # The same data without the state: every pair scored, the same published tables.
    lake.delete(STATE_DIR, recursive=True)
    third = materialized(materialize(cfg, unification), "unify_stats").metadata
    assert third["incremental"].value is False
    pd.testing.assert_frame_equal(lake.read_parquet("ci_pipeline/unify/alternate_key.parquet"), incremental)


def test_a_stored_model_from_another_configuration_fails_the_run_saying_to_retrain(tmp_path):
    cfg, lake = generated_project(tmp_path)
    materialize(cfg, dg.AssetSelection.assets(unify_defs.key("match_model")))
    other = {
        "method": "probabilistic",
        "probabilistic": {"comparisons": [{"kind": "exact", "column": "email"}], "blocking": [["email"]]},
    }
    cfg, _ = generated_project(tmp_path, other)
    with pytest.raises(UserError, match=r"does not fit.*materialize the asset unify/match_model"):
        materialize(cfg, dg.AssetSelection.assets(unify_defs.key("customer_profile")))


def test_a_block_of_settings_need_only_say_what_it_changes(tmp_path):
    """Keys left out of unify.match.probabilistic are the default's: a threshold alone keeps the chosen comparisons
    and blocking; blocking rules alone keep the comparisons and train on themselves."""
    model_asset = dg.AssetSelection.assets(unify_defs.key("match_model"))
    cfg, lake = generated_project(tmp_path)
    materialize(cfg, model_asset)
    default = read_model(lake.read_bytes(MODEL_PATH), "default")
    cfg, lake = generated_project(tmp_path, {"method": "probabilistic", "probabilistic": {"threshold": 0.9}})
    materialize(cfg, model_asset)
    stricter = read_model(lake.read_bytes(MODEL_PATH), "stricter")
    assert stricter.settings == dataclasses.replace(default.settings, threshold=0.9)
    assert stricter.training["configured_keys"] == ["threshold"]
    # Scoring keeps the model's comparisons and takes the configured threshold: no retraining needed.
    assert scoring_settings(cfg.unify, default, model_attributes(cfg.unify)).threshold == 0.9
    rules = [r.to_list() for r in reversed(default.settings.blocking)]
    cfg, lake = generated_project(tmp_path, {"method": "probabilistic", "probabilistic": {"blocking": rules}})
    materialize(cfg, model_asset)
    own = read_model(lake.read_bytes(MODEL_PATH), "own rules").settings
    assert own.comparisons == default.settings.comparisons and own.strata == default.settings.strata
    assert [r.to_list() for r in own.blocking] == rules and own.training_blocking == ()


def test_pasted_comparisons_without_strata_fit_the_default_model_and_dropping_them_does_not(tmp_path):
    """The comparisons the default chose, pasted without its strata, are the default model's settings (strata left
    out are the default's); a model trained with configured comparisons does not fit a configuration that leaves
    them to the default again."""
    model_asset = dg.AssetSelection.assets(unify_defs.key("match_model"))
    cfg, lake = generated_project(tmp_path)
    materialize(cfg, model_asset)
    default = read_model(lake.read_bytes(MODEL_PATH), "default")
    assert default.settings.strata
    pasted = {"comparisons": [c.to_dict() for c in default.settings.comparisons]}
    cfg, _ = generated_project(tmp_path, {"method": "probabilistic", "probabilistic": pasted})
    assert scoring_settings(cfg.unify, default, model_attributes(cfg.unify)).strata == default.settings.strata
    materialize(cfg, dg.AssetSelection.assets(unify_defs.key("customer_profile")))
    materialize(cfg, model_asset)
    configured = read_model(lake.read_bytes(MODEL_PATH), "configured")
    assert configured.settings.comparisons == default.settings.comparisons
    assert configured.settings.strata == default.settings.strata
    cfg, _ = generated_project(tmp_path)
    with pytest.raises(UserError, match=r"comparisons configured then.*leaves to the default.*--job train_match_model"):
        materialize(cfg, dg.AssetSelection.assets(unify_defs.key("customer_profile")))


def test_the_stored_settings_file_pasted_under_match_scores_with_the_model_as_it_is(tmp_path):
    cfg, lake = generated_project(tmp_path)
    materialize(cfg, dg.AssetSelection.assets(unify_defs.key("match_model")))
    model = read_model(lake.read_bytes(MODEL_PATH), "stored")
    text = lake.read_bytes(SETTINGS_PATH).decode()
    assert text.startswith("# paste under unify.match")
    pasted = yaml.safe_load(text)
    assert pasted["method"] == "probabilistic"
    cfg, _ = generated_project(tmp_path, pasted)
    assert scoring_settings(cfg.unify, model, model_attributes(cfg.unify)) == model.settings


def test_a_comparison_or_rule_on_a_mapped_source_column_is_told_the_attribute_to_name(tmp_path):
    settings = {"comparisons": [{"kind": "exact", "column": "born"}], "blocking": [["zip"]]}
    with pytest.raises(ConfigError) as caught:
        generated_project(tmp_path, {"method": "probabilistic", "probabilistic": settings})
    message = str(caught.value)
    assert "comparisons[0].column: 'born' is not mapped" in message
    assert "('born' is a source column mapped to birth_date: name the attribute, birth_date)" in message
    assert "('zip' is a source column mapped to postal_code: name the attribute, postal_code)" in message


def test_validate_reads_the_override_files_and_names_pairs_of_tables_it_does_not_unify(tmp_path, capsys):
    match = {
        "method": "probabilistic",
        "never_match": [{"left": ["crm", "peeple", "c1"], "right": ["shop", "customers", "s1"]}],
        "never_match_file": "never.csv",
        "always_match_file": "always.csv",
    }
    generated_project(tmp_path, match)
    (tmp_path / "always.csv").write_text("left,right\ncrm|contacts|c1,shop|customers|s1\n")
    assert main(["validate", str(tmp_path / "ci_pipeline.yaml"), "--no-sources"]) == 0  # the file alone: no sources
    capsys.readouterr()
    assert main(["validate", str(tmp_path / "ci_pipeline.yaml")]) == 2
    err = capsys.readouterr().err
    assert "unify.match.never_match[0]: crm.peeple is not a unify table (crm.contacts, shop.customers)" in err
    assert "unify.match.never_match_file: cannot read" in err and "never.csv" in err
    assert "always.csv: the first line must be the header left_source,left_table,left_key," in err
    assert "not left,right" in err
    # A pair listed both ways.
    both = {"left": ["crm", "contacts", "c1"], "right": ["shop", "customers", "s1"]}
    generated_project(tmp_path, {"method": "probabilistic", "never_match": [both], "always_match": [both]})
    assert main(["validate", str(tmp_path / "ci_pipeline.yaml")]) == 2
    assert (
        "unify.match.never_match[0] and unify.match.always_match[0]: crm|contacts|c1 and shop|customers|s1 are listed "
        "as both never-match and always-match (never-match wins); remove one"
    ) in capsys.readouterr().err


def test_validate_reports_a_misset_option_of_a_partial_block(tmp_path, capsys):
    settings = {"threshold": 2, "treshold_typo": 1}
    generated_project(tmp_path, {"method": "probabilistic", "probabilistic": settings})
    assert main(["validate", str(tmp_path / "ci_pipeline.yaml"), "--no-sources"]) == 2
    err = capsys.readouterr().err
    # Under the unknown key's own path, so the line shown is its line; told once although the stored model's check
    # reads the settings too.
    assert "unify.match.probabilistic.treshold_typo: not a setting (did you mean 'threshold'?)" in err
    assert err.count("treshold_typo") == 1


def test_run_refuses_an_unknown_model_setting_naming_the_file_and_its_line(tmp_path, capsys):
    generated_project(tmp_path, {"method": "probabilistic", "probabilistic": {"treshold": 0.8}})
    config_file = tmp_path / "ci_pipeline.yaml"
    assert main(["run", "--config", str(config_file)]) == 2
    err = capsys.readouterr().err
    line = next(i for i, text in enumerate(config_file.read_text().splitlines(), 1) if "treshold" in text)
    assert str(config_file) in err
    assert f"line {line}: unify.match.probabilistic.treshold: not a setting (did you mean 'threshold'?)" in err


def test_explain_pair_command_shows_the_stored_model_weights(tmp_path, capsys):
    cfg, lake = generated_project(tmp_path)
    config_file = str(tmp_path / "ci_pipeline.yaml")
    unification = dg.AssetSelection.groups("unify") - dg.AssetSelection.assets(unify_defs.key("match_model"))
    materialize(cfg, unification)
    # Without a stored model (the first run stored one; here it is gone) there is no waterfall to show: the error
    # says how to train one.
    lake.delete(MODEL_PATH)
    assert main(["--config", config_file, "explain", "crm", "contacts", "c1", "--pair", "shop", "customers", "s1"]) == 2
    assert "match_model.json does not exist: train the match model first" in capsys.readouterr().err
    materialize(cfg, dg.AssetSelection.assets(unify_defs.key("match_model")))
    pair = ["crm", "contacts", "c1", "--pair", "shop", "customers", "s1"]
    assert main(["--config", config_file, "explain", *pair]) == 0
    out = capsys.readouterr().out
    assert "model: prior weight" in out and "first_name:" in out and "total weight" in out
    chart = out.split("waterfall (each step's weight and the running total):\n")[1].splitlines()
    assert chart[0].lstrip().startswith("prior") and chart[-1].lstrip().startswith("total weight")
    assert main(["--config", config_file, "explain", *pair, "--json"]) == 0
    waterfall = json.loads(capsys.readouterr().out)["probabilistic"]
    assert {c["comparison"] for c in waterfall["comparisons"]} >= {"first_name", "last_name", "birth_date"}
    assert 0 <= waterfall["match_probability"] <= 1


def test_malformed_model_settings_fail_when_the_configuration_loads(tmp_path):
    bad = {
        "method": "probabilistic",
        "probabilistic": {"comparisons": [{"kind": "levenshtein", "column": "email", "thresholds": [3, 1]}]},
    }
    with pytest.raises(ConfigError, match=r"unify.match.probabilistic.comparisons\[0\].thresholds: .*out of order"):
        generated_project(tmp_path, bad)


def test_pairs_labelled_as_one_person_seed_the_training():
    tables, truth = people(600, seed=3)
    # A person's contact c<i> and web-shop account s<i>, for the first three people with both.
    shop = truth.loc[truth["source"] == "shop", "person"].head(3)
    pairs = [{"left": ["crm", "contacts", f"c{i}"], "right": ["shop", "customers", f"s{i}"]} for i in shop]
    labelled = GENERATED | {
        "match": {
            "method": "probabilistic",
            "always_match": pairs + [{"left": ["crm", "contacts", "nobody"], "right": pairs[0]["right"]}],
        }
    }
    plain, _ = train_from_tables(UnifyConfig.model_validate(GENERATED), tables, GENERATED_KEYS)
    seeded, _ = train_from_tables(UnifyConfig.model_validate(labelled), tables, GENERATED_KEYS)
    # Three pairs of one person each (the pair naming a record not in the tables is left out): EM starts from the
    # levels they reach instead of the usual guess, so its first iteration differs.
    assert seeded.training["labelled_matches"] == 3 and plain.training["labelled_matches"] == 0
    assert seeded.trace[0] != plain.trace[0]
    assert seeded.settings.to_dict() == plain.settings.to_dict()


def test_tables_with_only_a_whole_name_compare_its_first_and_last_name_apart():
    # A typo in one part of a whole name leaves the other part's evidence and blocking rules: the model compares
    # the first and last name unification splits from it, as if mapped.
    tables, truth = people(600, seed=5)
    crm = tables[("crm", "contacts")]
    tables[("crm", "contacts")] = crm.assign(name=crm["first"] + " " + crm["last"]).drop(columns=["first", "last"])
    both = {**GENERATED, "tables": [dict(GENERATED["tables"][0]), GENERATED["tables"][1]]}
    both["tables"][0]["columns"] = {"name": "full_name", "email": "email", "born": "birth_date", "zip": "postal_code"}
    cfg = UnifyConfig.model_validate(both)
    assert {"first_name": "first_name", "last_name": "last_name"}.items() <= model_attributes(cfg).items()
    model, _ = train_from_tables(cfg, tables, GENERATED_KEYS)
    compared = {c.column for c in model.settings.comparisons}
    assert {"first_name", "last_name"} <= compared and "full_name" not in compared
    r = unify(cfg, tables, GENERATED_KEYS, match_method=ProbabilisticMatches(model))
    precision, recall = pairwise(r, truth)
    assert precision >= 0.95 and recall >= 0.95  # the whole name compared as one value: recall 0.970


def test_a_card_number_each_table_names_its_own_way_is_one_compared_attribute():
    tables, _ = people(600, seed=5)
    rng = np.random.default_rng(1)
    cards = pd.Series([f"L{x:07d}" for x in rng.choice(10_000_000, 600, replace=False)], dtype="string")
    crm, shop = tables[("crm", "contacts")], tables[("shop", "customers")]
    tables[("crm", "contacts")] = crm.assign(member=cards.where(rng.random(600) < 0.5))
    tables[("shop", "customers")] = shop.assign(card_no=cards[shop["cid"].str[1:].astype(int)].to_numpy())
    raw = {**GENERATED, "tables": [dict(t, columns=dict(t["columns"])) for t in GENERATED["tables"]]}
    raw["tables"][0]["columns"]["member"] = "custom:card"
    raw["tables"][1]["columns"]["card_no"] = "custom:card"
    cfg = UnifyConfig.model_validate(raw)
    assert model_attributes(cfg)["card"] == "custom"
    model, _ = train_from_tables(cfg, tables, GENERATED_KEYS)
    card = next(p for p in model.parameters if p.name == "card")
    assert card.m[0] > 0.9 and card.u[0] < 0.01  # exact agreement: the same card, nearly never strangers'


def with_placeholder_mail(tables: dict, holders: int, seed: int = 0) -> dict:
    """``tables`` with ``holders`` shop customers (of as many people) giving one made-up address."""
    shop = tables[("shop", "customers")].copy()
    rows = np.random.default_rng(seed).choice(len(shop), holders, replace=False)
    shop.loc[shop.index[rows], "mail"] = "none@shop.com"
    return {**tables, ("shop", "customers"): shop}


def test_the_model_takes_a_value_more_records_hold_than_the_guard_allows_for_missing():
    tables, truth = people(400, seed=5)
    tables = with_placeholder_mail(tables, 60)
    cfg = UnifyConfig.model_validate(GENERATED)
    training = TrainingMatches()
    result = unify(cfg, tables, GENERATED_KEYS, match_method=training)
    ignored = result.stats["frequent_values_ignored"]["email (match model)"]
    assert ignored["top"] == [("none@shop.com", 60)]
    # The strangers giving it are not paired by it (60 records would make 1,770 pairs on the e-mail address) and
    # no comparison weighs it.
    assert result.stats["match_method"]["pairs_per_rule"]["email"] < 200
    precision, recall = pairwise(result, truth)
    assert precision >= 0.98 and recall >= 0.9
    assert result.stats["match_method"]["frequent_values_ignored"] == {"email": {"none@shop.com": 60}}
    # explain --pair weighs two of its holders as the run did, and says why their addresses count for nothing.
    shop = tables[("shop", "customers")]
    a, b = shop.loc[shop["mail"] == "none@shop.com", "cid"].iloc[:2]
    records = build_records(cfg, tables, GENERATED_KEYS)
    pair = ("shop", "customers", a), ("shop", "customers", b)
    info = explain_pair(records, cfg, make_normalizer(cfg), *pair, model=training.model)
    rows = {c["comparison"]: c for c in info["probabilistic"]["comparisons"]}
    assert rows["email"]["level"] == "null" and rows["email"]["weight"] == 0
    assert info["probabilistic"]["too_frequent"] == {"email": {"none@shop.com": 60}}
    assert not any(b["together"] for b in info["probabilistic"]["blocking"] if b["rule"] == ["email"])
    assert "email 'none@shop.com' (60 records): ignored (missing)" in render_pair(info)


def test_a_value_grown_too_frequent_since_the_last_run_has_its_pairs_found_afresh():
    tables, _ = people(300, seed=8)
    cfg = UnifyConfig.model_validate(GENERATED)
    model, _ = train_from_tables(cfg, tables, GENERATED_KEYS)
    first = unify(cfg, with_placeholder_mail(tables, 20), GENERATED_KEYS, match_method=ProbabilisticMatches(model))
    grown = with_placeholder_mail(tables, 40)
    ids = first.identity
    nightly = unify(
        cfg,
        grown,
        GENERATED_KEYS,
        ids.identity_map,
        ids.id_change,
        "r2",
        match_method=ProbabilisticMatches(model),
        state=first.state,
    )
    assert nightly.stats["incremental"]["incremental"] is True
    # The model's pairs are found afresh (the rules' plan stays incremental), and the result is a full run's.
    assert "model_pairs_reused" not in nightly.stats["incremental"]
    full = unify(
        cfg, grown, GENERATED_KEYS, ids.identity_map, ids.id_change, "r2", match_method=ProbabilisticMatches(model)
    )
    for name in ("customer_profile", "alternate_key", "match_pairs"):
        pd.testing.assert_frame_equal(getattr(nightly, name), getattr(full, name))
    # Unchanged since: the next run reuses them again.
    again = unify(
        cfg,
        grown,
        GENERATED_KEYS,
        nightly.identity.identity_map,
        nightly.identity.id_change,
        "r3",
        match_method=ProbabilisticMatches(model),
        state=nightly.state,
    )
    assert again.stats["incremental"]["model_pairs_reused"] > 0


def test_validate_and_a_run_tell_before_it_starts_that_the_stored_model_does_not_fit(tmp_path):
    cfg, lake = generated_project(tmp_path)
    assert materialize(cfg, dg.AssetSelection.assets(unify_defs.key("match_model"))).success
    assert stored_model_problems(cfg, lake) == []
    # The postal codes unmapped since: the model compares them, so scoring would stop; retraining mends it.
    raw = yaml.safe_load((tmp_path / "ci_pipeline.yaml").read_text())
    for table in raw["unify"]["tables"]:
        table["columns"] = {c: t for c, t in table["columns"].items() if t != "postal_code"}
    (tmp_path / "ci_pipeline.yaml").write_text(yaml.safe_dump(raw))
    changed = load_config(tmp_path / "ci_pipeline.yaml")
    [problem] = stored_model_problems(changed, lake)
    assert "the stored match model does not fit the configuration" in problem and "train_match_model" in problem
    assert problem in project_problems(changed, lake, selected={("unify", "customer_profile")})
    assert problem not in project_problems(changed, lake, selected={("unify", "match_model")})


def test_switching_between_rules_and_the_model_says_why_the_run_is_full():
    tables, _ = people(300, seed=4)
    email = [{"name": "same_email", "conditions": [{"field": "email"}]}]
    rules = UnifyConfig.model_validate(GENERATED | {"match": {"method": "rules", "rules": email}})
    model_cfg = UnifyConfig.model_validate(GENERATED)
    last = unify(rules, tables, GENERATED_KEYS, run_id="r1")

    def reason(cfg, before, **method) -> str:
        ids = (before.identity.identity_map, before.identity.id_change, "r2")
        after = unify(cfg, tables, GENERATED_KEYS, *ids, state=before.state, **method)
        assert not after.stats["incremental"]["incremental"]
        return after.stats["incremental"]["reason"]

    assert "trained in this run (none is stored yet)" in reason(model_cfg, last, match_method=TrainingMatches())
    model, _ = train_from_tables(model_cfg, tables, GENERATED_KEYS)
    assert "the last run matched with rules" in reason(model_cfg, last, match_method=ProbabilisticMatches(model))
    scored = unify(model_cfg, tables, GENERATED_KEYS, run_id="r1", match_method=ProbabilisticMatches(model))
    assert "the last run matched with the probabilistic model, this one with rules" in reason(rules, scored)


def test_link_only_with_one_table_is_refused_saying_to_deduplicate():
    one = {"tables": GENERATED["tables"][:1], "match": {"method": "probabilistic"}}
    cfg = UnifyConfig.model_validate(
        one | {"match": {"method": "probabilistic", "probabilistic": {"link_type": "link_only"}}}
    )
    with pytest.raises(
        SettingsError, match=r"link_type: link_only pairs only records of different tables.*crm\.contacts.*dedupe"
    ):
        check_settings(cfg)
    # Two tables: accepted.
    two = UnifyConfig.model_validate(
        GENERATED | {"match": {"method": "probabilistic", "probabilistic": {"link_type": "link_only"}}}
    )
    check_settings(two)


def test_a_model_trained_while_a_configured_table_is_empty_says_to_retrain_once_it_holds_data():
    tables, _ = people(400, seed=6)
    later = {**GENERATED["tables"][1], "source": "loyalty", "table": "members"}
    cfg = UnifyConfig.model_validate(GENERATED | {"tables": [*GENERATED["tables"], later]})
    landed = {**tables, ("loyalty", "members"): tables[("shop", "customers")].iloc[0:0]}
    _, said = train_from_tables(cfg, landed, {**GENERATED_KEYS, ("loyalty", "members"): "cid"})
    [warned] = [w for w in said if "held no records" in w]
    assert warned.startswith("trained while loyalty.members held no records") and "train_match_model" in warned
    _, quiet = train_from_tables(UnifyConfig.model_validate(GENERATED), tables, GENERATED_KEYS)
    assert not [w for w in quiet if "held no records" in w]


def test_link_only_trains_and_scores_only_pairs_across_tables():
    # Each record's table reaches the model: before, training stopped saying it saw one table.
    tables, _ = people(400, seed=6)
    cfg = UnifyConfig.model_validate(
        GENERATED | {"match": {"method": "probabilistic", "probabilistic": {"link_type": "link_only"}}}
    )
    model, _ = train_from_tables(cfg, tables, GENERATED_KEYS)
    r = unify(cfg, tables, GENERATED_KEYS, match_method=ProbabilisticMatches(model))
    pairs = r.match_pairs[r.match_pairs.Rule == "probabilistic"]
    assert len(pairs) > 100 and (pairs.LeftTable != pairs.RightTable).all()
    # The tables hold no duplicates, so no chain of links across them makes one customer of two records of one.
    per_table = r.identity.identity_map.groupby(["CustomerId", "DataSourceName", "EntityName"]).size()
    assert per_table.max() == 1
    dedupe = UnifyConfig.model_validate(GENERATED | {"match": {"method": "probabilistic"}})
    model, _ = train_from_tables(dedupe, tables, GENERATED_KEYS)
    both = unify(dedupe, tables, GENERATED_KEYS, match_method=ProbabilisticMatches(model)).match_pairs
    assert (both[both.Rule == "probabilistic"].LeftTable == both[both.Rule == "probabilistic"].RightTable).any()


def test_training_settings_and_attributes_changed_since_training_are_said_to_wait_for_retraining():
    tables, _ = people(300, seed=4)
    shop = GENERATED["tables"][1]
    no_phone = {**shop, "columns": {k: v for k, v in shop["columns"].items() if v != "phone"}}
    base = {"tables": [GENERATED["tables"][0], no_phone]}
    cfg = UnifyConfig.model_validate(base | {"match": {"method": "probabilistic"}})
    model, _ = train_from_tables(cfg, tables, GENERATED_KEYS)
    quiet = unify(cfg, tables, GENERATED_KEYS, match_method=ProbabilisticMatches(model))
    assert not [w for w in quiet.warnings if "retrain" in w]
    # A training setting changed since (the threshold is a scoring one, in effect at once).
    changed = UnifyConfig.model_validate(
        base | {"match": {"method": "probabilistic", "probabilistic": {"seed": 7, "threshold": 0.8}}}
    )
    said = [
        w
        for w in unify(changed, tables, GENERATED_KEYS, match_method=ProbabilisticMatches(model)).warnings
        if "retrain" in w
    ]
    assert len(said) == 1 and said[0].startswith("unify.match.probabilistic: seed changed since the stored match model")
    # The shop's phone mapped since: not compared until retrained.
    added = UnifyConfig.model_validate(GENERATED)
    said = [
        w
        for w in unify(added, tables, GENERATED_KEYS, match_method=ProbabilisticMatches(model)).warnings
        if "retrain" in w
    ]
    assert len(said) == 1 and said[0].startswith("attribute(s) phone mapped since the stored match model was trained")


def test_a_record_key_written_as_a_number_is_refused_saying_to_quote_it(tmp_path):
    pair = {"left": ["crm", "contacts", 12], "right": ["loyalty", "members", "m1"]}
    with pytest.raises(ConfigError) as err:
        load(tmp_path, {"always_match": [pair]})
    text = str(err.value)
    assert "unify.match.always_match" in text and "in quotes" in text and "['crm', 'contacts', '12']" in text


def test_near_misses_below_the_threshold_are_published_for_review_and_explained_as_rejected():
    tables, _ = people(300, seed=6)
    cfg = UnifyConfig.model_validate(GENERATED)
    model, _ = train_from_tables(cfg, tables, GENERATED_KEYS)
    r = unify(cfg, tables, GENERATED_KEYS, match_method=ProbabilisticMatches(model))
    pairs = r.match_pairs[r.match_pairs.Rule == "probabilistic"]
    chance = pairs.Scores.map(lambda s: json.loads(s)["match_probability"])
    near = pairs[~pairs.Accepted]
    # At the default threshold 0.5, pairs whose odds are within a factor of ten of it: from 1/11 on.
    assert len(near) == r.stats["match_method"]["near_misses"] > 0
    assert (chance[~pairs.Accepted] >= 1 / 11 - 1e-6).all() and (chance[~pairs.Accepted] < 0.5).all()
    assert (chance[pairs.Accepted] >= 0.5).all()
    # The model's own estimate of its links' precision: their mean probability, and the links it expects wrong.
    report = r.stats["match_method"]
    assert report["links_expected_precision"] == round(chance[pairs.Accepted].mean(), 4) < 1
    assert report["links_expected_wrong"] == round((1 - chance[pairs.Accepted]).sum(), 1)
    # explain on a record of such a pair lists it as compared and rejected.
    row = near.iloc[0]
    info = explain_record(
        row.LeftSource, row.LeftTable, row.LeftKey, r.alternate_key, r.match_pairs, r.customer_profile
    )
    assert info["rejected"]


def test_explain_calls_a_pair_of_one_table_the_model_linked_a_match_pair_as_the_run_publishes_it():
    cfg = config()
    r = unify(cfg, frames(), KEYS, match_method=ProbabilisticMatches(hand_model()))
    records = build_records(cfg, frames(), KEYS)
    pair = ("crm", "contacts", "c2"), ("crm", "contacts", "c3")
    info = explain_pair(records, cfg, make_normalizer(cfg), *pair, r.alternate_key, r.match_pairs, hand_model())
    assert info["stage"] == "match" and [link["stage"] for link in info["last_run"]] == ["match"]
