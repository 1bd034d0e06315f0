"""The ``enrich`` configuration section: mistakes a user can make, each named with its key and the fix."""

from __future__ import annotations

import pytest
import yaml

from ci_pipeline.config import load_config
from ci_pipeline.config.enrich import PROVIDERS
from ci_pipeline.enrich.registry import FACTORIES
from ci_pipeline.errors import ConfigError
from ci_pipeline.grammar.rules import RuleError, parse_node
from ci_pipeline_tests.conftest import SAMPLE_DIR


def sample(tmp_path, change) -> str:
    raw = yaml.safe_load((SAMPLE_DIR / "ci_pipeline.yaml").read_text(encoding="utf-8"))
    change(raw)
    path = tmp_path / "ci_pipeline.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    return str(path)


def problems(tmp_path, change) -> str:
    with pytest.raises(ConfigError) as raised:
        load_config(sample(tmp_path, change))
    return str(raised.value)


def test_every_configurable_provider_has_a_factory():
    assert set(PROVIDERS) == set(FACTORIES)


def test_the_sample_enables_brand_and_interest_affinity():
    config = load_config(SAMPLE_DIR / "ci_pipeline.yaml")
    providers = {spec.provider for spec in config.enrich.enrichments.values()}
    assert {"brand_affinity", "interest_affinity"} <= providers


def test_no_brand_field_mapped_names_what_to_map_and_where(tmp_path):
    def unmap(raw):
        del raw["activities"]["tables"]["order_lines"]["fields"]["brand"]

    message = problems(tmp_path, unmap)
    assert "enrich.enrichments.brand_affinity.params.field: activity 'order_lines' maps no 'brand' field" in message
    assert "activities.tables.order_lines.fields (brand: <column>)" in message


def test_no_category_field_mapped_names_it_for_interest_affinity(tmp_path):
    def unmap(raw):
        del raw["activities"]["tables"]["order_lines"]["fields"]["category"]

    message = problems(tmp_path, unmap)
    assert "enrich.enrichments.interest_affinity.params.field" in message and "(category: <column>)" in message


def test_an_unknown_activity_and_an_unknown_provider_are_named(tmp_path):
    def change(raw):
        raw["enrich"]["enrichments"]["brand_affinity"]["params"]["activity"] = "order_line"
        raw["enrich"]["enrichments"]["extra"] = {"provider": "brand_afinity"}

    message = problems(tmp_path, change)
    assert "params.activity: unknown activity 'order_line' (did you mean 'order_lines'?)" in message
    assert (
        "enrich.enrichments.extra.provider: unknown provider 'brand_afinity' (did you mean 'brand_affinity'?)"
        in message
    )


def test_a_profile_column_an_enrichment_names_that_unify_does_not_make_is_refused(tmp_path):
    def change(raw):
        raw["enrich"]["enrichments"]["address"]["params"] = {"columns": {"street": "Adress1", "city": "City"}}
        raw["enrich"]["enrichments"]["email"]["params"] = {"column": "Emial"}
        raw["enrich"]["enrichments"]["demo"] = {
            "provider": "http",
            "connection": "acme",
            "params": {"type": "Demographics", "fields": ["CustomerId", "PostalCod"], "mapping": {"Income": "a.b"}},
        }

    message = problems(tmp_path, change)
    assert (
        "enrich.enrichments.address.params.columns.street: the customer profile has no column 'Adress1' (did you "
        "mean 'Address1'?); name one of its columns (CustomerId, FullName," in message
    )
    assert "enrich.enrichments.email.params.column: the customer profile has no column 'Emial' (did you mean" in message
    assert "enrich.enrichments.demo.params.fields[1]: the customer profile has no column 'PostalCod'" in message
    assert "columns.city" not in message and "fields[0]" not in message


def test_an_affinity_parameter_typo_is_told_with_the_near_miss_and_the_parameters(tmp_path):
    def change(raw):
        raw["enrich"]["enrichments"]["brand_affinity"]["params"]["feild"] = "brand"
        raw["enrich"]["enrichments"]["brand_affinity"]["params"]["weight"] = "spnd"

    message = problems(tmp_path, change)
    assert (
        "enrich.enrichments.brand_affinity.params.feild: not a parameter (did you mean 'field'?); remove it or "
        "correct its spelling (it takes activity, field, weight," in message
    )
    assert "params.weight: 'spnd' is not one of spend, quantity (did you mean 'spend'?)" in message
    assert "pydantic" not in message and "validation error" not in message


def test_too_many_chosen_brands_is_refused(tmp_path):
    def change(raw):
        raw["enrich"]["enrichments"]["brand_affinity"]["params"]["chosen"] = list("abcdef")

    assert "enrich.enrichments.brand_affinity.params" in problems(tmp_path, change)


def test_a_segment_on_an_enrichment_that_is_not_configured_is_refused(tmp_path):
    def change(raw):
        raw["segments"]["definitions"]["fans"] = {
            "rules": [{"field": "enrichment.brand_afinity.Top", "op": "=", "value": "Voltix"}]
        }

    message = problems(tmp_path, change)
    assert "segments.definitions.fans.rules[0].field: enrichment.brand_afinity.Top names no configured" in message
    assert "(did you mean 'brand_affinity'?)" in message


def test_a_segment_on_a_field_the_email_or_address_enrichment_does_not_write_is_refused(tmp_path):
    """Validate said OK and the run failed its whole segments step, after ingest, unify, predictions, enrichment."""

    def change(raw):
        raw["segments"]["definitions"]["free"] = {
            "rules": [{"field": "enrichment.email.class", "op": "=", "value": "FreeMail"}]
        }
        raw["segments"]["definitions"]["ct"] = {
            "rules": [{"field": "enrichment.address.State", "op": "=", "value": "CT"}]
        }

    message = problems(tmp_path, change)
    assert (
        "segments.definitions.free.rules[0].field: enrichment email (email) has no field 'class' (did you mean "
        "'Class'?); its fields are Domain, Class, FreeMailProvider, Disposable, Role, Valid"
    ) in message
    assert "segments.definitions.ct.rules[0].field: enrichment address (address) has no field 'State'" in message


def test_the_fields_the_email_and_address_enrichments_write_are_those_the_configuration_checks():
    import pandas as pd

    from ci_pipeline.config.enrich import PROVIDER_FIELDS
    from ci_pipeline.enrich import address, email

    assert tuple(email.classify(pd.Series(["ann@gmail.com", "bo@x.example"])).columns) == PROVIDER_FIELDS["email"]
    assert PROVIDER_FIELDS["address"] == (*address.FIELDS, "Status", "Reason")


def test_a_segment_on_a_field_an_affinity_does_not_write_is_refused(tmp_path):
    """The affinities' fields have a fixed shape, and their names are known where params.chosen lists them; a slip
    passed validate and failed the run's whole segments step."""

    def change(raw):
        rules = {
            "top": "enrichment.brand_affinity.top",
            "part": "enrichment.brand_affinity.Affinity.Voltix.score",
            "interest": "enrichment.interest_affinity.Affinity.electronics.Level",
            "fine": "enrichment.brand_affinity.Affinity.Any Brand.ShareOfVoice",
            "chosen": "enrichment.interest_affinity.Affinity.Home & Kitchen.Score",
        }
        for name, field in rules.items():
            raw["segments"]["definitions"][name] = {"rules": [{"field": field, "op": "!=", "value": "x"}]}

    message = problems(tmp_path, change)
    assert (
        "segments.definitions.top.rules[0].field: enrichment brand_affinity (brand_affinity) has no field 'top' (did "
        "you mean 'Top'?); its fields are Top, Prior and Affinity.<name>.Score|Level|ShareOfVoice (names: each of "
        "the most bought, known once it runs)"
    ) in message
    assert (
        "segments.definitions.part.rules[0].field: enrichment brand_affinity (brand_affinity) has no field "
        in (message)
        and "(did you mean 'Affinity.Voltix.Score'?)" in message
    )
    assert (
        "segments.definitions.interest.rules[0].field: enrichment interest_affinity (interest_affinity) scores no "
        "'electronics' (did you mean 'Electronics'?); it scores the names its params.chosen lists, as written: "
        "Electronics, Home & Kitchen, Apparel, Beauty, Sports & Outdoors"
    ) in message
    assert "definitions.fine" not in message and "definitions.chosen" not in message


def test_a_segment_on_a_field_an_http_enrichment_does_not_map_is_refused(tmp_path):
    def change(raw):
        raw["enrich"]["enrichments"]["demographics"] = {
            "provider": "http",
            "connection": "acme",
            "params": {
                "type": "Demographics",
                "fields": ["Email"],
                "mapping": {"Income": {"path": "household.income", "type": "number"}, "Household": "household"},
            },
        }
        rules = {
            "income": "enrichment.demographics.income",
            "typed": "enrichment.demographics.Income.value",
            "member": "enrichment.demographics.Household.size",
        }
        for name, field in rules.items():
            raw["segments"]["definitions"][name] = {"rules": [{"field": field, "op": "!=", "value": 1}]}

    message = problems(tmp_path, change)
    assert (
        "segments.definitions.income.rules[0].field: enrichment demographics (http) has no field 'income' (did you "
        "mean 'Income'?); its fields are the keys of its params.mapping: Income, Household"
    ) in message
    # A number is no object; a value of type any may be one, whose members are fields.
    assert "segments.definitions.typed.rules[0].field: enrichment demographics (http) has no field" in message
    assert "definitions.member" not in message


def test_an_enrichment_field_needs_the_enrichment_and_the_field():
    with pytest.raises(RuleError, match=r"write enrichment.<enrichment name>.<field>"):
        parse_node({"field": "enrichment.brand_affinity", "op": "=", "value": 1}, "segments.definitions.x.rules[0]")
    node = parse_node({"field": "enrichment.brand_affinity.Affinity.Voltix.Score", "op": ">=", "value": 70}, "k")
    assert (node.namespace, node.name) == ("enrichment", "brand_affinity.Affinity.Voltix.Score")
