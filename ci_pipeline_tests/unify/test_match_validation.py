"""`validate` finds every mistake in the probabilistic model's settings, with key paths and near misses, from the
comparison catalogue the matcher builds from (the configuration never imports the matcher)."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import fields

import pytest
import yaml

from ci_pipeline.cli import main
from ci_pipeline.grammar.comparisons import KINDS, comparison_problems
from ci_pipeline.unify.probabilistic import LIBRARY, SettingsError, comparison_from_dict

CONFIG = """
sources:
  crm:
    owner: me
    tables:
      contacts: {format: csv, path: contacts.csv, primary_key: id}
unify:
  tables:
    - source: crm
      table: contacts
      columns: {mail: email, first: first_name, last: last_name, born: birth_date, street: street, zip: postal_code}
  match:
    method: probabilistic
"""

KEY = "unify.match.probabilistic"


def validate(tmp_path, capsys, probabilistic: dict) -> tuple[int, str]:
    raw = yaml.safe_load(CONFIG)
    raw["unify"]["match"]["probabilistic"] = probabilistic
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(raw))
    (tmp_path / "contacts.csv").write_text(
        "id,mail,first,last,born,street,zip\n1,a@x.nl,ann,lee,1980-01-02,main,1234\n"
    )
    code = main(["validate", str(tmp_path / "c.yaml")])
    return code, capsys.readouterr().err


def test_every_mistake_in_the_comparisons_is_named_with_its_key_path_at_once(tmp_path, capsys):
    settings = {
        "comparisons": [
            {"kind": "jaro_winkle", "column": "last_name"},
            {"kind": "name", "column": "first_name", "without": ["nicknames"]},
            {"kind": "jaro_winkler", "column": "street", "thresholds": [0.8, 0.9]},
            {"kind": "levenshtein", "column": "last_name", "thresholds": [2, 1]},
            {"kind": "date", "column": "birthdate"},
            {"kind": "place", "column": "street", "then": ["postal_cod"]},
            {"kind": "jaro_winkler", "column": "email", "treshold": [0.9]},
        ],
        "blocking": [["email"], ["frist_name", "prefix(last_name, 3)"]],
    }
    code, err = validate(tmp_path, capsys, settings)
    assert code == 2
    expected = [
        f"{KEY}.comparisons[0].kind: unknown comparison kind 'jaro_winkle' (did you mean 'jaro_winkler'?)",
        f"{KEY}.comparisons[1].without: unknown level(s) 'nicknames' in without (did you mean 'nickname'?); a "
        "'name' comparison has levels exact, nickname, initial",
        f"{KEY}.comparisons[2].thresholds: thresholds [0.8, 0.9] are out of order; list them from high to low",
        f"{KEY}.comparisons[3].thresholds: thresholds [2, 1] are out of order; list them from low to high",
        f"{KEY}.comparisons[4].column: 'birthdate' is not mapped (did you mean 'birth_date'?)",
        f"{KEY}.comparisons[5].then[0]: 'postal_cod' is not mapped (did you mean 'postal_code'?)",
        f"{KEY}.comparisons[6]: unknown key(s) treshold (did you mean 'thresholds'?)",
        f"{KEY}.blocking[1]: key 'frist_name' reads 'frist_name', not mapped (did you mean 'first_name'?)",
    ]
    for message in expected:
        assert message in err
    assert "blocking[0]" not in err and "blocking[1]: key 'prefix" not in err


def test_correct_settings_validate(tmp_path, capsys):
    settings = {
        "comparisons": [
            {"kind": "name", "column": "first_name", "swap_with": "last_name", "without": ["initial"]},
            {"kind": "date", "column": "birth_date"},
            {"kind": "place", "column": "street", "then": ["postal_code"], "thresholds": [0.9]},
        ],
        "blocking": [["email"], ["first_name", "last_name"]],
    }
    assert validate(tmp_path, capsys, settings) == (0, "")


def test_blocking_and_strata_keys_are_read_as_the_matcher_reads_them(tmp_path, capsys):
    raw = yaml.safe_load(CONFIG)
    raw["unify"]["tables"][0]["columns"]["Member No"] = "custom"
    raw["unify"]["match"]["probabilistic"] = {
        # What the model's YAML says for a custom column named with blanks, pasted as the docs suggest.
        "blocking": [["Member No"], ["prefix(last_name, 3)", "born"], ["soundex(first_name, 2)"], "lst_name"],
        "training_blocking": [["Member No"]],
        "strata": [["email", ["street", "postal_code"]], [["first_name", "last nme"]]],
    }
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(raw))
    (tmp_path / "contacts.csv").write_text("id,mail,first,last,born,street,zip,Member No\n1,a@x.nl,ann,lee,,,,1\n")
    assert main(["validate", str(tmp_path / "c.yaml")]) == 2
    err = capsys.readouterr().err
    assert "key 'Member No'" not in err and "training_blocking" not in err
    for message in (
        f"{KEY}.blocking[1]: key 'born' reads 'born', not mapped",
        f"{KEY}.blocking[2]: soundex(first_name, 2): soundex takes one column (one argument); "
        "write soundex(first_name)",
        f"{KEY}.blocking[3]: key 'lst_name' reads 'lst_name', not mapped (did you mean 'last_name'?)",
        f"{KEY}.strata[1][0]: key 'last nme' reads 'last nme', not mapped (did you mean 'last_name'?)",
    ):
        assert message in err
    assert "strata[0]" not in err and "prefix(last_name" not in err


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"kind": "jaro_winkler", "column": "c", "thresholds": [1.5]}, "strictly between 0 and 1"),
        ({"kind": "jaro_winkler", "column": "c", "thresholds": "high"}, "strictly between 0 and 1"),
        ({"kind": "damerau_levenshtein", "column": "c", "thresholds": [0.5]}, "whole edit distances"),
        ({"kind": "postal_code", "column": "c", "prefix_length": 0}, ".prefix_length: 0 must be a whole number"),
        ({"kind": "name", "column": "c", "swap_with": "c"}, ".swap_with: names the column itself"),
        ({"kind": "place", "column": "c"}, ".then: a 'place' comparison needs 'then'"),
        ({"kind": "date", "column": "c", "without": ["else"]}, "unknown level(s) 'else'"),
        ({"kind": "email"}, "needs 'column'"),
        ("email", "a comparison is a mapping"),
    ],
)
def test_the_catalogue_and_the_matcher_refuse_the_same_descriptions(spec, message):
    found = comparison_problems(spec, "comparisons[0]")
    assert found and message in found[0]
    with pytest.raises(SettingsError, match=message.replace("(", r"\(").replace(")", r"\)")):
        comparison_from_dict(spec, "comparisons[0]")


def test_the_matcher_has_exactly_the_catalogue_kinds_with_its_parameters_and_levels():
    assert set(LIBRARY) == set(KINDS)
    samples = {"name": {"swap_with": "b"}, "place": {"then": ["b", "c"]}, "postal_code": {"prefix_length": 2}}
    for kind, catalogued in KINDS.items():
        built = comparison_from_dict({"kind": kind, "column": "a", **samples.get(kind, {})})
        own = {f.name: f.default for f in fields(LIBRARY[kind])} | {"kind": kind}
        assert {k: own[k] for k in catalogued.parameters if k != "then"} == {
            k: v for k, v in catalogued.parameters.items() if k != "then"
        }
        parameters = {f.name: getattr(built, f.name) for f in fields(built)}
        assert built.all_levels == catalogued.all_levels(parameters), kind


def test_the_configuration_checks_comparisons_without_importing_the_matcher():
    code = (
        "import sys, ci_pipeline.config, ci_pipeline.grammar.comparisons; "
        "print(sorted(m for m in sys.modules if m.startswith('ci_pipeline.unify')))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
