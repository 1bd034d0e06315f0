"""`explain --pair` with ``unify.match.method: probabilistic``: what the run did with the pair (blocking), which fit
weighed it (stratum), true level names for swapped names, and no rule verdicts where no rule is configured."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from ci_pipeline.config.unify import UnifyConfig
from ci_pipeline.unify import unify
from ci_pipeline.unify.engine import make_normalizer
from ci_pipeline.unify.explain import explain_pair, render_pair
from ci_pipeline.unify.probabilistic import (
    BlockingRule,
    EmailComparison,
    IdentifierComparison,
    Key,
    Model,
    NameComparison,
    Settings,
)
from ci_pipeline.unify.probabilistic.model import ComparisonParameters, Iteration, Stratum
from ci_pipeline.unify.probabilistic_method import ProbabilisticMatches
from ci_pipeline.unify.records import build_records

KEYS = {("crm", "contacts"): "id", ("shop", "customers"): "id"}
COLUMNS = {"first_name": "first_name", "last_name": "last_name", "email": "email", "phone": "phone"}
SETTINGS = Settings(
    comparisons=(
        NameComparison("first_name", swap_with="last_name"),
        NameComparison("last_name", swap_with="first_name"),
        EmailComparison("email"),
        IdentifierComparison("phone"),
    ),
    blocking=(BlockingRule((Key("email"),)), BlockingRule((Key("phone"),))),
    strata=((("email",),),),
)


def frames() -> dict[tuple[str, str], pd.DataFrame]:
    crm = pd.DataFrame(
        {
            "id": ["c1", "c2", "c3"],
            "first_name": ["Anna", "Edward", "Anna"],
            "last_name": ["Berg", "Williams", "Berg"],
            "email": ["anna@berg.org", "ed@williams.org", "anna@berg.org"],
            "phone": ["555-010-1001", "555-010-2002", "555-010-3003"],
        }
    ).astype("string")
    shop = pd.DataFrame(
        {
            "id": ["s1", "s2"],
            # s1: Anna Berg again, but with another e-mail address and no phone: no blocking rule pairs her.
            # s2: Edward Williams with first and last name swapped, found by his e-mail address.
            "first_name": ["Anna", "Williams"],
            "last_name": ["Berg", "Edward"],
            "email": ["anna.b@mail.org", "ed@williams.org"],
            "phone": [None, "555-010-4004"],
        }
    ).astype("string")
    return {("crm", "contacts"): crm, ("shop", "customers"): shop}


def config(dedup_rules: list | None = None) -> UnifyConfig:
    """Both tables matched by the model alone: no match rules; ``dedup_rules`` on crm.contacts."""
    tables = [
        {"source": "crm", "table": "contacts", "columns": COLUMNS, "dedup": {"rules": dedup_rules or []}},
        {"source": "shop", "table": "customers", "columns": COLUMNS},
    ]
    return UnifyConfig.model_validate({"tables": tables, "match": {"method": "probabilistic", "rules": []}})


def parameters() -> tuple[ComparisonParameters, ...]:
    """Exact agreement +6.41 (m 0.85, u 0.01), disagreement -4.28, each level between +2.32."""
    out = []
    for c in SETTINGS.comparisons:
        middle = len(c.levels) - 2
        out.append(
            ComparisonParameters(
                c.name, c.levels, (0.85, *[0.1 / middle] * middle, 0.05), (0.01, *[0.02 / middle] * middle, 0.97)
            )
        )
    return tuple(out)


def model() -> Model:
    """Prior -6.63 in the main fit; pairs agreeing on e-mail are a stratum of their own with prior +6.63."""
    email = Stratum((("email",),), 0.99, parameters(), 10)
    return Model(SETTINGS, parameters(), 0.01, True, (Iteration(1, 0.5, 0.0, 0.0),), strata=(email,))


def explain(a: tuple[str, str, str], b: tuple[str, str, str], cfg: UnifyConfig | None = None) -> dict:
    """``explain_pair`` of ``a`` and ``b`` after a run of the model, with that run's outputs."""
    cfg = cfg or config()
    run = unify(cfg, frames(), KEYS, match_method=ProbabilisticMatches(model()))
    records = build_records(cfg, frames(), KEYS)
    return explain_pair(records, cfg, make_normalizer(cfg), a, b, run.alternate_key, run.match_pairs, model=model())


def test_a_pair_no_blocking_rule_brings_together_is_said_never_compared():
    info = explain(("crm", "contacts", "c1"), ("shop", "customers", "s1"))
    said = info["probabilistic"]
    # The model alone would link them (names agree, the phone is missing) ...
    assert said["link"] is True
    # ... but the run never scored the pair: no blocking rule puts them in one block.
    assert said["compared"] is False
    assert [b["rule"] for b in said["blocking"]] == [["email"], ["phone"]]
    assert [b["together"] for b in said["blocking"]] == [False, False]
    assert info["same_customer"] is False
    # The JSON form (`explain --json`) carries the same.
    dumped = json.loads(json.dumps(info, default=str))["probabilistic"]
    assert dumped["compared"] is False and dumped["blocking"][1]["state"] == "missing key"
    text = render_pair(info)
    assert "blocking [email]: different keys ('anna@berg.org' vs 'anna.b@mail.org')" in text
    assert "blocking [phone]: missing key (" in text
    assert (
        "never compared: no blocking rule puts the two records in one block; add a blocking rule on a field they "
        "share to compare such pairs"
    ) in text
    verdict = next(line for line in text.splitlines() if "total weight" in line and "->" in line)
    assert verdict.endswith(": LINK had the run compared the pair; it never did, so this verdict did not apply")


def test_a_blocked_pair_names_its_block_and_is_not_said_never_compared():
    info = explain(("crm", "contacts", "c2"), ("shop", "customers", "s2"))
    said = info["probabilistic"]
    assert said["compared"] is True and [b["together"] for b in said["blocking"]] == [True, False]
    text = render_pair(info)
    assert "blocking [email]: one block ('ed@williams.org')" in text
    assert "never compared" not in text and "verdict did not apply" not in text


def test_without_rules_the_pair_shows_no_rule_header_or_verdict_and_the_last_run_names_the_model():
    info = explain(("crm", "contacts", "c2"), ("shop", "customers", "s2"))
    assert info["rules"] == [] and info["same_customer"] is True
    text = render_pair(info)
    assert text.splitlines()[0] == "crm|contacts|c2 vs shop|customers|s2 (the probabilistic model)"
    assert "(match rules)" not in text and "verdict: no rule matches" not in text
    assert "match rule probabilistic" not in text
    probability = info["probabilistic"]["match_probability"]
    assert f"  last run: the model linked them (match probability {probability:.4f})" in text


def test_dedup_rules_are_shown_only_when_the_table_has_them():
    pair = (("crm", "contacts", "c1"), ("crm", "contacts", "c3"))
    text = render_pair(explain(*pair))
    assert "dedup rules" not in text and "rule " not in text.split("model:")[0]
    same_email = [{"name": "same_email", "conditions": [{"field": "email"}]}]
    text = render_pair(explain(*pair, cfg=config(same_email)))
    assert text.splitlines()[0].endswith("(dedup rules and the probabilistic model)")
    assert "rule same_email: MATCH" in text and "verdict: matched by same_email" in text


def test_swapped_names_are_labelled_swapped_with_the_crossed_values_not_null():
    info = explain(("crm", "contacts", "c2"), ("shop", "customers", "s2"))
    rows = {c["comparison"]: c for c in info["probabilistic"]["comparisons"]}
    assert rows["first_name"]["level"] == "swapped" and rows["first_name"]["weight"] > 0
    # The swap is weighed once, under first_name: last_name adds nothing, but its values are there, so not null.
    assert rows["last_name"]["level"] == "swapped" and rows["last_name"]["weight"] == 0
    assert rows["last_name"]["weighed_under"] == "first_name"
    assert rows["first_name"]["crossed"] == {"first_name": ["edward", "williams"], "last_name": ["williams", "edward"]}
    text = render_pair(info)
    assert "last_name: 'williams' vs 'edward': null" not in text
    assert (
        "first_name: 'edward' vs 'williams': swapped (first_name|last_name 'edward'|'williams' vs 'williams'|'edward')"
    ) in text
    assert "last_name: 'williams' vs 'edward': swapped (counted once, under first_name)" in text


def test_a_missing_name_is_still_null():
    cfg = config()
    data = frames()
    data[("shop", "customers")].loc[1, "last_name"] = None
    run = unify(cfg, data, KEYS, match_method=ProbabilisticMatches(model()))
    records = build_records(cfg, data, KEYS)
    pair = (("crm", "contacts", "c2"), ("shop", "customers", "s2"))
    info = explain_pair(records, cfg, make_normalizer(cfg), *pair, run.alternate_key, run.match_pairs, model())
    rows = {c["comparison"]: c for c in info["probabilistic"]["comparisons"]}
    assert rows["last_name"]["level"] == "null" and "crossed" not in rows["first_name"]


def test_the_prior_names_the_stratum_whose_fit_weighs_the_pair():
    inside = explain(("crm", "contacts", "c2"), ("shop", "customers", "s2"))
    assert inside["probabilistic"]["stratum"] == [["email"]]
    assert inside["probabilistic"]["prior_weight"] == pytest.approx(6.63, abs=0.01)
    assert "model: prior weight +6.63 (pairs agreeing on [email], fitted apart)" in render_pair(inside)
    outside = explain(("crm", "contacts", "c1"), ("shop", "customers", "s1"))
    assert outside["probabilistic"]["stratum"] is None
    assert "model: prior weight -6.63 (pairs in no stratum: the main fit)" in render_pair(outside)


def test_a_blocking_key_made_by_a_function_shows_what_blocking_compared():
    cfg = config().model_dump()
    cfg["match"]["probabilistic"] = {"blocking": [["email"], ["prefix(last_name, 3)", "first_name"]]}
    info = explain(("crm", "contacts", "c1"), ("shop", "customers", "s1"), UnifyConfig.model_validate(cfg))
    assert info["probabilistic"]["blocking"][1]["keys"] == [["ber", "anna"], ["ber", "anna"]]
    assert "blocking [prefix(last_name, 3), first_name]: one block ('ber' of 'berg'|'anna')" in render_pair(info)


def test_a_place_at_a_general_level_names_the_column_whose_values_it_shows():
    from ci_pipeline.unify.explain import _comparison_text
    from ci_pipeline.unify.probabilistic import Model, PlaceComparison, Settings
    from ci_pipeline.unify.probabilistic import explain_pair as model_waterfall
    from ci_pipeline.unify.probabilistic.blocking import BlockingRule

    street = PlaceComparison("street", then=("postal_code", "city"))
    levels = tuple(1 / len(street.levels) for _ in street.levels)
    params = ComparisonParameters("street", street.levels, levels, levels)
    model = Model(Settings((street,), (BlockingRule.parse(["city"], "b"),)), (params,), 0.01, True, (), {})
    records = pd.DataFrame(
        {
            "street": ["1 elm st", None, "1 elm st"],
            "postal_code": ["02139", "02139", "02139"],
            "city": ["cambridge", "cambridge", "cambridge"],
        },
        dtype="string",
    )

    def row(left: int, right: int) -> dict:
        rows = model_waterfall(model, records, left, right).to_dict("records")
        return {k: (None if pd.isna(v) else v) for k, v in rows[1].items()}

    # One record holds no street: the postal codes agree, and the line says they are postal codes.
    assert _comparison_text(row(0, 1)) == "postal_code '02139' vs '02139': same_postal_code"
    assert _comparison_text(row(0, 2)) == "'1 elm st' vs '1 elm st': exact"
