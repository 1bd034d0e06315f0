"""Attachment: a customer with nothing but a name joins the only other customer of that name."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ci_pipeline.config.unify import UnifyConfig
from ci_pipeline.unify import unify
from ci_pipeline.unify.attach import sole_namesake_links, thin_namesake_links
from ci_pipeline.unify.engine import make_normalizer
from ci_pipeline.unify.explain import explain_pair, explain_record, render_pair, render_record
from ci_pipeline.unify.records import build_records
from ci_pipeline_tests.unify.helpers import KEYS, config, frames


def run(labels, first, last, thin, limit=1e9):
    return sole_namesake_links(np.array(labels), [np.array(first), np.array(last)], np.array(thin), limit)


def test_thin_records_join_their_sole_namesake():
    # customers 0 (records 0, 1) and 2 are full profiles; 3 and 4 are name-only records of "name 0"
    a = run([0, 0, 2, 3, 4], [0, 0, 1, 0, 0], [0, 0, 1, 0, 0], [False, False, False, True, True])
    assert a.links[["left", "right"]].to_numpy().tolist() == [[3, 0], [4, 0]]
    assert a.outcomes == {
        "attached": 2, "kept": 0, "ambiguous": 0, "no namesake": 0, "too common": 0, "conflict": 0, "no name": 0
    }  # fmt: skip
    assert a.thin_labels.tolist() == [3, 4]
    assert a.links["note"].str.startswith("sole namesake").all()


def test_two_bearers_are_ambiguous_and_listed_as_refused_candidates():
    a = run([0, 1, 2], [0, 0, 0], [0, 0, 0], [False, False, True])
    assert a.links.empty
    assert a.outcomes["ambiguous"] == 1
    assert a.proposals[["left", "right"]].to_numpy().tolist() == [[2, 0], [2, 1]]
    assert set(a.proposals["note"]) == {"not attached: 2 customers bear this name"}


def test_thin_customers_are_not_namesakes_of_each_other():
    # two name-only records named alike and no full customer of that name: nothing to attach to
    a = run([0, 1, 2], [0, 0, 1], [0, 0, 1], [True, True, False])
    assert a.links.empty and a.outcomes["no namesake"] == 2
    # each says so on a row pairing it with itself, the only trace explain can show
    assert a.proposals[["left", "right", "accepted"]].to_numpy().tolist() == [[0, 0, False], [1, 1, False]]
    assert set(a.proposals["note"]) == {"not attached: no other customer bears this name"}


def test_a_customer_with_any_identifying_value_is_never_moved():
    # record 1 has the name but also an e-mail (not thin): it stays, and it is the namesake of thin record 2
    a = run([0, 1, 2], [5, 0, 0], [5, 0, 0], [False, False, True])
    assert a.links[["left", "right"]].to_numpy().tolist() == [[2, 1]]
    # a customer mixing a thin and a full record is not thin
    a = run([0, 1, 1], [0, 0, 0], [0, 0, 0], [False, False, True])
    assert a.links.empty and a.thin_labels.size == 0


def test_expected_namesakes_is_customers_times_the_share_holding_each_value():
    # 10 customers; first name 0 held by 5 of them, last name 0 by 2: 10 * 5/10 * 2/10 = 1.0 expected by chance
    first = [0, 0, 0, 0, 1, 2, 3, 4, 5, 0]
    last = [0, 1, 2, 3, 4, 5, 6, 7, 8, 0]
    thin = [False] * 9 + [True]
    a = run(list(range(10)), first, last, thin, limit=1.0)
    assert a.links["expected"].tolist() == [1.0]
    assert a.links["note"].tolist() == ["sole namesake; namesakes expected by chance: 1.0"]
    refused = run(list(range(10)), first, last, thin, limit=0.5)
    assert refused.links.empty and refused.outcomes["too common"] == 1
    assert refused.proposals["note"].tolist() == [
        "not attached: name too common, 1.0 namesakes expected by chance (limit 0.5)"
    ]


def test_records_without_the_whole_name_or_with_two_names_are_not_attached():
    # record 1: no last name; customer 2 (records 2, 3): two different names
    a = run([0, 1, 2, 2, 4], [0, 0, 0, 1, 1], [0, -1, 0, 1, 1], [False, True, True, True, False])
    assert a.links.empty
    assert a.outcomes["no name"] == 2
    assert a.proposals[["left", "right"]].to_numpy().tolist() == [[1, 1], [2, 2], [3, 3]]
    assert a.proposals["note"].str.startswith("not attached: no whole name").all()


def test_a_sole_namesake_holding_a_different_value_is_refused():
    # customer 0 (records 0, 1) bears the name; customer 2 (record 2) is thin. Per case: the e-mail code of each
    # record (-1 = none) and whether the thin customer joins.
    cases = {
        "different": ([10, -1, 11], False),
        "one shared of two": ([10, 11, 11], True),
        "namesake holds none": ([-1, -1, 11], True),
        "thin holds none": ([10, -1, -1], True),
    }
    for case, (email, joins) in cases.items():
        a = sole_namesake_links(
            np.array([0, 0, 2]), [np.array([0, 0, 0]), np.array([0, 0, 0])], np.array([False, False, True]), 1e9,
            [np.array([5, 5, 5]), np.array(email)], ["phone", "email"],
        )  # fmt: skip
        assert (not a.links.empty) is joins, case
        assert a.outcomes["conflict"] == (0 if joins else 1), case
    # the refusal lists the namesake and names the field, so explain can say why
    assert a.outcomes["attached"] == 1
    refused = sole_namesake_links(
        np.array([0, 1]), [np.array([0, 0])], np.array([False, True]), 1e9,
        [np.array([1, 2]), np.array([3, 4])], ["phone", "email"],
    )  # fmt: skip
    assert refused.proposals[["left", "right", "accepted"]].to_numpy().tolist() == [[1, 0, False]]
    assert refused.proposals["note"].tolist() == ["not attached: the sole namesake holds a different phone and email"]


def test_among_counts_only_customers_holding_a_record_of_those_tables():
    # customers 0 and 1 both bear the name; only customer 1 holds a record of the among tables (record 2)
    labels, name, thin = np.array([0, 1, 1, 3]), np.array([0, 0, 0, 0]), np.array([False, False, False, True])
    among = np.array([False, False, True, False])
    assert sole_namesake_links(labels, [name, name], thin, 1e9).outcomes["ambiguous"] == 1
    a = sole_namesake_links(labels, [name, name], thin, 1e9, among=among, among_text="with records in t.x")
    assert a.links[["left", "right"]].to_numpy().tolist() == [[3, 1]]
    assert a.links["note"].tolist() == ["sole namesake with records in t.x; namesakes expected by chance: 1.0"]
    # nobody holding such a record bears the name: no namesake, and the note says among whom
    nobody = np.zeros(4, bool)
    none = sole_namesake_links(labels, [name, name], thin, 1e9, among=nobody, among_text="with records in t.x")
    assert none.outcomes["no namesake"] == 1
    assert none.proposals["note"].tolist() == ["not attached: no other customer with records in t.x bears this name"]


def test_among_counts_the_expected_namesakes_among_those_customers_only():
    # 10 customers, shares as above (1.0 namesakes expected among all); 4 of them hold an among record: 0.4
    first = [0, 0, 0, 0, 1, 2, 3, 4, 5, 0]
    last = [0, 1, 2, 3, 4, 5, 6, 7, 8, 0]
    thin = np.array([False] * 9 + [True])
    among = np.array([True, True, True, True] + [False] * 6)
    args = (np.arange(10), [np.array(first), np.array(last)], thin, 0.5)
    assert sole_namesake_links(*args).outcomes["too common"] == 1
    a = sole_namesake_links(*args, among=among, among_text="with records in t.x")
    assert a.links[["left", "right", "expected"]].to_numpy().tolist() == [[9, 0, 0.4]]


def test_thin_customers_of_one_name_join_each_other_when_no_one_else_bears_it():
    # customer 0 is full ("name 0"); thin customers 1, 2, 3 are "name 1"; thin customer 4 is "name 0"
    labels, name = np.array([0, 1, 2, 3, 4]), np.array([0, 1, 1, 1, 0])
    thin = np.array([False, True, True, True, True])
    a = thin_namesake_links(labels, [name, name], thin, 1e9)
    assert a.links[["left", "right"]].to_numpy().tolist() == [[2, 1], [3, 1]]
    assert a.links["note"].str.startswith("same name as other customers known only to these tables").all()
    # customer 4's name is borne by a full customer: left to the sole-namesake rules, without rows
    assert a.outcomes == {
        "attached": 3, "kept": 0, "ambiguous": 1, "no namesake": 0, "too common": 0, "conflict": 0, "no name": 0
    }  # fmt: skip
    assert 4 not in a.proposals["left"].tolist()


def test_thin_namesakes_holding_two_different_values_stay_apart():
    labels, name, thin = np.array([0, 1, 2]), np.array([1, 1, 2]), np.array([True, True, True])
    cases = {"different": ([10, 11, 12], False), "same": ([10, 10, -1], True), "one holds none": ([-1, 10, 12], True)}
    for case, (email, joins) in cases.items():
        a = thin_namesake_links(labels, [name, name], thin, 1e9, [np.array(email)], ["email"])
        assert (not a.links.empty) is joins, case
    assert a.outcomes["no namesake"] == 1  # customer 2's name is its own
    refused = thin_namesake_links(labels, [name, name], thin, 1e9, [np.array([10, 11, -1])], ["email"])
    assert refused.outcomes["conflict"] == 2
    assert refused.proposals[["left", "right", "accepted"]].to_numpy().tolist() == [[1, 0, False]]
    assert refused.proposals["note"].tolist() == ["not joined: customers of this name hold a different email"]


def test_thin_namesakes_count_the_expected_namesakes_among_thin_customers():
    # 4 customers, all thin; "name 1" is held by 2 of 4 for each part: 4 * 2/4 * 2/4 = 1.0
    labels, name, thin = np.arange(4), np.array([1, 1, 2, 3]), np.ones(4, bool)
    assert thin_namesake_links(labels, [name, name], thin, 1.0).links["expected"].tolist() == [1.0]
    refused = thin_namesake_links(labels, [name, name], thin, 0.5)
    assert refused.links.empty and refused.outcomes["too common"] == 2
    assert refused.proposals["note"].tolist() == [
        "not joined: name too common, 1.0 namesakes expected by chance (limit 0.5)"
    ]


def test_last_runs_attachment_is_kept_when_a_namesake_arrives():
    # customers 0 and 1 bear the name; thin customer 2 was last run in the customer of record 0 (previous id 7)
    labels, name, thin = np.array([0, 1, 2]), np.array([0, 0, 0]), np.array([False, False, True])
    args = (labels, [name, name], thin, 1e9)
    a = sole_namesake_links(*args, previous=np.array([7, -1, 7]))
    assert a.outcomes["kept"] == 1 and a.outcomes["ambiguous"] == 0
    assert a.links[["left", "right"]].to_numpy().tolist() == [[2, 0]]
    assert a.links["note"].tolist() == ["kept from the last run, though 2 customers bear this name now"]
    # the other bearer is still listed as refused, so explain shows both
    assert a.proposals[["left", "right", "accepted"]].to_numpy().tolist() == [[2, 0, True], [2, 1, False]]
    # a thin record the last run did not see, or one whose customer both bearers hold, follows today's rules
    for previous in ([7, -1, -1], [7, 7, 7]):
        assert sole_namesake_links(*args, previous=np.array(previous)).outcomes["ambiguous"] == 1, previous
    # a name too common now is kept too; a conflict still refuses
    common = sole_namesake_links(labels[[0, 2]], [name[:2], name[:2]], thin[1:], 0.1, previous=np.array([7, 7]))
    assert common.links["note"].tolist() == [
        "kept from the last run, though the name is too common now: 2.0 namesakes expected by chance (limit 0.1)"
    ]
    refused = sole_namesake_links(*args, [np.array([1, 2, 3])], ["phone"], previous=np.array([7, -1, 7]))
    assert refused.links.empty and refused.outcomes["conflict"] == 1


def attach_config(**rule) -> UnifyConfig:
    raw = config().model_dump()
    raw["match"]["attach"] = [{"name": "sole", "tables": ["loyalty.members"], **rule}]
    return UnifyConfig.model_validate(raw)


def with_pat_in_crm() -> dict:
    """m2 "Pat Jones" has no phone: only a name. c5 is the only other Pat Jones, with an e-mail address."""
    f = frames()
    crm = f[("crm", "contacts")]
    pat = crm.iloc[[1]].assign(contact_id="c5", first_name="Pat", last_name="Jones", email="pj@example.com")
    f[("crm", "contacts")] = pd.concat([crm, pat.assign(phone=None, street=None)], ignore_index=True)
    return f


def customer(result, source, table, key):
    ak = result.alternate_key
    return ak[(ak.DataSourceName == source) & (ak.EntityName == table) & (ak.AlternateValue == key)].CustomerId.iloc[0]


def test_engine_attaches_a_name_only_member_and_records_why():
    f = with_pat_in_crm()
    plain = unify(config(), f, KEYS)
    assert customer(plain, "loyalty", "members", "m2") != customer(plain, "crm", "contacts", "c5")
    r = unify(attach_config(), f, KEYS)
    assert customer(r, "loyalty", "members", "m2") == customer(r, "crm", "contacts", "c5")
    assert r.stats["customers"] == plain.stats["customers"] - 1 == len(r.customer_profile)
    link = r.match_pairs[r.match_pairs.Stage == "attach"]
    assert link[["LeftKey", "RightKey", "Rule", "Accepted", "Linked"]].values.tolist() == [
        ["m2", "c5", "sole", True, True]
    ]
    assert r.stats["attach"] == [
        {"rule": "sole", "thin_customers": 1, "attached": 1, "kept": 0, "ambiguous": 0, "no namesake": 0,
         "too common": 0, "conflict": 0, "no name": 0}
    ]  # fmt: skip
    # m1 "Rob Smith" has a phone: it is not thin, whatever its name
    assert not (link.LeftKey == "m1").any()


def test_a_member_whose_phone_matched_no_one_joins_its_namesake_unless_the_phones_differ():
    f = with_pat_in_crm()
    f[("loyalty", "members")].loc[1, "phone"] = "555-020-1111"  # no other record holds it
    # by default a member with a phone is not thin, whatever its name
    r = unify(attach_config(), f, KEYS)
    assert r.stats["attach"][0]["thin_customers"] == 0
    contact = attach_config(without=[], must_not_differ=[{"field": "phone"}])
    r = unify(contact, f, KEYS)
    assert customer(r, "loyalty", "members", "m2") == customer(r, "crm", "contacts", "c5")  # c5 holds no phone
    # the namesake holds another phone: the member stays a customer of its own, and explain says why
    f[("crm", "contacts")].loc[4, "phone"] = "555-030-2222"
    r = unify(contact, f, KEYS)
    assert customer(r, "loyalty", "members", "m2") != customer(r, "crm", "contacts", "c5")
    assert r.stats["attach"][0]["conflict"] == 1
    info = explain_record("loyalty", "members", "m2", r.alternate_key, r.match_pairs, r.customer_profile)
    assert (
        "loyalty|members|m2 <-> crm|contacts|c5: rule sole (first_name 1.0, last_name 1.0) "
        "[not attached: the sole namesake holds a different phone]"
    ) in render_record(info)


def test_bypass_phone_counts_as_missing_and_never_match_still_holds():
    f = with_pat_in_crm()
    f[("loyalty", "members")].loc[1, "phone"] = "N/A"
    r = unify(attach_config(), f, KEYS)
    assert customer(r, "loyalty", "members", "m2") == customer(r, "crm", "contacts", "c5")
    raw = attach_config().model_dump()
    raw["match"]["never_match"] = [{"left": ["loyalty", "members", "m2"], "right": ["crm", "contacts", "c5"]}]
    r = unify(UnifyConfig.model_validate(raw), f, KEYS)
    assert customer(r, "loyalty", "members", "m2") != customer(r, "crm", "contacts", "c5")
    link = r.match_pairs[r.match_pairs.Stage == "attach"]
    assert link.Accepted.all() and not link.Linked.any()
    assert link.Note.tolist() == ["over-merge guard: never-match pair"]


def test_explain_shows_the_attachment_and_the_refusal():
    f = with_pat_in_crm()
    r = unify(attach_config(), f, KEYS)
    info = explain_record("loyalty", "members", "m2", r.alternate_key, r.match_pairs, r.customer_profile)
    text = render_record(info)
    assert "attach rule sole (first_name 1.0, last_name 1.0)  [sole namesake; namesakes expected by chance:" in text
    # a second full "Pat Jones" makes the name ambiguous
    crm = f[("crm", "contacts")]
    f[("crm", "contacts")] = pd.concat(
        [crm, crm.iloc[[4]].assign(contact_id="c6", email="pat@example.org")], ignore_index=True
    )
    cfg = attach_config()
    r = unify(cfg, f, KEYS)
    assert customer(r, "loyalty", "members", "m2") not in {
        customer(r, "crm", "contacts", "c5"),
        customer(r, "crm", "contacts", "c6"),
    }
    records = build_records(cfg, f, KEYS)
    pair = explain_pair(
        records, cfg, make_normalizer(cfg), ("loyalty", "members", "m2"), ("crm", "contacts", "c6"),
        r.alternate_key, r.match_pairs,
    )  # fmt: skip
    assert "last run: attach rule sole: not attached: 2 customers bear this name" in render_pair(pair)


def test_engine_attaches_among_customers_holding_a_record_of_the_among_tables():
    f = with_pat_in_crm()
    crm = f[("crm", "contacts")]
    # a second full "Pat Jones" (c6) makes the name ambiguous; only c5 also shops (s4 shares c5's address)
    f[("crm", "contacts")] = pd.concat(
        [crm, crm.iloc[[4]].assign(contact_id="c6", email="pat@example.org")], ignore_index=True
    )
    shop = f[("shop", "customers")]
    s4 = pd.DataFrame({"customer_id": ["s4"], "full_name": ["Pat Jones"], "email": ["pj@example.com"]})
    f[("shop", "customers")] = pd.concat([shop, s4.astype("string")], ignore_index=True)
    raw = attach_config().model_dump()
    raw["match"]["attach"].append(
        {"name": "shoppers", "tables": ["loyalty.members"], "among": ["shop.customers"], "max_expected_namesakes": 5}
    )
    r = unify(UnifyConfig.model_validate(raw), f, KEYS)
    pat = customer(r, "loyalty", "members", "m2")
    assert pat == customer(r, "crm", "contacts", "c5") == customer(r, "shop", "customers", "s4")
    assert pat != customer(r, "crm", "contacts", "c6")
    assert [a["ambiguous"] for a in r.stats["attach"]] == [1, 0]
    assert [a["attached"] for a in r.stats["attach"]] == [0, 1]
    link = r.match_pairs[(r.match_pairs.Stage == "attach") & r.match_pairs.Linked]
    assert link[["LeftKey", "RightKey", "Rule"]].values.tolist() == [["m2", "c5", "shoppers"]]
    assert link.Note.iloc[0].startswith("sole namesake with records in shop.customers; namesakes expected by chance:")
    # The same input again, with the ids of the run before: the first rule, finding the name ambiguous, does not
    # keep m2 where it was before the second rule attaches it afresh, so the attach pairs are the same.
    again = unify(UnifyConfig.model_validate(raw), f, KEYS, previous_identity=r.identity.identity_map, run_id="2")
    pd.testing.assert_frame_equal(again.match_pairs, r.match_pairs)
    assert again.stats["attach"] == r.stats["attach"]


def test_engine_joins_members_known_only_to_loyalty_that_share_a_name():
    f = frames()
    members = pd.DataFrame(
        {"member_id": ["m7", "m8"], "first_name": ["Zoe", "Zoe"], "last_name": ["Quill", "Quill"],
         "phone": ["555-777-0001", None]}
    ).astype("string")  # fmt: skip
    f[("loyalty", "members")] = pd.concat([f[("loyalty", "members")], members], ignore_index=True)
    plain = unify(config(), f, KEYS)
    assert customer(plain, "loyalty", "members", "m7") != customer(plain, "loyalty", "members", "m8")
    r = unify(attach_config(without=[], each_other=True, must_not_differ=[{"field": "phone"}]), f, KEYS)
    assert customer(r, "loyalty", "members", "m7") == customer(r, "loyalty", "members", "m8")
    assert r.stats["customers"] == plain.stats["customers"] - 1
    link = r.match_pairs[(r.match_pairs.Stage == "attach") & r.match_pairs.Linked]
    assert sorted(link[["LeftKey", "RightKey"]].values.tolist()[0]) == ["m7", "m8"]
    assert link.Rule.tolist() == ["sole"]


@pytest.mark.parametrize("keep", [True, False])
def test_an_arriving_namesake_does_not_move_an_attached_record_unless_told(keep):
    f = with_pat_in_crm()
    first = unify(attach_config(keep_last_run=keep), f, KEYS)
    pat = customer(first, "loyalty", "members", "m2")
    assert pat == customer(first, "crm", "contacts", "c5")
    crm = f[("crm", "contacts")]
    f[("crm", "contacts")] = pd.concat(
        [crm, crm.iloc[[4]].assign(contact_id="c6", email="pat@example.org")], ignore_index=True
    )
    night2 = unify(
        attach_config(keep_last_run=keep), f, KEYS, previous_identity=first.identity.identity_map, run_id="2"
    )
    assert (customer(night2, "loyalty", "members", "m2") == pat) is keep
    assert customer(night2, "crm", "contacts", "c5") == pat
    assert night2.stats["attach"][0]["kept" if keep else "ambiguous"] == 1
    # c6 is new either way; m2 leaving c5's customer is a split
    assert ("split" in set(night2.identity.id_change.Reason)) is not keep
    if keep:
        link = night2.match_pairs[(night2.match_pairs.Stage == "attach") & night2.match_pairs.Linked]
        assert link[["LeftKey", "RightKey"]].values.tolist() == [["m2", "c5"]]
        assert link.Note.tolist() == ["kept from the last run, though 2 customers bear this name now"]


@pytest.mark.parametrize(
    "rule",
    [{}, {"without": [], "must_not_differ": [{"field": "phone"}]}, {"without": [], "each_other": True}],
)
def test_attachment_does_not_depend_on_row_order(rule):
    f = with_pat_in_crm()
    f[("loyalty", "members")] = pd.concat(
        [f[("loyalty", "members")], pd.DataFrame({"member_id": ["m3"], "first_name": ["Ann"], "last_name": ["Lee"],
                                                  "phone": ["555-444-0000"]}).astype("string")],
        ignore_index=True,
    )  # fmt: skip
    first = unify(attach_config(**rule), f, KEYS)
    shuffled = {k: v.sample(frac=1.0, random_state=3).reset_index(drop=True) for k, v in f.items()}
    again = unify(attach_config(**rule), shuffled, KEYS)
    pd.testing.assert_frame_equal(first.alternate_key, again.alternate_key)
    pd.testing.assert_frame_equal(first.match_pairs, again.match_pairs)


def test_explain_says_why_a_thin_record_with_no_namesake_stayed_alone():
    f = with_pat_in_crm()
    f[("loyalty", "members")].loc[1, "last_name"] = "Quill"  # nobody else is Pat Quill
    r = unify(attach_config(), f, KEYS)
    assert r.stats["attach"][0]["no namesake"] == 1
    alone = r.match_pairs[(r.match_pairs.Stage == "attach") & (r.match_pairs.LeftKey == "m2")]
    assert alone[["RightKey", "Scores", "Accepted", "Linked"]].values.tolist() == [["m2", "{}", False, False]]
    # an outcome is not a compared candidate
    assert [s for s in r.stats["rules"] if s["stage"] == "attach"] == []
    info = explain_record("loyalty", "members", "m2", r.alternate_key, r.match_pairs, r.customer_profile)
    assert info["rejected"] == []
    text = render_record(info)
    assert "(none: the record matched nothing and is a customer of its own)" in text
    assert "loyalty|members|m2: attach rule sole: not attached: no other customer bears this name" in text
