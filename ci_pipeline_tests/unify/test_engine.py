"""Dedup, match, clusters, guard and merge on tiny tables."""

from __future__ import annotations

import datetime as dt
import json

import numpy as np
import pandas as pd
import pytest

from ci_pipeline.config.unify import UnifyConfig
from ci_pipeline.errors import UserError
from ci_pipeline.outputs import guids
from ci_pipeline.unify import unify
from ci_pipeline.unify.cluster import Guard, components, densities, skip_notes
from ci_pipeline.unify.explain import explain_record, render_record
from ci_pipeline_tests.unify.helpers import KEYS, config, frames


def customer_of(result, source, table, key):
    ak = result.alternate_key
    row = ak[(ak.DataSourceName == source) & (ak.EntityName == table) & (ak.AlternateValue == key)]
    assert len(row) == 1
    return row.CustomerId.iloc[0]


def test_everyone_included_and_linked_as_expected():
    r = unify(config(), frames(), KEYS)
    assert len(r.alternate_key) == 9  # every record, none dropped
    c = lambda *k: customer_of(r, *k)  # noqa: E731
    # Bob Smith: email (case/whitespace) + nickname first name; loyalty "Rob" via phone + last name
    assert c("crm", "contacts", "c1") == c("shop", "customers", "s1") == c("loyalty", "members", "m1")
    # José García vs Jose Garcia: phone with 0034 prefix vs +34, accents folded
    assert c("crm", "contacts", "c4") == c("shop", "customers", "s2")
    # dedup within crm on email
    assert c("crm", "contacts", "c2") == c("crm", "contacts", "c3")
    assert r.stats["customers"] == len(r.customer_profile) == 5
    assert r.customer_profile.CustomerId.is_unique
    assert r.customer_profile.CustomerId.str.fullmatch(r"[0-9a-f]{32}").all()


def test_profile_values_keep_no_blanks_around_them():
    tables = frames()
    loyalty = tables[("loyalty", "members")]
    tables[("loyalty", "members")] = loyalty.assign(first_name=[" Rob", "Pat "], last_name=["Smith", " Jones  "])
    profile = unify(config(), tables, KEYS).customer_profile
    pat = profile[profile.LastName == "Jones"]
    assert pat[["FirstName", "FullName"]].values.tolist() == [["Pat", "Pat Jones"]]
    assert not profile.select_dtypes("string").apply(lambda c: c.str.match(r"^\s|.*\s$").fillna(False)).any().any()


def test_a_placeholder_is_a_profile_value_only_where_the_customer_has_no_real_one():
    tables = frames()
    # Na is a surname and "na" a default placeholder; Pat's and Zed's only e-mail values are a placeholder and
    # blanks; Ann's "N/A" phone (c2) loses to her other record's number.
    tables[("loyalty", "members")] = tables[("loyalty", "members")].assign(last_name=["Smith", "Na"])
    tables[("shop", "customers")] = tables[("shop", "customers")].assign(email=["bob.smith@example.com", "", "  "])
    result = unify(config(), tables, KEYS)
    # The statistics count them, per field: a customer with no real value.
    assert result.stats["placeholders_kept"] == {"LastName": 1}
    profile = result.customer_profile
    pat = profile[profile.FirstName == "Pat"]
    assert pat[["LastName", "FullName"]].values.tolist() == [["Na", "Pat Na"]]
    assert profile.loc[profile.FullName == "Zed Nobody", "Email"].isna().all()
    assert profile.loc[profile.crm_contacts_contact_id == "c2", "Phone"].tolist() == ["555-010-9999"]
    # A group whose every value is a placeholder comes from one record all the same.
    shop = tables[("shop", "customers")]
    tables[("shop", "customers")] = shop.assign(
        email=["bob.smith@example.com", "", "unknown"], phone=[*shop.phone[:2], "N/A"]
    )
    result = unify(config(merge={"groups": {"contact": ["Phone", "Email"]}}), tables, KEYS)
    assert result.stats["placeholders_kept"] == {"LastName": 1, "Phone": 1, "Email": 1}
    grouped = result.customer_profile
    assert grouped.loc[grouped.FullName == "Zed Nobody", ["Phone", "Email"]].values.tolist() == [["N/A", "unknown"]]


def test_a_phone_stored_as_a_double_is_its_digits_on_the_profile():
    tables = frames()
    tables[("loyalty", "members")] = tables[("loyalty", "members")].assign(phone=[None, 5550109876.0])
    profile = unify(config(), tables, KEYS).customer_profile
    assert profile.loc[profile.LastName == "Jones", "Phone"].tolist() == ["5550109876"]


def test_columns_named_differently_in_two_tables_are_matched_and_merged_as_one_custom_attribute():
    raw = config().model_dump()
    raw["tables"][0]["columns"]["card"] = "custom:loyalty_id"
    raw["tables"][2]["columns"]["loyalty_id"] = "custom"
    raw["match"]["rules"].append({"name": "same_card", "conditions": [{"field": "loyalty_id"}]})
    f = frames()
    f[("crm", "contacts")]["card"] = pd.Series([None, None, None, "L-9"], dtype="string")
    f[("loyalty", "members")]["loyalty_id"] = pd.Series(["L-1", "L-9"], dtype="string")
    r = unify(UnifyConfig.model_validate(raw), f, KEYS)
    # Pat Jones shares nothing with José García but the card each system writes under its own column name.
    assert customer_of(r, "crm", "contacts", "c4") == customer_of(r, "loyalty", "members", "m2")
    prof = r.customer_profile.set_index("CustomerId")
    assert prof.loc[customer_of(r, "crm", "contacts", "c4"), "LoyaltyId"] == "L-9"
    assert "Card" not in prof.columns


def test_rules_tried_in_order_and_scores_recorded():
    r = unify(config(), frames(), KEYS)
    mp = r.match_pairs
    bob = mp[(mp.LeftKey == "c1") & (mp.RightKey == "s1")]
    assert bob.Rule.tolist() == ["email_name"]  # accepted by rule 1, never re-tried by rule 2
    assert json.loads(bob.Scores.iloc[0]) == {"email": 1.0, "first_name": 1.0}


def test_fuzzy_threshold_decides():
    f = frames()
    f[("shop", "customers")].loc[0, "full_name"] = "Roberta Smith"  # "roberta" vs "robert": 6/7 = 0.857
    strict = config()
    strict_rules = strict.model_dump()
    strict_rules["match"]["rules"][0]["conditions"][1]["precision"] = 0.9
    strict_rules["match"]["rules"] = strict_rules["match"]["rules"][:1]
    r = unify(type(strict).model_validate(strict_rules), f, KEYS)
    pair = r.match_pairs[(r.match_pairs.LeftKey == "c1") & (r.match_pairs.RightKey == "s1")]
    assert not pair.Accepted.iloc[0]
    assert json.loads(pair.Scores.iloc[0])["first_name"] == pytest.approx(0.857, abs=1e-3)
    r = unify(config(), f, KEYS)
    assert customer_of(r, "crm", "contacts", "c1") == customer_of(r, "shop", "customers", "s1")


def test_null_and_empty_never_match_each_other():
    f = frames()
    f[("crm", "contacts")]["email"] = pd.Series([None, "", " ", "N/A"], dtype="string")
    f[("shop", "customers")]["email"] = pd.Series(["", None, ""], dtype="string")
    f[("crm", "contacts")]["phone"] = pd.Series([None] * 4, dtype="string")
    f[("loyalty", "members")]["phone"] = pd.Series(["", None], dtype="string")
    r = unify(config(), f, KEYS)
    assert r.alternate_key.CustomerId.nunique() == 9
    assert not r.match_pairs.Accepted.any()


def test_all_records_sharing_one_value_make_no_giant_customer():
    n = 60
    crm = pd.DataFrame(
        {
            "contact_id": [f"c{i}" for i in range(n)],
            "first_name": ["Pat"] * n,
            "last_name": ["Doe"] * n,
            "email": ["family@example.com"] * n,
            "phone": ["555-010-0000"] * n,
            "street": [None] * n,
            "city": [None] * n,
            "modified_at": [None] * n,
        }
    ).astype("string")
    f = frames()
    f[("crm", "contacts")] = crm
    r = unify(config(), f, KEYS)
    crm_ids = r.alternate_key[r.alternate_key.DataSourceName == "crm"].CustomerId
    assert crm_ids.nunique() == n
    assert r.stats["largest_cluster"] <= 2
    frequent = r.stats["frequent_values_ignored"]
    assert any(k.startswith("email") for k in frequent)


def test_cluster_size_cap_splits_by_strongest_links():
    # a chain of 6 crm records linked by email pairs: a-b, b-c, ... with cap 3
    emails = ["e1@x.com", "e1@x.com", "e2@x.com", "e2@x.com", "e3@x.com", "e3@x.com"]
    crm = pd.DataFrame(
        {
            "contact_id": [f"c{i}" for i in range(6)],
            "first_name": ["A"] * 6,
            "last_name": ["B"] * 6,
            "email": emails,
            "phone": ["555-010-1111"] * 2 + ["555-010-2222"] * 2 + [None] * 2,
            "street": [None] * 6,
            "city": [None] * 6,
            "modified_at": [None] * 6,
        }
    ).astype("string")
    raw = config().model_dump()
    raw["tables"][0]["dedup"]["rules"].append({"name": "same_phone", "conditions": [{"field": "phone"}]})
    raw["guard"] = {"max_cluster_size": 3}
    f = frames()
    f[("crm", "contacts")] = crm.assign(
        phone=["555-010-1111", "555-010-5555", "555-010-5555", "555-010-6666", "555-010-6666", None]
    )
    cfg = type(config()).model_validate(raw)
    r = unify(cfg, f, KEYS)
    assert r.stats["largest_cluster"] <= 3
    assert r.stats["guard_events"] and r.stats["guard_events"][0]["reason"] == "size cap"
    assert (r.match_pairs.Note == "over-merge guard: size cap").any()


def test_conflict_guard_keeps_two_birth_dates_apart_even_through_records_without_one():
    # 0-1-2-3 is a chain of links; 0 and 3 carry different birth dates, 1 and 2 none (a shared home phone).
    links = pd.DataFrame({"left": [0, 1, 2], "right": [1, 2, 3], "order": [0, 1, 2]})
    none = (np.empty(0, np.int64), np.empty(0, np.int64))
    births = np.array([5, -1, -1, 7])
    labels, skipped, events = Guard(4, none, 50, {"birth_date": births}).clusters(links)
    assert labels.tolist() == [0, 0, 0, 3]
    assert skipped.tolist() == [0, 0, 3]
    assert skip_notes(skipped, ["birth_date"]).tolist() == ["", "", "over-merge guard: conflicting birth_date"]
    assert events == [
        {
            "records": 4,
            "parts": 2,
            "reason": "conflicting birth_date",
            "links_skipped_size": 0,
            "links_skipped_never_match": 0,
            "links_skipped_conflict": 1,
        }
    ]
    # One birth date, or none: a plain transitive cluster, no event.
    labels, skipped, events = Guard(4, none, 50, {"birth_date": np.array([5, -1, 5, -1])}).clusters(links)
    assert labels.tolist() == [0, 0, 0, 0] and not skipped.any() and events == []


def test_the_guard_asked_again_with_weaker_links_added_decides_as_from_scratch():
    """Attachment links come after the others: the guard then rebuilds only the components they reach, and its
    labels, skipped links and events are those of guarding every link afresh."""
    rng = np.random.default_rng(21)
    for _ in range(40):
        n = int(rng.integers(2, 60))
        m = int(rng.integers(1, 3 * n))
        a, b = rng.integers(0, n, m), rng.integers(0, n, m)
        keep = a != b
        links = pd.DataFrame({"left": np.minimum(a, b)[keep], "right": np.maximum(a, b)[keep]})
        links["order"] = rng.permutation(len(links))
        added = int(rng.integers(0, len(links) + 1))
        # The added links are the weakest: last in the order, as attachment links are.
        first = len(links) - added
        links.loc[links.index[first:], "order"] += len(links)
        never = (rng.integers(0, n, 2), rng.integers(0, n, 2))
        births = rng.integers(-3, 3, n)
        births[births < 0] = -1
        guard = Guard(n, never, 4, {"birth_date": births})
        guard.clusters(links.iloc[:first])
        again = guard.clusters(links, added=added)
        fresh = Guard(n, never, 4, {"birth_date": births}).clusters(links)
        assert again[0].tolist() == fresh[0].tolist()
        assert again[1].tolist() == fresh[1].tolist()
        assert again[2] == fresh[2]


def test_father_and_son_sharing_a_home_phone_stay_two_customers():
    raw = config().model_dump()
    raw["tables"][0]["columns"]["born"] = "birth_date"
    raw["tables"][2]["columns"]["born"] = "birth_date"
    f = frames()
    f[("crm", "contacts")]["born"] = pd.Series(["1960-01-01", None, None, None], dtype="string")
    # m1 "Rob Smith" shares the home phone with c1/s1 but was born thirty years later: the son.
    f[("loyalty", "members")]["born"] = pd.Series(["1990-05-05", None], dtype="string")
    plain = unify(type(config()).model_validate(raw), f, KEYS)
    assert customer_of(plain, "loyalty", "members", "m1") == customer_of(plain, "crm", "contacts", "c1")
    raw["guard"] = {"conflict_fields": ["birth_date"]}
    r = unify(type(config()).model_validate(raw), f, KEYS)
    assert customer_of(r, "crm", "contacts", "c1") == customer_of(r, "shop", "customers", "s1")
    assert customer_of(r, "loyalty", "members", "m1") != customer_of(r, "crm", "contacts", "c1")
    refused = r.match_pairs[r.match_pairs.RightKey == "m1"]
    assert (refused.Accepted & ~refused.Linked).all() and len(refused) == 2
    assert set(refused.Note) == {"over-merge guard: conflicting birth_date"}
    assert r.stats["guard_events"][0]["reason"] == "conflicting birth_date"
    # explain of the son's record says what it matched and why it was not linked (it said it matched nothing).
    text = render_record(explain_record("loyalty", "members", "m1", r.alternate_key, r.match_pairs, r.customer_profile))
    assert "(none: what it matched was not linked, below; it is a customer of its own)" in text
    assert "matched, but not linked (the records stay in other customers):" in text
    assert (
        "<-> loyalty|members|m1: match rule" in text
        and "[not linked: over-merge guard: conflicting birth_date]" in text
    )
    assert "matched nothing" not in text


def test_an_always_match_pair_the_guard_refuses_is_warned_naming_the_pair_and_the_conflict():
    raw = config().model_dump()
    raw["tables"][0]["columns"]["born"] = "birth_date"
    raw["tables"][2]["columns"]["born"] = "birth_date"
    raw["guard"] = {"conflict_fields": ["birth_date"]}
    f = frames()
    f[("crm", "contacts")]["born"] = pd.Series(["1960-01-01", None, None, "1971-02-03"], dtype="string")
    f[("loyalty", "members")]["born"] = pd.Series(["1990-05-05", "1980-04-04"], dtype="string")
    plain = unify(type(config()).model_validate(raw), f, KEYS)
    assert not [w for w in plain.warnings if "always_match" in w]
    raw["match"]["always_match"] = [{"left": ["crm", "contacts", "c4"], "right": ["loyalty", "members", "m2"]}]
    r = unify(type(config()).model_validate(raw), f, KEYS)
    assert customer_of(r, "crm", "contacts", "c4") != customer_of(r, "loyalty", "members", "m2")
    [warned] = [w for w in r.warnings if "always_match" in w]
    assert "1 always_match pair(s) not joined" in warned
    assert "crm|contacts|c4 and loyalty|members|m2 (over-merge guard: conflicting birth_date)" in warned


def test_conflict_field_with_normalizations_keeps_two_personal_addresses_apart():
    # Robert Smith (c1, s1) and his son Rob (s4) share the home phone; each has his own personal address.
    f = frames()
    f[("crm", "contacts")].loc[0, "email"] = "bob.smith@gmail.com"
    f[("shop", "customers")].loc[0, "email"] = "Bob.Smith@gmail.com"
    s4 = pd.DataFrame({"customer_id": ["s4"], "full_name": ["Rob Smith"], "email": ["robjr@yahoo.com"],
                       "phone": ["555 010 1234"]})  # fmt: skip
    f[("shop", "customers")] = pd.concat([f[("shop", "customers")], s4.astype("string")], ignore_index=True)
    plain = unify(config(), f, KEYS)
    assert customer_of(plain, "shop", "customers", "s4") == customer_of(plain, "crm", "contacts", "c1")
    personal = {"field": "email", "normalize": ["ascii", "case", "whitespace", "email", "personal_email"]}
    r = unify(config(guard={"conflict_fields": [personal]}), f, KEYS)
    assert customer_of(r, "crm", "contacts", "c1") == customer_of(r, "shop", "customers", "s1")
    assert customer_of(r, "shop", "customers", "s4") != customer_of(r, "crm", "contacts", "c1")
    text = "over-merge guard: conflicting email (ascii, case, whitespace, email, personal_email)"
    assert text in set(r.match_pairs.Note)
    assert r.stats["guard_events"][0]["reason"] == text.removeprefix("over-merge guard: ")
    # a work address says nothing: at example.com both would be one customer again
    f[("crm", "contacts")].loc[0, "email"] = "bob.smith@example.com"
    f[("shop", "customers")].loc[0, "email"] = "bob.smith@example.com"
    r = unify(config(guard={"conflict_fields": [personal]}), f, KEYS)
    assert customer_of(r, "shop", "customers", "s4") == customer_of(r, "crm", "contacts", "c1")


def test_never_and_always_match_overrides():
    raw = config().model_dump()
    raw["match"]["never_match"] = [{"left": ["crm", "contacts", "c1"], "right": ["shop", "customers", "s1"]}]
    raw["match"]["always_match"] = [{"left": ["crm", "contacts", "c2"], "right": ["loyalty", "members", "m2"]}]
    r = unify(type(config()).model_validate(raw), frames(), KEYS)
    c = lambda *k: customer_of(r, *k)  # noqa: E731
    # the direct link is refused, and the transitive path through m1 is cut by the guard as well
    assert c("crm", "contacts", "c1") != c("shop", "customers", "s1")
    assert c("crm", "contacts", "c2") == c("loyalty", "members", "m2")
    assert (r.match_pairs.Note == "never_match").any()


def test_override_file(tmp_path):
    (tmp_path / "always.csv").write_text(
        "left_source,left_table,left_key,right_source,right_table,right_key\ncrm,contacts,c2,shop,customers,s3\n"
    )
    raw = config().model_dump()
    raw["match"]["always_match_file"] = "always.csv"
    r = unify(type(config()).model_validate(raw), frames(), KEYS, base_dir=tmp_path)
    assert customer_of(r, "crm", "contacts", "c2") == customer_of(r, "shop", "customers", "s3")
    # Saved by a spreadsheet as "CSV UTF-8": a byte-order mark before the header is no part of it.
    header = "left_source,left_table,left_key,right_source,right_table,right_key\n"
    (tmp_path / "always.csv").write_bytes(("\ufeff" + header + "crm,contacts,c2,shop,customers,s3\n").encode())
    r = unify(type(config()).model_validate(raw), frames(), KEYS, base_dir=tmp_path)
    assert customer_of(r, "crm", "contacts", "c2") == customer_of(r, "shop", "customers", "s3")
    # A file of labelled pairs of both kinds: the message says how to split it.
    (tmp_path / "always.csv").write_text("left,right,match\nc2,s3,true\n")
    with pytest.raises(UserError, match=r"the first line must be the header .* in never_match_file"):
        unify(type(config()).model_validate(raw), frames(), KEYS, base_dir=tmp_path)
    (tmp_path / "always.csv").write_text("left_source,left_table,left_key,right_source,right_table,right_key\nx,y\n")
    with pytest.raises(UserError, match="line"):
        unify(type(config()).model_validate(raw), frames(), KEYS, base_dir=tmp_path)


@pytest.mark.parametrize(
    ("winner", "expected"),
    [
        ({"policy": "most_filled"}, "c2"),
        ({"policy": "most_recent", "column": "modified_at"}, "c3"),
        ({"policy": "least_recent", "column": "modified_at"}, "c2"),
    ],
)
def test_dedup_winner_policies(winner, expected):
    raw = config().model_dump()
    raw["tables"][0]["dedup"]["winner"] = winner
    r = unify(type(config()).model_validate(raw), frames(), KEYS)
    d = r.dedup[("crm", "contacts")].set_index("Key")
    assert d.loc["c3", "WinnerKey"] == expected and d.loc[expected, "IsWinner"]
    assert d.loc["c2", "GroupSize"] == 2
    assert r.customer_profile.crm_contacts_contact_id.isin([expected]).any()


def test_dedup_tie_goes_to_highest_key():
    f = frames()
    f[("crm", "contacts")].loc[2, ["street", "phone"]] = ["1 First Avenue", "555"]
    r = unify(config(), f, KEYS)
    assert r.dedup[("crm", "contacts")].set_index("Key").loc["c2", "WinnerKey"] == "c3"


def test_merge_policies_and_groups():
    raw = config().model_dump()
    raw["tables"][1]["recency_column"] = None
    raw["merge"] = {
        "fields": {"Email": {"policy": "priority", "priority": ["shop.customers"]}, "Tier": {"policy": "least_recent"}},
        "exclude": ["ModifiedAt"],
        "rename": {"Tier": "LoyaltyTier"},
    }
    r = unify(type(config()).model_validate(raw), frames(), KEYS)
    prof = r.customer_profile.set_index("crm_contacts_contact_id")
    assert prof.loc["c1", "Email"] == "bob.smith@example.com"  # shop has priority for Email
    assert prof.loc["c1", "FirstName"] == "Robert"  # crm first by default
    assert "ModifiedAt" not in prof.columns and prof.loc["c1", "LoyaltyTier"] == "gold"
    # the address group comes from one record: street and city of c4 (crm) even though shop has a city too
    assert (prof.loc["c4", "Address1"], prof.loc["c4", "City"]) == ("Calle Mayor 3", "Madrid")


def test_most_recent_policy_and_combined_field():
    raw = config().model_dump()
    raw["merge"] = {
        "fields": {
            "Phone": {"policy": "most_recent"},
            "Contact": {"sources": ["shop.customers.email", "loyalty.members.tier"]},
        }
    }
    r = unify(type(config()).model_validate(raw), frames(), KEYS)
    prof = r.customer_profile.set_index("crm_contacts_contact_id")
    assert prof.loc["c2", "Phone"] == "555-010-9999"  # c3 (2026-05) is more recent than c2, and c2 says N/A
    assert prof.loc["c1", "Contact"] == "gold" or prof.loc["c1", "Contact"] == "bob.smith@example.com"


def test_alternate_key_and_keyring():
    r = unify(config(), frames(), KEYS)
    ak = r.alternate_key
    row = ak[ak.AlternateValue == "c3"].iloc[0]
    ring = json.loads(row.KeyRing)
    assert ring == [{"dataSourceName": "crm", "entityName": "contacts", "preferredKey": "c2", "keys": ["c2", "c3"]}]
    assert row.msdynci_identifier == "crm|contacts|c3"
    assert ak.AlternateKeyId.is_unique
    # In the order of its key, as published: the sink and the exports stream it without sorting.
    assert ak.AlternateKeyId.is_monotonic_increasing
    assert ak.AlternateKeyId.tolist() == guids(ak.msdynci_identifier).tolist()


def test_keyring_escapes_keys_and_lists_tables_in_config_order():
    f = frames()
    f[("crm", "contacts")]["contact_id"] = ['c"1\\', "c2", "c3", "c4"]
    r = unify(config(), f, {**KEYS})
    ak = r.alternate_key.set_index("AlternateValue")
    ring = json.loads(ak.loc["m1", "KeyRing"])
    assert [(e["dataSourceName"], e["preferredKey"], e["keys"]) for e in ring] == [
        ("crm", 'c"1\\', ['c"1\\']),
        ("shop", "s1", ["s1"]),
        ("loyalty", "m1", ["m1"]),
    ]
    # every record of a customer carries the same ring
    assert ak.loc['c"1\\', "KeyRing"] == ak.loc["s1", "KeyRing"] == ak.loc["m1", "KeyRing"]


def test_missing_column_and_duplicate_key_are_clear_errors():
    f = frames()
    f[("shop", "customers")] = f[("shop", "customers")].drop(columns=["town"])
    with pytest.raises(UserError, match="shop.customers has no column 'town'"):
        unify(config(), f, KEYS)
    f = frames()
    f[("crm", "contacts")] = f[("crm", "contacts")].drop(columns=["contact_id"])
    with pytest.raises(UserError, match="primary key"):
        unify(config(), f, KEYS)
    f = frames()
    f[("crm", "contacts")].loc[1, "contact_id"] = "c1"
    with pytest.raises(UserError, match="not unique"):
        unify(config(), f, KEYS)


def test_components_are_transitive():
    labels = components(6, np.array([0, 2, 3]), np.array([1, 3, 4]))
    assert labels.tolist() == [0, 0, 2, 2, 2, 5]
    chain = np.arange(999)
    labels = components(1000, chain[::-1], chain[::-1] + 1)
    assert (labels == 0).all()


def test_allow_missing_refuses_only_conflicts():
    raw = config().model_dump()
    raw["tables"][2]["columns"]["birth"] = "birth_date"
    raw["tables"][0]["columns"]["birth"] = "birth_date"
    raw["match"]["rules"][1]["conditions"].append({"field": "birth_date", "allow_missing": True})
    f = frames()
    f[("crm", "contacts")]["birth"] = pd.Series(["1980-01-01", None, None, None], dtype="string")
    f[("loyalty", "members")]["birth"] = pd.Series(["01/01/1990", None], dtype="string")  # conflicts with c1
    r = unify(type(config()).model_validate(raw), f, KEYS)
    pair = r.match_pairs[(r.match_pairs.LeftKey == "c1") & (r.match_pairs.RightKey == "m1")]
    assert not pair.Accepted.iloc[0]
    # s1 has no birth date: the phone rule still links it to m1 (missing is allowed)
    s1_m1 = r.match_pairs[(r.match_pairs.LeftKey == "s1") & (r.match_pairs.RightKey == "m1")]
    assert s1_m1.Accepted.iloc[0] and json.loads(s1_m1.Scores.iloc[0])["birth_date"] is None


def test_names_and_dates_are_not_frequency_capped_but_oversized_blocks_are():
    n = 40
    crm = pd.DataFrame(
        {
            "contact_id": [f"c{i}" for i in range(n)],
            "first_name": ["Pat"] * n,
            "last_name": ["Doe"] * n,
            "email": [f"p{i}@x.com" for i in range(n)],
            "phone": [None] * n,
            "street": [None] * n,
            "city": [None] * n,
            "modified_at": [None] * n,
        }
    ).astype("string")
    f = frames()
    f[("crm", "contacts")] = crm
    raw = config().model_dump()
    raw["tables"][0]["dedup"]["rules"] = [
        {"name": "same_name", "conditions": [{"field": "last_name"}, {"field": "first_name"}]}
    ]
    raw["guard"] = {"max_value_frequency": 5, "max_block_size": 1000, "max_cluster_size": 100}
    r = unify(type(config()).model_validate(raw), f, KEYS)
    assert r.dedup[("crm", "contacts")].GroupSize.max() == n  # names are not capped
    raw["guard"]["max_block_size"] = 10
    r = unify(type(config()).model_validate(raw), f, KEYS)
    assert r.dedup[("crm", "contacts")].GroupSize.max() == 1
    assert r.stats["oversized_blocks"]["same_name"] == {"blocks": 1, "records": n}


def test_a_second_match_method_plugs_into_the_match_phase():
    from ci_pipeline.unify.engine import PAIR_COLUMNS, rule_matches

    def nothing_matches(cfg, prepared, how=None):
        return rule_matches(cfg, prepared).iloc[0:0]

    def only_loyalty_to_crm(cfg, prepared, how=None):
        """A method of its own: links m1 to c1 by key alone, with a score the rules never give."""
        records = prepared.records
        left = int(np.flatnonzero(records["key"].to_numpy() == "c1")[0])
        right = int(np.flatnonzero(records["key"].to_numpy() == "m1")[0])
        return pd.DataFrame(
            {
                "left": [left],
                "right": [right],
                "rule": [0],
                "scores": ['{"probability": 0.97}'],
                "strength": [0.97],
                "accepted": [True],
                "stage": ["match"],
                "rule_name": ["probabilistic"],
            }
        )[PAIR_COLUMNS]

    alone = unify(config(), frames(), KEYS, match_method=nothing_matches)
    # Without match pairs only the dedup within crm joins records: 9 records, one duplicate pair.
    assert alone.stats["customers"] == 8
    assert customer_of(alone, "crm", "contacts", "c2") == customer_of(alone, "crm", "contacts", "c3")

    other = unify(config(), frames(), KEYS, match_method=only_loyalty_to_crm)
    assert other.stats["customers"] == 7
    assert customer_of(other, "crm", "contacts", "c1") == customer_of(other, "loyalty", "members", "m1")
    assert customer_of(other, "crm", "contacts", "c1") != customer_of(other, "shop", "customers", "s1")
    pair = other.match_pairs[other.match_pairs.Rule == "probabilistic"]
    assert pair[["LeftKey", "RightKey", "Accepted", "Linked"]].values.tolist() == [["c1", "m1", True, True]]
    assert json.loads(pair.Scores.iloc[0]) == {"probability": 0.97}


def test_match_pairs_are_ordered_by_the_text_of_both_records_stage_and_rule():
    from ci_pipeline.unify.engine import _match_pairs

    records = pd.DataFrame(
        {"source": ["shop", "crm", "crm", "b"], "table": ["t", "Z", "a", "t"], "key": ["k2", "k10", "k1", "é"]}
    ).astype("string")
    rng = np.random.default_rng(3)
    pairs = pd.DataFrame(
        {
            "left": rng.integers(0, 4, 60),
            "right": rng.integers(0, 4, 60),
            "stage": rng.choice(["match", "dedup", "attach"], 60),
            "rule_name": pd.Series(rng.choice(["r1", "R2", "é", None], 60), dtype="string"),
            "scores": [f"{{{i}}}" for i in range(60)],
            "accepted": True,
            "linked": False,
            "note": "",
        }
    )
    got = _match_pairs(pairs, records)
    sides = ["Source", "Table", "Key"]
    texts = pd.DataFrame(
        {
            **{f"Left{s}": records[s.lower()].to_numpy()[pairs["left"]] for s in sides},
            **{f"Right{s}": records[s.lower()].to_numpy()[pairs["right"]] for s in sides},
            "Stage": pairs["stage"],
            "Rule": pairs["rule_name"],
            "Scores": pairs["scores"],
        }
    ).astype("string")
    # The order of a stable sort of the texts themselves (missing rules last), ties kept in input order.
    expected = texts.sort_values(list(texts.columns[:-1]), kind="stable", ignore_index=True)
    pd.testing.assert_frame_equal(got[list(texts.columns)], expected)


def test_densities_count_each_linked_pair_of_a_customer_once():
    labels = np.array([0, 0, 0, 3, 3, 5])
    # (1, 0) repeats (0, 1); (2, 3) joins two customers (a link the guard skipped) and counts for neither.
    frame = densities(labels, np.array([0, 1, 1, 3, 2]), np.array([1, 0, 2, 4, 3]))
    assert frame.to_dict("list") == {
        "cluster": [0, 3],
        "size": [3, 2],
        "links": [2, 1],
        "density": [2 / 3, 1.0],
    }


def chain_of_five() -> dict:
    """Five crm records each linked to the next only, by the e-mail address and the phone in turn."""
    f = frames()
    f[("crm", "contacts")] = pd.DataFrame(
        {
            "contact_id": [f"k{i}" for i in range(5)],
            "first_name": ["Kim"] * 5,
            "last_name": ["Chain"] * 5,
            "email": ["k1@x.com", "k1@x.com", "k2@x.com", "k2@x.com", "k3@x.com"],
            "phone": ["555-010-0001", "555-010-0002", "555-010-0002", "555-010-0003", "555-010-0003"],
            "street": [None] * 5,
            "city": [None] * 5,
            "modified_at": [None] * 5,
        }
    ).astype("string")
    return f


def test_a_customer_held_by_a_chain_of_single_links_is_reported_as_weakly_held():
    raw = config().model_dump()
    raw["tables"][0]["dedup"]["rules"].append({"name": "same_phone", "conditions": [{"field": "phone"}]})
    r = unify(type(config()).model_validate(raw), chain_of_five(), KEYS)
    chained = customer_of(r, "crm", "contacts", "k0")
    assert all(customer_of(r, "crm", "contacts", f"k{i}") == chained for i in range(5))
    density = r.stats["cluster_density"]
    # 4 links of the 10 pairs of five records: below half, so weakly held.
    assert density == {
        "customers_of_3_or_more": 1,
        "weakly_held": 1,
        "weakest": [{"customer_id": chained, "records": 5, "links": 4, "density": 0.4}],
    }
    info = explain_record("crm", "contacts", "k2", r.alternate_key, r.match_pairs, r.customer_profile)
    assert info["density"] == {"links": 4, "possible": 10, "density": 0.4}
    assert "density: 4 of 10 record pairs linked (weakly held: a chain of single links" in render_record(info)
    # Every link of a chain alone holds it together: the most even splits first, where a wrong link costs most.
    assert [b["parts"] for b in info["bridges"]] == [[3, 2], [3, 2], [4, 1], [4, 1]]
    assert {frozenset((b["left"], b["right"])) for b in info["bridges"][:2]} == {
        frozenset(("crm|contacts|k1", "crm|contacts|k2")),
        frozenset(("crm|contacts|k2", "crm|contacts|k3")),
    }
    assert "held by single links: 4 link(s) each alone join two parts of this customer" in render_record(info)
    # Two records are one link; the text says nothing of density below three records, nor for one record.
    pair = explain_record("shop", "customers", "s1", r.alternate_key, r.match_pairs, r.customer_profile)
    assert pair["density"] == {"links": 1, "possible": 1, "density": 1.0} and "density:" not in render_record(pair)
    alone = explain_record("shop", "customers", "s2", r.alternate_key, r.match_pairs, r.customer_profile)
    assert alone["density"] is None and "density:" not in render_record(alone)


def test_a_birth_date_that_is_no_calendar_date_never_wins_over_one_that_is():
    """The best record of a customer (most filled) holds a typo'd date: the profile takes the other record's
    date; a customer whose only date is a typo keeps its text, and a date before 1677 is a date like any other."""
    people = pd.DataFrame(
        {
            "id": ["a1", "a2", "b1", "c1", "c2"],
            "email": ["a@x.example", "a@x.example", "b@x.example", "c@x.example", "c@x.example"],
            "birth": ["1857-88-14", "1857-08-14", "1845-12-50", "1634-08-01", None],
            "city": ["Oslo", None, "Bergen", None, "Molde"],
        }
    ).astype("string")
    raw = {
        "tables": [
            {
                "source": "crm",
                "table": "people",
                "columns": {"email": "email", "birth": "birth_date", "city": "city"},
                "dedup": {"rules": [{"name": "same_email", "conditions": [{"field": "email"}]}]},
            }
        ],
    }
    r = unify(type(config()).model_validate(raw), {("crm", "people"): people}, {("crm", "people"): "id"})
    profile = r.customer_profile.set_index("crm_people_id")
    # The profile types the dates; the typo is no date, so it is kept as written beside it.
    assert profile.loc["a1", "BirthDate"] == dt.date(1857, 8, 14)
    assert pd.isna(profile.loc["b1", "BirthDate"]) and profile.loc["b1", "BirthDateText"] == "1845-12-50"
    assert profile["BirthDate"].dropna().tolist().count(dt.date(1634, 8, 1)) == 1
