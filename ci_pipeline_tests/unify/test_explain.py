"""`explain --pair` judges value frequencies as the run does, without normalizing every record."""

from __future__ import annotations

import pandas as pd

from ci_pipeline.unify import unify
from ci_pipeline.unify.engine import make_normalizer
from ci_pipeline.unify.explain import count_value, explain_pair, render_pair
from ci_pipeline.unify.normalize import Normalizer, default_normalizations
from ci_pipeline.unify.records import build_records
from ci_pipeline_tests.unify.helpers import KEYS, config, frames

PHONES = [
    "+1 (555) 010-1234",
    "555.010.1234 ext 12",
    "001 555 010 1234",
    "1-555-010-1234",
    "5550101234 x7",
    "(555) 010-1235",
    "010-1234",
    "000-000-0000",
    None,
    "",
]
EMAILS = [
    "Ann.Lee@Example.com",
    " ann.lee@example.com ",
    "ANN.LEE@EXAMPLE.COM",
    "ann.lee@gmial.com",
    "ann.lee@gmail.com",
    "Ánn.Lée@example.com",
    "annlee@example.com",
    "ann.lee@example.org",
    "N/A",
    None,
]


def test_count_value_agrees_with_normalizing_everything():
    normalizer = Normalizer(bypass_values=("n/a",))
    frame = pd.DataFrame({"phone": PHONES, "email": EMAILS}, dtype="string")
    for field in ("phone", "email"):
        steps = default_normalizations(field)
        full = normalizer.apply(frame[field], steps)
        for value in full.dropna().unique():
            assert count_value(frame, normalizer, field, steps, value) == int((full == value).sum()), (field, value)
    assert count_value(frame, normalizer, "phone", ("phone",), "15550101234") == 5
    assert count_value(frame, normalizer, "email", default_normalizations("email"), "ann.lee@example.com") == 4
    assert count_value(frame, normalizer, "company", ("case",), "x") == 0


def test_pair_explanation_names_a_value_too_frequent_to_count_and_the_guard():
    cfg = config(guard={"max_value_frequency": 3})
    f = frames()
    crm = f[("crm", "contacts")]
    f[("crm", "contacts")] = pd.concat(
        [crm, crm.iloc[[1, 1, 1]].assign(contact_id=["c5", "c6", "c7"], email="Ann@Example.com")], ignore_index=True
    )
    records = build_records(cfg, f, KEYS)
    result = unify(cfg, f, KEYS)
    info = explain_pair(
        records,
        cfg,
        make_normalizer(cfg),
        ("crm", "contacts", "c2"),
        ("crm", "contacts", "c3"),
        result.alternate_key,
        result.match_pairs,
    )
    email = info["rules"][0]["conditions"][0]
    assert email["too_frequent"] == ["ann@example.com"] and not email["passed"]
    assert info["matched_by"] is None and not info["same_customer"]
    assert "ignored: value shared by too many records: ['ann@example.com']" in render_pair(info)
    # Bob (crm c1) and his shop account were linked by the e-mail rule in the run.
    info = explain_pair(
        records, cfg, make_normalizer(cfg), ("crm", "contacts", "c1"), ("shop", "customers", "s1"), None,
        result.match_pairs,
    )  # fmt: skip
    assert info["last_run"][0]["rule"] == "email_name" and info["last_run"][0]["linked"]
    assert "last run: accepted by match rule email_name, linked" in render_pair(info)


def test_pair_explanation_judges_a_shared_landline_over_all_records():
    # Ann Lee (crm c3) and Mary Lee (c5) share the landline 555-010-9999; loyalty member m9 Ann Lee gives her
    # mobile. The rule refuses two different personal numbers only, so the landline says nothing.
    rule = {
        "name": "full_name",
        "conditions": [
            {"field": "last_name"}, {"field": "first_name"},
            {"field": "phone", "allow_missing": True, "normalize": ["phone", "personal_phone"]},
        ],
    }  # fmt: skip
    cfg = config(match={"rules": [rule]})
    f = frames()
    crm = f[("crm", "contacts")]
    f[("crm", "contacts")] = pd.concat(
        [crm, crm.iloc[[2]].assign(contact_id="c5", first_name="Mary", email="mary@example.com")], ignore_index=True
    )
    m9 = pd.DataFrame({"member_id": ["m9"], "first_name": ["Ann"], "last_name": ["Lee"], "phone": ["555-010-7777"]})
    f[("loyalty", "members")] = pd.concat([f[("loyalty", "members")], m9.astype("string")], ignore_index=True)
    records = build_records(cfg, f, KEYS)
    result = unify(cfg, f, KEYS)
    info = explain_pair(
        records, cfg, make_normalizer(cfg), ("crm", "contacts", "c3"), ("loyalty", "members", "m9"),
        result.alternate_key, result.match_pairs,
    )  # fmt: skip
    phone = info["rules"][0]["conditions"][2]
    assert phone["shared"] == ["15550109999"] and phone["normalized"] == [None, "15550107777"] and phone["passed"]
    assert info["matched_by"] == "full_name" and info["same_customer"]
    assert "number held by records of several first names: ['15550109999']" in render_pair(info)
    # Mary's own pair with m9 fails on the first name, whatever the phone
    info = explain_pair(
        records, cfg, make_normalizer(cfg), ("crm", "contacts", "c5"), ("loyalty", "members", "m9"), None, None
    )
    assert info["matched_by"] is None
