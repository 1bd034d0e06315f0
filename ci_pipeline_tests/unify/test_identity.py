"""CustomerIds stay stable across runs: shuffled input, a new record, a merge, a split, a removal."""

from __future__ import annotations

import uuid

import pandas as pd

from ci_pipeline.outputs import NAMESPACE
from ci_pipeline.unify import assign_ids, unify
from ci_pipeline_tests.unify.helpers import KEYS, config, frames


def new_customer_id(members: list[str], taken: set[str] | frozenset = frozenset()) -> str:
    """The id the rules of ``ci_pipeline.unify.identity`` give a new customer of these members, made here with the
    standard uuid5 apart from the code under test: the seed ``customer|`` and the sorted identifiers, then ``#1``,
    ``#2``, ... appended while the id is taken."""
    seed = "customer|" + "\n".join(sorted(members))
    found, n = uuid.uuid5(NAMESPACE, seed).hex, 0
    while found in taken:
        n += 1
        found = uuid.uuid5(NAMESPACE, f"{seed}#{n}").hex
    return found


def members(*clusters):
    rows = []
    for label, cluster in enumerate(clusters):
        for ident in cluster:
            source, table, key = ident.split("|")
            rows.append((source, table, key, label))
    return pd.DataFrame(rows, columns=["source", "table", "key", "label"])


def ids_by_record(result):
    m = result.identity_map
    return dict(zip(m.DataSourceName + "|" + m.EntityName + "|" + m.AlternateValue, m.CustomerId, strict=True))


def test_new_id_depends_only_on_members():
    a = assign_ids(members(["crm|contacts|1", "shop|customers|9"]), None, None).ids.iloc[0]
    assert a == assign_ids(members(["shop|customers|9", "crm|contacts|1"]), None, None).ids.iloc[0]
    assert a == new_customer_id(["crm|contacts|1", "shop|customers|9"])
    assert len(a) == 32 and int(a, 16) >= 0
    # Issued before to these very records (the change log says so; the identity map is lost): the same id again.
    issued = assign_ids(members(["crm|contacts|1", "shop|customers|9"]), None, None).id_change
    assert assign_ids(members(["shop|customers|9", "crm|contacts|1"]), None, issued).ids.iloc[0] == a


def test_same_input_in_any_order_changes_no_id():
    first = unify(config(), frames(), KEYS)
    shuffled = {k: v.sample(frac=1, random_state=3).reset_index(drop=True) for k, v in frames().items()}
    again = unify(config(), shuffled, KEYS, first.identity.identity_map, first.identity.id_change)
    assert ids_by_record(again.identity) == ids_by_record(first.identity)
    assert len(again.identity.id_change) == len(first.identity.id_change)  # nothing new logged
    assert again.identity.run == 2
    cold = unify(config(), shuffled, KEYS)  # even without history, ids come from the members only
    assert ids_by_record(cold.identity) == ids_by_record(first.identity)


def test_new_record_keeps_existing_ids():
    first = assign_ids(members(["crm|c|1", "shop|s|1"]), None, None, "r1")
    second = assign_ids(
        members(["crm|c|1", "shop|s|1", "loy|m|1"], ["crm|c|2"]), first.identity_map, first.id_change, "r2"
    )
    old = first.ids.iloc[0]
    assert second.ids.iloc[0] == old
    log = second.id_change[second.id_change.Run == 2]
    assert log.Reason.tolist() == ["new"] and log.NewCustomerId.iloc[0] == second.ids.iloc[1]


def test_merge_keeps_the_oldest_surviving_id():
    first = assign_ids(members(["crm|c|1"]), None, None, "r1")
    second = assign_ids(members(["crm|c|1"], ["shop|s|1"]), first.identity_map, first.id_change, "r2")
    oldest, younger = first.ids.iloc[0], second.ids.iloc[1]
    third = assign_ids(members(["crm|c|1", "shop|s|1"]), second.identity_map, second.id_change, "r3")
    assert third.ids.tolist() == [oldest]
    log = third.id_change[third.id_change.Run == 3]
    assert log[["OldCustomerId", "NewCustomerId", "Reason"]].values.tolist() == [[younger, oldest, "merged"]]


def test_merge_keeps_oldest_even_when_younger_id_sorts_first():
    # whatever the hex order, the id issued in the earliest run survives
    first = assign_ids(members(["b|b|b"]), None, None)
    second = assign_ids(members(["b|b|b"], ["a|a|a"]), first.identity_map, first.id_change)
    third = assign_ids(members(["a|a|a", "b|b|b"]), second.identity_map, second.id_change)
    assert third.ids.tolist() == [first.ids.iloc[0]]


def test_split_biggest_part_keeps_the_id():
    first = assign_ids(members(["crm|c|1", "crm|c|2", "shop|s|1"]), None, None)
    old = first.ids.iloc[0]
    second = assign_ids(members(["crm|c|1"], ["crm|c|2", "shop|s|1"]), first.identity_map, first.id_change, "r2")
    assert second.ids.iloc[1] == old
    assert second.ids.iloc[0] != old
    log = second.id_change[second.id_change.Run == 2]
    assert log[["OldCustomerId", "NewCustomerId", "Reason"]].values.tolist() == [[old, second.ids.iloc[0], "split"]]


def test_a_record_moved_between_two_customers_that_keep_their_ids_is_logged_as_moved():
    """crm|c|3 leaves A (which keeps its id with two records) for B (which keeps its own): no id is merged or split,
    yet that record's CustomerId changed, and the log says so."""
    first = assign_ids(members(["crm|c|1", "crm|c|2", "crm|c|3"], ["shop|s|1", "shop|s|2"]), None, None, "r1")
    a, b = first.ids.tolist()
    second = assign_ids(
        members(["crm|c|1", "crm|c|2"], ["shop|s|1", "shop|s|2", "crm|c|3"]), first.identity_map, first.id_change, "r2"
    )
    assert second.ids.tolist() == [a, b]
    log = second.id_change[second.id_change.Run == 2]
    assert log[["OldCustomerId", "NewCustomerId", "Reason", "Records"]].values.tolist() == [[a, b, "moved", 1]]
    # Moving back is logged again; an unchanged run logs nothing.
    third = assign_ids(
        members(["crm|c|1", "crm|c|2"], ["shop|s|1", "shop|s|2", "crm|c|3"]), second.identity_map, second.id_change
    )
    assert len(third.id_change) == len(second.id_change)


def test_removed_customer_is_logged_and_its_id_comes_back_with_its_records():
    first = assign_ids(members(["crm|c|1"], ["crm|c|2"]), None, None)
    second = assign_ids(members(["crm|c|1"]), first.identity_map, first.id_change)
    log = second.id_change[second.id_change.Run == 2]
    assert log.Reason.tolist() == ["removed"] and log.OldCustomerId.iloc[0] == first.ids.iloc[1]
    # The same record comes back: the id issued to exactly it is its again.
    third = assign_ids(members(["crm|c|1"], ["crm|c|2"]), second.identity_map, second.id_change)
    assert third.ids.iloc[1] == first.ids.iloc[1]


def test_a_merge_undone_gives_the_parted_customer_its_id_back():
    # A wrong link joins two customers for a night (or the match method is switched and back): the younger id is
    # retired, and when the link goes the parted record gets it back, not a new one.
    first = assign_ids(members(["crm|c|1", "crm|c|2"]), None, None, "r1")
    second = assign_ids(members(["crm|c|1", "crm|c|2"], ["shop|s|1"]), first.identity_map, first.id_change, "r2")
    a, b = second.ids.tolist()
    merged = assign_ids(members(["crm|c|1", "crm|c|2", "shop|s|1"]), second.identity_map, second.id_change, "r3")
    assert merged.ids.tolist() == [a]
    parted = assign_ids(members(["crm|c|1", "crm|c|2"], ["shop|s|1"]), merged.identity_map, merged.id_change, "r4")
    assert parted.ids.tolist() == [a, b]
    log = parted.id_change[parted.id_change.Run == 4]
    assert log[["OldCustomerId", "NewCustomerId", "Reason", "Records"]].values.tolist() == [[a, b, "split", 1]]


def test_a_merge_undone_gives_both_customers_their_ids_back_when_the_older_id_was_the_smaller_ones():
    # The older id (the shop record's) survived the merge although the contacts are most of its records; when the
    # link goes, each customer gets back the id it had before the merge: the shop record's id does not go over to
    # the contacts (that id would name another person) and the contacts' retired id is issued to them again.
    first = assign_ids(members(["shop|s|1"]), None, None, "r1")
    second = assign_ids(members(["shop|s|1"], ["crm|c|1", "crm|c|2", "crm|c|3"]), first.identity_map, None, "r2")
    b, a = second.ids.tolist()
    merged = assign_ids(
        members(["shop|s|1", "crm|c|1", "crm|c|2", "crm|c|3"]), second.identity_map, second.id_change, "r3"
    )
    assert merged.ids.tolist() == [b]
    parted = assign_ids(
        members(["shop|s|1"], ["crm|c|1", "crm|c|2", "crm|c|3"]), merged.identity_map, merged.id_change, "r4"
    )
    assert parted.ids.tolist() == [b, a]
    log = parted.id_change[parted.id_change.Run == 4]
    assert log[["OldCustomerId", "NewCustomerId", "Reason", "Records"]].values.tolist() == [[b, a, "split", 3]]
    # Without a change log that shows the contacts' id was issued, the records decide: most go with the id.
    guessed = assign_ids(members(["shop|s|1"], ["crm|c|1", "crm|c|2", "crm|c|3"]), merged.identity_map, None, "r4")
    assert guessed.ids.tolist()[1] == b and guessed.ids.tolist()[0] not in (a, b)


def test_previous_customer_id_on_profile():
    f = frames()
    first = unify(config(), f, KEYS)
    # No history yet: the column is text all the same, so the stored table's type does not change once it has one.
    assert first.customer_profile["PreviousCustomerId"].isna().all()
    assert first.customer_profile["PreviousCustomerId"].dtype == "string"
    f2 = frames()
    f2[("crm", "contacts")].loc[0, "phone"] = None  # c1-m1 link now only through s1, still one customer
    f2[("shop", "customers")].loc[0, "email"] = None
    f2[("shop", "customers")].loc[0, "phone"] = None  # s1 falls out: a split
    second = unify(config(), f2, KEYS, first.identity.identity_map, first.identity.id_change, "r2")
    prof = second.customer_profile.set_index("shop_customers_customer_id")
    old = first.customer_profile.set_index("shop_customers_customer_id").loc["s1", "CustomerId"]
    assert prof.loc["s1", "PreviousCustomerId"] == old


def test_fast_uuid5_equals_the_standard_one():
    from ci_pipeline.unify.identity import uuid5_hex, uuid5_hexes

    names = ["customer|crm|contacts|1", "é|ü", ""]
    for name in names:
        assert uuid5_hex(name) == uuid.uuid5(NAMESPACE, name).hex
    assert uuid5_hexes(names).to_pylist() == [uuid.uuid5(NAMESPACE, n).hex for n in names]


def test_a_new_cluster_whose_id_a_grown_customer_still_holds_gets_the_next_seed():
    first = assign_ids(members(["crm|c|1", "crm|c|2"]), None, None, "r1")
    held = first.ids.iloc[0]
    grown = assign_ids(members([f"crm|c|{i}" for i in range(1, 6)]), first.identity_map, first.id_change, "r2")
    assert grown.ids.tolist() == [held]
    # The id's first records part from it, the bigger part keeps it: theirs, issued to them, is held, so the next.
    parted = assign_ids(
        members(["crm|c|1", "crm|c|2"], ["crm|c|3", "crm|c|4", "crm|c|5"]), grown.identity_map, grown.id_change, "r3"
    )
    assert parted.ids.iloc[1] == held
    assert parted.ids.iloc[0] == new_customer_id(["crm|c|1", "crm|c|2"], {held}) != held


def test_empty_tables_then_records_then_none_again():
    empty = {k: v.iloc[:0] for k, v in frames().items()}
    first = unify(config(), empty, KEYS)
    assert first.alternate_key.empty and first.customer_profile.empty and first.identity.id_change.empty
    second = unify(config(), frames(), KEYS, first.identity.identity_map, first.identity.id_change)
    third = unify(config(), empty, KEYS, second.identity.identity_map, second.identity.id_change)
    log = third.identity.id_change
    assert log[log.Run == third.identity.run].Reason.tolist() == ["removed"] * second.stats["customers"]
    assert set(log[log.Reason == "removed"].OldCustomerId) == set(second.customer_profile.CustomerId)


def test_a_merged_row_counts_the_records_that_moved_and_each_changed_record_is_logged_once():
    # A (3 records) splits three ways: one record joins B (older, keeps its id), the other two start customers of
    # their own. The merged row counts the one record that went to B; the two others are split rows.
    first = assign_ids(members(["shop|s|1"]), None, None, "r1")
    second = assign_ids(members(["shop|s|1"], ["crm|c|1", "crm|c|2", "crm|c|3"]), first.identity_map, None, "r2")
    b, a = second.ids.tolist()
    third = assign_ids(
        members(["shop|s|1", "crm|c|1"], ["crm|c|2"], ["crm|c|3"]), second.identity_map, second.id_change, "r3"
    )
    log = third.id_change[third.id_change.Run == 3]
    rows = sorted(map(tuple, log[["OldCustomerId", "Reason", "Records"]].values.tolist()))
    assert rows == [(a, "merged", 1), (a, "split", 1), (a, "split", 1)]
    assert log[log.Reason == "merged"].NewCustomerId.tolist() == [b]
    changed = sum(ids_by_record(second)[r] != ids_by_record(third)[r] for r in ("crm|c|1", "crm|c|2", "crm|c|3"))
    assert int(log.Records.sum()) == changed == 3
