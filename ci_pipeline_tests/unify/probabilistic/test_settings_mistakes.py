"""Mistakes a user makes writing ``unify.match.probabilistic`` by hand: each is a clear error naming its key, the
value and the fix (never a Python traceback), and ``validate`` refuses what a run refuses."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import yaml

from ci_pipeline.cli import main
from ci_pipeline.config import load_config
from ci_pipeline.errors import ConfigError
from ci_pipeline.grammar.blocking_keys import BlockingKeyError, parse_key
from ci_pipeline.grammar.comparisons import comparison_problems
from ci_pipeline.unify.probabilistic import BlockingRule, Settings, SettingsError, block, option_problems, prepare

BLOCKING = [["email"]]


def settings(*comparisons: dict, **options) -> Settings:
    return Settings.from_dict({"comparisons": list(comparisons), "blocking": BLOCKING, **options})


# 1. Values of the wrong type.


def test_a_single_threshold_is_one_threshold_everywhere():
    city = {"kind": "jaro_winkler", "column": "city", "thresholds": 0.9}
    comparison = settings(city).comparisons[0]
    assert comparison.thresholds == (0.9,)
    assert comparison.levels == ("exact", "jaro_winkler>=0.9", "else")
    table = prepare(pd.DataFrame({"city": ["london", "londen", "paris"]}, dtype="string"), ["city"])
    assert comparison.gamma(table, np.array([0, 0]), np.array([1, 2])).tolist() == [1, 2]
    # Its levels are known, so a level left out that it does not have is named.
    with pytest.raises(SettingsError, match=r"comparisons\[0\]\.without: unknown level\(s\) 'jaro_winkler>=0.8'"):
        settings(city | {"without": ["jaro_winkler>=0.8"]})
    assert settings({"kind": "levenshtein", "column": "city", "thresholds": 2}).comparisons[0].thresholds == (2,)


def test_leaving_out_every_level_but_else_is_refused():
    email = {"kind": "email", "column": "email", "without": ["exact", "same_user", "same_domain"]}
    expected = r"comparisons\[0\]\.without: leaves out every level but else; a comparison needs at least one level"
    with pytest.raises(SettingsError, match=expected):
        settings(email)
    assert comparison_problems(email, "unify.match.probabilistic.comparisons[0]") == [
        "unify.match.probabilistic.comparisons[0].without: leaves out every level but else; a comparison needs at "
        "least one level besides else: keep one of exact, same_user, same_domain (or remove the comparison)"
    ]


@pytest.mark.parametrize(
    ("key", "value", "said"),
    [
        ("seed", "abc", "seed: 'abc' is not a number; give a whole number of 0 or more, for example 42"),
        ("threshold", "high", "threshold: 'high' is not a number; give a match probability between 0 and 1"),
        ("max_pairs_per_rule", "lots", "max_pairs_per_rule: 'lots' is not a number; give a whole number of 1 or"),
        ("max_pairs_per_rule", 1.5, "max_pairs_per_rule: 1.5 is not a whole number; give a whole number of 1 or"),
        ("u_sample_pairs", True, "u_sample_pairs: True is not a number"),
        ("tolerance", [1e-5], "tolerance: [1e-05] is not a number; give a small number between 0 and 1"),
        ("seed", -1, "seed: -1 must be a whole number of 0 or more"),
    ],
)
def test_an_option_of_the_wrong_type_names_its_key_value_and_fix(key, value, said):
    assert [p[: len(said)] for p in option_problems({key: value})] == [said]
    with pytest.raises(SettingsError, match="^" + said.replace("[", r"\[").replace("(", r"\(")):
        settings({"kind": "exact", "column": "email"}, **{key: value})


def test_numbers_yaml_reads_as_text_are_read_as_numbers():
    # YAML reads 1e6 and 1e-5 as text; a user writing them means the numbers.
    options = yaml.safe_load("max_pairs_per_rule: 1e6\ntolerance: 1e-5\nthreshold: '0.9'\nseed: 7.0\n")
    assert option_problems(options) == []
    read = settings({"kind": "exact", "column": "email"}, **options)
    assert (read.max_pairs_per_rule, read.tolerance, read.threshold, read.seed) == (1_000_000, 1e-5, 0.9, 7)
    assert isinstance(read.max_pairs_per_rule, int) and isinstance(read.seed, int)


@pytest.mark.parametrize("value", ["yes please", "false", 1])
def test_term_frequency_must_be_true_or_false(value):
    email = {"kind": "email", "column": "email", "term_frequency": value}
    with pytest.raises(SettingsError, match=rf"comparisons\[0\]\.term_frequency: {value!r} is not a yes or no; "):
        settings(email)
    assert settings(email | {"term_frequency": False}).comparisons[0].term_frequency is False


# 2. What a run refuses, validate refuses: the configuration checks name the key path (and the file).

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
      columns: {email: email, first: first_name, last: last_name, town: city}
  match:
    method: probabilistic
    probabilistic:
      comparisons:
      - {kind: email, column: email}
      - {kind: name, column: first_name}
      blocking:
      - [email]
      - [first_name, last_name]
"""


def write(tmp_path, **changed) -> str:
    raw = yaml.safe_load(CONFIG)
    raw["unify"]["match"]["probabilistic"] |= changed
    path = tmp_path / "ci_pipeline.yaml"
    path.write_text(yaml.safe_dump(raw))
    return str(path)


@pytest.mark.parametrize(
    ("changed", "said"),
    [
        (
            {"comparisons": [{"kind": "email", "column": "email"}, {"kind": "jaro_winkler", "column": "email"}]},
            "unify.match.probabilistic.comparisons: column(s) compared twice (email by comparisons[0] and "
            "comparisons[1]); keep one comparison each",
        ),
        (
            {"blocking": [["email"], []]},
            "unify.match.probabilistic.blocking[1]: a blocking rule is a key or a non-empty list of keys",
        ),
        ({"strata": "email"}, "unify.match.probabilistic.strata: 'email' is no list of strata"),
        ({"strata": ["email"]}, "unify.match.probabilistic.strata[0]: 'email' is no list of keys"),
        ({"comparisons": {"kind": "exact"}}, "unify.match.probabilistic.comparisons: {'kind': 'exact'} is no list"),
    ],
)
def test_validate_and_the_run_refuse_what_the_settings_refuse(tmp_path, capsys, changed, said):
    path = write(tmp_path, **changed)
    assert main(["validate", path, "--no-sources"]) == 2
    err = capsys.readouterr().err
    assert said in err and "Traceback" not in err
    # A run loads the configuration the same way: the file is named.
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert said in str(caught.value) and str(tmp_path) in str(caught.value)
    # And the settings themselves refuse it.
    described = yaml.safe_load(CONFIG)["unify"]["match"]["probabilistic"] | changed
    with pytest.raises(SettingsError):
        Settings.from_dict(described)


def test_validate_refuses_settings_without_blocking_rules_as_a_run_does(tmp_path, capsys):
    assert main(["validate", write(tmp_path, blocking=[]), "--no-sources"]) == 2
    assert "unify.match.probabilistic.blocking: is empty; list at least one" in capsys.readouterr().err
    table = prepare(pd.DataFrame({"email": ["a@x.com"]}, dtype="string"), ["email"])
    with pytest.raises(SettingsError, match="blocking: no blocking rule"):
        block(table, (), 1000, link_only=False)


def test_validate_accepts_the_settings_a_run_accepts(tmp_path, capsys):
    path = write(tmp_path, strata=[["email"], [["nickname(first_name)", "last_name"]]], seed="7")
    assert main(["validate", path, "--no-sources"]) == 0, capsys.readouterr().err


# 3. A column counted twice through a place's general places.


@pytest.mark.parametrize("kind", ["place", "postal_code"])
def test_a_general_place_compared_on_its_own_too_is_a_column_compared_twice(kind):
    place = {"kind": kind, "column": "street" if kind == "place" else "zip", "then": ["city"]}
    city = {"kind": "jaro_winkler", "column": "city"}
    with pytest.raises(SettingsError, match=r"compared twice \(city by comparisons\[0\]\.then\[0\] and comparisons"):
        settings(place, city)
    # A name compared beside the other name column it swaps with is no double count.
    first = {"kind": "name", "column": "first_name", "swap_with": "last_name"}
    last = {"kind": "name", "column": "last_name", "swap_with": "first_name"}
    assert len(settings(place, first, last).comparisons) == 3


# 4. A blocking key YAML split at its comma.


def test_a_key_split_at_its_comma_says_to_quote_it():
    rule = yaml.safe_load("[prefix(last_name, 3), birth_date]")
    assert rule == ["prefix(last_name", "3)", "birth_date"]
    with pytest.raises(
        SettingsError, match=r"blocking\[0\]: cannot read blocking key 'prefix\(last_name'.*quote a key"
    ):
        Settings.from_dict({"comparisons": [{"kind": "exact", "column": "email"}], "blocking": [rule]})
    with pytest.raises(BlockingKeyError, match=r"quote a key holding a comma, for example 'prefix\(last_name, 3\)'"):
        parse_key("3)")
    with pytest.raises(BlockingKeyError) as caught:
        parse_key("first_name,last_name")
    assert "quote" not in str(caught.value)


# 5. Blocking rules named by their key path, as validate names them.


def test_a_rule_over_the_pair_limit_is_named_by_its_key_path():
    frame = pd.DataFrame({"country": ["us"] * 200, "email": [f"p{i}@x.com" for i in range(200)]}, dtype="string")
    table = prepare(frame, ["country", "email"])
    rules = tuple(BlockingRule.parse(r, "blocking") for r in (["email"], ["country"]))
    with pytest.raises(SettingsError, match=r"^blocking\[1\] \[country\] would generate 19,900 pairs"):
        block(table, rules, 1000, link_only=False)
    with pytest.raises(SettingsError, match=r"^training_blocking\[1\] \[country\] would generate"):
        block(table, rules, 1000, link_only=False, where="training_blocking")
    read = Settings.from_dict({"comparisons": [{"kind": "exact", "column": "email"}], "blocking": [["email"]]})
    unmapped = Settings(read.comparisons, read.blocking, training_blocking=(BlockingRule.parse("e", "t"),))
    with pytest.raises(SettingsError, match=r"training_blocking\[0\] \[e\] reads column 'e'"):
        unmapped.check_columns(["email"])
