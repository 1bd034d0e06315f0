"""The unify section: every mistake is reported with its key path and a fix."""

from __future__ import annotations

import pytest
import yaml

from ci_pipeline.config import load_config
from ci_pipeline.config.unify import UnifyConfig
from ci_pipeline.errors import ConfigError

BASE = """
sources:
  crm:
    owner: me
    tables:
      contacts: {format: csv, path: c.csv, primary_key: id}
  shop:
    owner: me
    tables:
      customers: {format: parquet, path: s, primary_key: cid}
unify:
  tables:
    - source: crm
      table: contacts
      columns: {email: email, first: first_name}
    - source: shop
      table: customers
      columns: {mail: email}
  match:
    rules:
      - name: email
        conditions: [{field: email}]
"""


def load(tmp_path, mutate=None):
    raw = yaml.safe_load(BASE)
    if mutate:
        mutate(raw)
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(raw))
    return load_config(tmp_path / "c.yaml")


def problems(tmp_path, mutate):
    with pytest.raises(ConfigError) as err:
        load(tmp_path, mutate)
    return "\n".join(err.value.problems)


def test_valid_section_loads(tmp_path):
    cfg = load(tmp_path)
    assert cfg.unify.tables[1].attributes() == {"email": "mail"}
    assert cfg.unify.match.rules[0].conditions[0].threshold == 1.0


def test_a_near_miss_of_a_mapped_field_is_suggested(tmp_path):
    text = problems(tmp_path, lambda r: r["unify"]["match"]["rules"][0]["conditions"].append({"field": "e_mail"}))
    assert "'e_mail' is not mapped in any table it applies to (did you mean 'email'?)" in text
    text = problems(tmp_path, lambda r: r["unify"].update(guard={"conflict_fields": ["emial"]}))
    assert "unify.guard.conflict_fields[0]: 'emial' is not mapped in any table (did you mean 'email'?)" in text


def test_a_frequency_field_mapped_nowhere_is_refused(tmp_path):
    # The list replaces the default, so a typo would leave e-mail uncapped without a word.
    text = problems(tmp_path, lambda r: r["unify"].update(guard={"frequency_fields": ["emial"]}))
    assert "unify.guard.frequency_fields[0]: 'emial' is not mapped in any table (did you mean 'email'?)" in text
    assert "mapped: ['email', 'first_name', 'full_name']" in text
    assert load(tmp_path, lambda r: r["unify"].update(guard={"frequency_fields": ["email"]})).unify.guard
    # The default names phone, which this project does not map: only a list written in the file is checked.
    assert load(tmp_path).unify.guard.frequency_fields == ["email", "phone"]


def test_a_model_setting_under_the_rules_method_is_refused_even_at_its_default(tmp_path):
    for name, value in [
        ("training", {"cron": "0 2 1 * *"}),
        ("training", {"cron": "0 3 1 * *"}),
        ("probabilistic", {}),
    ]:
        text = problems(tmp_path, lambda r: r["unify"]["match"].update({name: value}))  # noqa: B023
        assert text == (
            f"unify.match.{name}: is given but the method is 'rules', which has no model; set "
            f"unify.match.method: probabilistic or remove unify.match.{name}"
        )
    method = lambda r: r["unify"]["match"].update(method="probabilistic", training={"cron": "0 2 1 * *"})  # noqa: E731
    assert load(tmp_path, method).unify.match.training.cron == ["0 2 1 * *"]


def test_rule_naming_an_unmapped_field(tmp_path):
    text = problems(tmp_path, lambda r: r["unify"]["match"]["rules"][0]["conditions"].append({"field": "phone"}))
    assert "unify.match.rules[0].conditions[1].field: 'phone' is not mapped" in text


def test_precision_out_of_range(tmp_path):
    def bad(r):
        r["unify"]["match"]["rules"][0]["conditions"].append({"field": "first_name", "precision": 1.5})

    assert "out of range" in problems(tmp_path, bad)

    def unknown(r):
        r["unify"]["match"]["rules"][0]["conditions"][0]["precision"] = "very"

    assert "not one of exact, high, medium, low" in problems(tmp_path, unknown)


def test_unknown_table_and_normalization(tmp_path):
    text = problems(tmp_path, lambda r: r["unify"]["tables"][1].update(table="nope"))
    assert "unify.tables[1].table: source 'shop' has no table 'nope'" in text

    def bad(r):
        r["unify"]["match"]["rules"][0]["conditions"][0]["normalize"] = ["sparkle"]

    assert "unknown normalization 'sparkle'" in problems(tmp_path, bad)


def test_table_with_no_key_is_refused(tmp_path):
    text = problems(tmp_path, lambda r: r["sources"]["crm"]["tables"]["contacts"].pop("primary_key"))
    assert "primary_key" in text


def test_fuzzy_rule_needs_blocking_and_gets_a_warning(tmp_path):
    def fuzzy(r):
        r["unify"]["match"]["rules"][0]["conditions"][0]["precision"] = "high"

    assert "no exact condition and no 'blocking' fields" in problems(tmp_path, fuzzy)

    def blocked(r):
        fuzzy(r)
        r["unify"]["match"]["rules"][0]["blocking"] = ["first_name"]

    cfg = load(tmp_path, blocked)
    assert "no exact condition" in cfg.unify.warnings()[0]


def test_unknown_alias_map(tmp_path):
    def bad(r):
        r["unify"]["match"]["rules"][0]["conditions"][0]["normalize"] = ["case", "alias:domains"]

    assert "alias map 'domains' is not in unify.normalize.aliases" in problems(tmp_path, bad)


def test_two_columns_one_type(tmp_path):
    def bad(r):
        r["unify"]["tables"][0]["columns"]["email2"] = "email"

    assert "both mapped to 'email'" in problems(tmp_path, bad)


def test_columns_named_differently_are_one_custom_attribute(tmp_path):
    def named(r):
        r["unify"]["tables"][0]["columns"]["loyalty_id"] = "custom"
        r["unify"]["tables"][1]["columns"]["member_no"] = "custom:loyalty_id"
        r["unify"]["match"]["rules"].append({"name": "card", "conditions": [{"field": "loyalty_id"}]})

    cfg = load(tmp_path, named)
    assert cfg.unify.tables[1].attributes() == {"email": "mail", "loyalty_id": "member_no"}
    assert cfg.unify.tables[1].kinds() == {"mail": "email", "member_no": "custom"}


@pytest.mark.parametrize(
    ("columns", "said"),
    [
        ({"member_no": "custom:first_name"}, "'custom:first_name' names the custom attribute like the semantic type"),
        (
            {"member_no": "custom:"},
            "'custom:' is no semantic type (did you mean 'custom'?): map the column to one of full_name",
        ),
        ({"member_no": "firstname"}, "'firstname' is no semantic type (did you mean 'first_name'?)"),
        ({"card": "custom:loyalty", "member_no": "custom:loyalty"}, "are both the custom attribute 'loyalty'"),
        ({"loyalty": "custom", "member_no": "custom:loyalty"}, "are both the custom attribute 'loyalty'"),
    ],
)
def test_a_column_mapping_that_is_no_type_names_the_key_and_the_fix(tmp_path, columns, said):
    text = problems(tmp_path, lambda r: r["unify"]["tables"][1]["columns"].update(columns))
    assert "unify.tables[1]" in text
    assert said in text


def test_a_birth_date_in_parts_needs_all_three_and_no_whole_date_beside(tmp_path):
    def parts(*kinds):
        def mutate(r):
            r["unify"]["tables"][0]["columns"].update({f"c_{k}": k for k in kinds})

        return mutate

    config = load(tmp_path, parts("birth_year", "birth_month", "birth_day"))
    table = config.unify.tables[0]
    assert table.attributes()["birth_date"] == "c_birth_year/c_birth_month/c_birth_day"
    assert not {"birth_year", "birth_month", "birth_day"} & set(table.attributes())
    # A rule on the joined birth date validates.
    assert load(
        tmp_path,
        lambda r: (
            parts("birth_year", "birth_month", "birth_day")(r),
            r["unify"].update(guard={"conflict_fields": ["birth_date"]}),
        ),
    ).unify.guard.conflict_fields == ["birth_date"]
    # A year and month are a birth date known in part, joined as one.
    month = load(tmp_path, parts("birth_year", "birth_month")).unify.tables[0]
    assert month.attributes()["birth_date"] == "c_birth_year/c_birth_month"
    assert month.birth_date_parts() == {"birth_year": "c_birth_year", "birth_month": "c_birth_month"}
    text = problems(tmp_path, parts("birth_year", "birth_day"))
    assert "'c_birth_year' -> birth_year, 'c_birth_day' -> birth_day without birth_month" in text
    assert "a year of birth alone may be mapped as birth_year, a year and month as birth_year and birth_month" in text
    assert "without birth_year and birth_month" in problems(tmp_path, parts("birth_day"))
    assert "without birth_year" in problems(tmp_path, parts("birth_month", "birth_day"))
    # A year alone is an attribute of its own.
    alone = load(tmp_path, parts("birth_year")).unify.tables[0]
    assert alone.attributes()["birth_year"] == "c_birth_year" and not alone.birth_date_parts()
    text = problems(tmp_path, parts("birth_date", "birth_year", "birth_month", "birth_day"))
    assert "column 'c_birth_date' is mapped to 'birth_date' and 'birth_year', 'birth_month', 'birth_day'" in text


def test_conflict_field_must_be_mapped(tmp_path):
    text = problems(tmp_path, lambda r: r["unify"].update(guard={"conflict_fields": ["birth_date"]}))
    assert "unify.guard.conflict_fields[0]: 'birth_date' is not mapped in any table" in text
    assert load(tmp_path, lambda r: r["unify"].update(guard={"conflict_fields": ["email"]})).unify.guard.conflict_fields
    personal = {"field": "email", "normalize": ["email", "personal_email"]}
    guard = load(tmp_path, lambda r: r["unify"].update(guard={"conflict_fields": ["email", personal]})).unify.guard
    assert [(c.field, c.normalize) for c in guard.conflict_conditions()] == [
        ("email", None), ("email", ["email", "personal_email"])
    ]  # fmt: skip
    fuzzy = {"field": "email", "precision": "high"}
    text = problems(tmp_path, lambda r: r["unify"].update(guard={"conflict_fields": [fuzzy]}))
    assert "unify.guard.conflict_fields[0]: values here are compared exactly after their normalizations" in text


def test_attach_rule_problems_name_the_key_and_the_fix(tmp_path):
    def attach(**rule):
        return lambda r: r["unify"]["match"].update(attach=[{"name": "sole", **rule}])

    text = problems(tmp_path, attach(tables=["shop.orders"]))
    assert "unify.match.attach[0].tables[0]: 'shop.orders' is not a unify table" in text
    # shop.customers maps only an e-mail: there is no name to compare
    text = problems(tmp_path, attach(tables=["shop.customers"]))
    assert "unify.match.attach[0].same[0]: 'first_name' is not mapped in shop.customers" in text
    text = problems(tmp_path, attach(tables=["crm.contacts"], same=["first_name"], without=["emial"]))
    assert "unify.match.attach[0].without[0]: 'emial' is neither a semantic type nor a mapped custom column" in text
    text = problems(tmp_path, attach(tables=["crm.contacts"], same=["first_name"], without=["first_name"]))
    assert "'first_name' is also in 'same'" in text
    text = problems(tmp_path, attach(tables=["crm.contacts"], same=["first_name"], max_expected_namesakes=0))
    assert "max_expected_namesakes" in text
    text = problems(
        tmp_path,
        attach(
            tables=["crm.contacts"],
            same=["first_name"],
            must_not_differ=[{"field": "emial"}, {"field": "phone", "precision": "high"}, {"field": "first_name"}],
        ),
    )
    assert "unify.match.attach[0].must_not_differ[0].field: 'emial' is neither a semantic type" in text
    assert "unify.match.attach[0].must_not_differ[1].precision: values here are compared exactly" in text
    assert "unify.match.attach[0].must_not_differ[2].field: 'first_name' is also in 'same'" in text
    text = problems(tmp_path, attach(tables=["crm.contacts"], same=["first_name"], among=["support.tickets"]))
    assert "unify.match.attach[0].among[0]: 'support.tickets' is not a unify table; use one of" in text
    text = problems(
        tmp_path, attach(tables=["crm.contacts"], same=["first_name"], among=["crm.contacts"], each_other=True)
    )
    assert "unify.match.attach[0].among: a rule joining thin customers to each other ('each_other')" in text
    rule = load(tmp_path, attach(tables=["crm.contacts"], same=["first_name"])).unify.match.attach[0]
    assert rule.without == ["email", "phone", "street", "postal_code", "birth_date", "birth_year", "company"]


def test_a_key_yaml_reads_as_true_is_named_with_the_fix(tmp_path):
    text = BASE.replace("      - name: email\n", "      - name: email\n        on: [email]\n")
    (tmp_path / "c.yaml").write_text(text)
    with pytest.raises(ConfigError) as err:
        load_config(tmp_path / "c.yaml")
    assert err.value.problems == [
        "unify.match.rules[0]: a key was read as True: YAML reads an unquoted on, off, yes or no as true/false; "
        "quote it ('on') or correct the key name"
    ]


@pytest.mark.parametrize(
    ("method", "said"),
    [("probablistic", "did you mean 'probabilistic'"), ("hybrid", "method probabilistic with match.rules beside it")],
)
def test_an_unknown_match_method_names_the_near_miss_or_how_to_write_the_hybrid(method, said):
    raw = {
        "tables": [{"source": "crm", "table": "contacts", "columns": {"email": "email"}}],
        "match": {"method": method},
    }
    with pytest.raises(ValueError, match=said):
        UnifyConfig.model_validate(raw)


def test_the_default_model_over_one_mapped_attribute_is_refused_before_a_run(tmp_path):
    # Every blocking rule would read the one attribute: training could not learn how one person's records differ,
    # and the run would stop after reading every table.
    def only_email(raw):
        raw["unify"]["tables"][0]["columns"] = {"email": "email"}
        raw["unify"]["match"] = {"method": "probabilistic"}

    text = problems(tmp_path, only_email)
    assert text.startswith("unify.match.method: probabilistic weighs the evidence of several attributes")
    assert "map 1 (email)" in text
    assert load(tmp_path, lambda r: r["unify"].update(match={"method": "probabilistic"})).unify.match.method
