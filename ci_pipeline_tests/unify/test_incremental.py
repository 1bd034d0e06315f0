"""Incremental unification equals a full unify of the same data, after every kind of change; and falls back to a
full unify, saying why, when what the pairs depend on changed."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pandas as pd
import pytest
from pandas.testing import assert_frame_equal

import ci_pipeline
from ci_pipeline.lake import Lake
from ci_pipeline.unify import unify
from ci_pipeline.unify.engine import rule_matches
from ci_pipeline.unify.incremental import META_FILE, STATE_DIR, read_state, record_hashes, write_state
from ci_pipeline.unify.probabilistic_method import ProbabilisticMatches
from ci_pipeline_tests.unify.helpers import KEYS, config, frames

CRM, SHOP, LOYALTY = ("crm", "contacts"), ("shop", "customers"), ("loyalty", "members")


def assert_same(full, inc) -> None:
    """Every output of the two runs is equal, and so is the state each keeps for the next run."""
    for name in ("records", "customer_profile", "alternate_key", "match_pairs"):
        assert_frame_equal(getattr(full, name), getattr(inc, name), obj=name)
    assert_frame_equal(full.identity.identity_map, inc.identity.identity_map, obj="identity_map")
    assert_frame_equal(full.identity.id_change, inc.identity.id_change, obj="id_change")
    assert full.dedup.keys() == inc.dedup.keys()
    for table in full.dedup:
        assert_frame_equal(full.dedup[table], inc.dedup[table], obj=f"dedup {table}")
    assert full.found_stats() == inc.found_stats()
    assert_frame_equal(full.state.records, inc.state.records, obj="state records")
    assert_frame_equal(full.state.pairs, inc.state.pairs, obj="state pairs")
    assert_frame_equal(full.state.profiles, inc.state.profiles, obj="state profiles")
    if full.state.model_pairs is not None or inc.state.model_pairs is not None:
        assert_frame_equal(full.state.model_pairs, inc.state.model_pairs, obj="state model pairs")
    assert full.state.meta == inc.state.meta


def both(cfg, tables, last, lake=None, model=None, **kwargs):
    """A full unify and an incremental one of ``tables``, both carrying the ids of ``last``; the state goes
    through the lake when one is given (as the asset stores it). ``model``: match with it (a method per run)."""
    state = last.state
    if lake is not None:
        write_state(lake, last.state)
        state, why = read_state(lake)
        assert why == ""
    ids = (last.identity.identity_map, last.identity.id_change, "run")
    if model is not None:
        kwargs["match_method"] = ProbabilisticMatches(model)
    full = unify(cfg, tables, KEYS, *ids, **kwargs)
    if model is not None:
        kwargs["match_method"] = ProbabilisticMatches(model)
    inc = unify(cfg, tables, KEYS, *ids, **kwargs, state=state)
    assert_same(full, inc)
    return full, inc


def add(tables, where, **row):
    tables[where] = pd.concat([tables[where], pd.DataFrame([row]).astype("string")], ignore_index=True)


def test_a_sequence_of_increments_unifies_incrementally_as_a_full_unify_does(tmp_path):
    cfg = config()
    lake = Lake.local(tmp_path)
    tables = frames()
    last = unify(cfg, tables, KEYS, run_id="run")
    assert last.stats["incremental"]["reason"] == "no state of an earlier run"

    # New records: one joins an existing customer (Bob's e-mail), one is a new person.
    add(tables, SHOP, customer_id="s4", full_name="Robert Smith", email="bob.smith@example.com")
    add(tables, CRM, contact_id="c5", first_name="Vera", last_name="Quill", email="vera@example.org")
    full, last = both(cfg, tables, last, lake)
    assert last.stats["incremental"] | {"reason": ""} == last.stats["incremental"]
    assert last.stats["incremental"]["incremental"]
    assert last.stats["incremental"]["records_new"] == 2
    assert last.stats["incremental"]["pairs_reused"] > 0
    # Bob's customer gained a record and is merged again; the customers no new record touched keep their profiles.
    assert 0 < last.stats["incremental"]["customers_reused"] < len(last.customer_profile)
    bob = last.records.set_index("key")["CustomerId"]
    assert bob["s4"] == bob["c1"]

    # Changed attributes: Bob's crm e-mail breaks his link to the shop; Zed gets Ann's e-mail and name (a new link).
    tables[CRM].loc[tables[CRM]["contact_id"] == "c1", "email"] = "robert@elsewhere.net"
    tables[SHOP].loc[tables[SHOP]["customer_id"] == "s3", ["full_name", "email"]] = ["Ann Lee", "ann@example.com"]
    full, last = both(cfg, tables, last, lake)
    assert last.stats["incremental"]["records_changed"] == 2
    ids = last.records.set_index("key")["CustomerId"]
    assert ids["s3"] == ids["c2"] and ids["c1"] != ids["s4"]

    # Deletions: the only record of Pat (m2), and one of Ann's two crm records (c3).
    tables[LOYALTY] = tables[LOYALTY][tables[LOYALTY]["member_id"] != "m2"]
    tables[CRM] = tables[CRM][tables[CRM]["contact_id"] != "c3"]
    full, last = both(cfg, tables, last, lake)
    assert last.stats["incremental"]["records_deleted"] == 2
    assert "removed" in set(last.identity.id_change["Reason"])

    # A record moves to another key (the shop renumbers Jose): a deletion and a new record of the same content.
    tables[SHOP].loc[tables[SHOP]["customer_id"] == "s2", "customer_id"] = "s9"
    full, last = both(cfg, tables, last)
    assert last.stats["incremental"]["records_new"] == 1 and last.stats["incremental"]["records_deleted"] == 1

    # Nothing changed: every pair is reused, none scored.
    full, again = both(cfg, tables, last)
    assert again.stats["incremental"]["records_unchanged"] == len(again.records)
    assert again.stats["incremental"]["pairs_reused"] == len(again.state.pairs)
    assert again.stats["incremental"]["customers_reused"] == len(again.customer_profile)


def test_the_stored_pairs_keep_their_texts_as_dictionaries_and_a_state_with_plain_texts_is_reused_alike(tmp_path):
    cfg = config()
    tables = frames()
    last = unify(cfg, tables, KEYS, run_id="run")
    lake = Lake.local(tmp_path)
    write_state(lake, last.state)
    state, _ = read_state(lake)
    assert all(isinstance(state.pairs[c].dtype, pd.CategoricalDtype) for c in ("scores", "stage", "rule_name"))
    # A state kept before the texts were stored as dictionaries holds them as plain text: reused the same way.
    state.pairs = state.pairs.astype({"scores": "string", "stage": "string", "rule_name": "string"})
    add(tables, SHOP, customer_id="s4", full_name="Robert Smith", email="bob.smith@example.com")
    ids = (last.identity.identity_map, last.identity.id_change, "run")
    inc = unify(cfg, tables, KEYS, *ids, state=state)
    assert inc.stats["incremental"]["pairs_reused"] > 0
    assert_same(unify(cfg, tables, KEYS, *ids), inc)


def test_a_dedup_winner_changes_when_a_newer_duplicate_arrives():
    cfg = config()
    tables = frames()
    last = unify(cfg, tables, KEYS, run_id="run")
    add(tables, CRM, contact_id="c0", first_name="Ann", last_name="Lee", email="ann@example.com", modified_at="2027")
    full, inc = both(cfg, tables, last)
    assert inc.stats["incremental"]["incremental"]
    crm = inc.dedup[CRM].set_index("Key")
    assert crm.loc["c2", "GroupSize"] == 3


def test_a_value_grown_too_frequent_rescores_the_unchanged_records_holding_it():
    cfg = config(guard={"max_value_frequency": 2})
    tables = frames()
    last = unify(cfg, tables, KEYS, run_id="run")
    # ann@example.com (c2, c3) now has a third holder: it is masked as too frequent, and c2 and c3 no longer pair.
    add(tables, SHOP, customer_id="s4", full_name="Ann Lee", email="ann@example.com")
    full, inc = both(cfg, tables, last)
    assert inc.stats["incremental"]["incremental"]
    assert inc.stats["incremental"]["records_touched_by_others"] == 2
    assert "ann@example.com" in str(inc.stats["frequent_values_ignored"])
    # ... and back under the cap when the newcomer goes.
    tables[SHOP] = tables[SHOP][tables[SHOP]["customer_id"] != "s4"]
    full, again = both(cfg, tables, inc)
    assert again.stats["incremental"]["records_touched_by_others"] == 2


def test_a_phone_newly_shared_by_two_first_names_rescores_its_holders():
    cfg = config(
        match={
            "rules": [
                {
                    "name": "phone_last_name",
                    "conditions": [
                        {"field": "phone", "normalize": ["phone", "personal_phone"]},
                        {"field": "last_name", "precision": "medium"},
                    ],
                }
            ]
        }
    )
    tables = frames()
    last = unify(cfg, tables, KEYS, run_id="run")
    assert last.records.set_index("key")["CustomerId"]["m1"] == last.records.set_index("key")["CustomerId"]["c1"]
    # Another first name at Bob's number: a household line, which no longer links Bob's crm and loyalty records.
    add(tables, LOYALTY, member_id="m3", first_name="Sue", last_name="Smith", phone="555 010 1234")
    full, inc = both(cfg, tables, last)
    assert inc.stats["incremental"]["incremental"] and inc.stats["incremental"]["records_touched_by_others"] >= 2
    ids = inc.records.set_index("key")["CustomerId"]
    assert ids["m1"] != ids["c1"]


def test_a_block_grown_over_the_size_cap_rescores_its_records():
    cfg = config(guard={"max_block_size": 3})
    tables = frames()
    last = unify(cfg, tables, KEYS, run_id="run")
    assert not last.state.meta["oversized_blocks"]
    add(tables, LOYALTY, member_id="m3", first_name="Rob", last_name="Smith", phone="555 010 1234")
    full, inc = both(cfg, tables, last)
    assert inc.stats["incremental"]["incremental"]
    assert inc.state.meta["oversized_blocks"]
    tables[LOYALTY] = tables[LOYALTY][tables[LOYALTY]["member_id"] != "m3"]
    full, again = both(cfg, tables, inc)
    assert not again.state.meta["oversized_blocks"]


def test_a_changed_override_file_is_applied_incrementally(tmp_path):
    pairs = tmp_path / "never.csv"
    header = "left_source,left_table,left_key,right_source,right_table,right_key\n"
    pairs.write_text(header)
    cfg = config(match={**config().match.model_dump(mode="json"), "never_match_file": "never.csv"})
    tables = frames()
    last = unify(cfg, tables, KEYS, run_id="run", base_dir=tmp_path)
    pairs.write_text(header + "crm,contacts,c1,shop,customers,s1\n")
    full, inc = both(cfg, tables, last, base_dir=tmp_path)
    assert inc.stats["incremental"]["incremental"]
    assert "never_match" in set(inc.match_pairs["Note"])


def fall_back(cfg, tables, last, reason, **kwargs):
    """An incremental attempt that must be a full unify, for ``reason``, with the full unify's result."""
    ids = (last.identity.identity_map, last.identity.id_change, "run")
    full = unify(cfg, tables, KEYS, *ids, **kwargs)
    inc = unify(cfg, tables, KEYS, *ids, **kwargs, state=last.state)
    assert not inc.stats["incremental"]["incremental"]
    assert reason in inc.stats["incremental"]["reason"]
    assert_same(full, inc)


def test_a_changed_configuration_is_a_full_unify():
    tables = frames()
    last = unify(config(), tables, KEYS, run_id="run")
    rules = config().match.model_dump(mode="json")
    rules["rules"][1]["conditions"][1]["precision"] = "high"
    fall_back(config(match=rules), tables, last, "configuration")


def test_a_changed_package_version_is_a_full_unify(monkeypatch):
    tables = frames()
    last = unify(config(), tables, KEYS, run_id="run")
    monkeypatch.setattr(ci_pipeline, "__version__", "99.0")
    fall_back(config(), tables, last, "package version changed")


def test_a_changed_alias_file_is_a_full_unify(tmp_path):
    aliases = tmp_path / "towns.csv"
    aliases.write_text("alias,canonical\nspringfeld,springfield\n")
    cfg = config(normalize={"aliases": {"towns": "towns.csv"}})
    tables = frames()
    last = unify(cfg, tables, KEYS, run_id="run", base_dir=tmp_path)
    aliases.write_text("alias,canonical\nshelbyvile,shelbyville\n")
    fall_back(cfg, tables, last, "alias map", base_dir=tmp_path)


def test_another_match_method_is_a_full_unify():
    tables = frames()
    last = unify(config(), tables, KEYS, run_id="run")

    def model(cfg, prepared, how=None):  # any method but the rules scores its pairs over all records
        return rule_matches(cfg, prepared)

    fall_back(config(), tables, last, "model", match_method=model)


def test_a_missing_damaged_or_half_written_state_is_a_full_unify(tmp_path):
    lake = Lake.local(tmp_path)
    state, why = read_state(lake)
    assert state is None and "no state of an earlier run" in why
    last = unify(config(), frames(), KEYS, run_id="run")
    write_state(lake, last.state)
    pairs = json.loads((tmp_path / META_FILE).read_text())["_files"]["pairs"]
    (tmp_path / STATE_DIR / pairs).write_bytes(b"not parquet")
    state, why = read_state(lake)
    assert state is None and "unreadable" in why
    write_state(lake, last.state)
    meta = json.loads((tmp_path / META_FILE).read_text())
    (tmp_path / META_FILE).write_text(json.dumps(meta | {"pairs": meta["pairs"] + 1}))
    state, why = read_state(lake)
    assert state is None and "incomplete" in why
    result = unify(config(), frames(), KEYS, run_id="run", state=state, no_state=why)
    assert result.stats["incremental"] == {"incremental": False, "reason": why, "records": len(result.records)}


def test_a_state_of_another_format_is_not_reused():
    tables = frames()
    last = unify(config(), tables, KEYS, run_id="run")
    last.state.meta["format"] = 0
    fall_back(config(), tables, last, "another format")


FIRST, LAST = ["Ann", "Anne", "Bob", "Rob", "Sue"], ["Lee", "Smith", "Smyth"]
MAILS, PHONES = ["a@x.com", "b@x.com", "c@y.org", None], ["555 0100", "555 0101", "555 0102", None]


def random_rows(rng, table: str, keys: list[str]) -> pd.DataFrame:
    """Records drawn from small vocabularies: many shared values, so masks, blocks and guards come into play."""

    def pick(values):
        return [values[i] for i in rng.integers(0, len(values), len(keys))]

    first, last = pick(FIRST), pick(LAST)
    if table == "shop":
        rows = {"customer_id": keys, "full_name": [f"{f} {s}" for f, s in zip(first, last, strict=True)]}
        rows |= {"email": pick(MAILS), "phone": pick(PHONES), "address": pick(["1 Main St", None]), "town": None}
    elif table == "crm":
        rows = {"contact_id": keys, "first_name": first, "last_name": last, "email": pick(MAILS)}
        rows |= {"phone": pick(PHONES), "street": None, "city": None, "modified_at": pick(["2026-01-01", "2026-02-01"])}
    else:
        rows = {"member_id": keys, "first_name": first, "last_name": last, "phone": pick(PHONES), "tier": "gold"}
    return pd.DataFrame(rows).astype("string")


def random_config():
    rules = config().match.model_dump(mode="json")
    rules["rules"][1]["conditions"][0]["normalize"] = ["phone", "personal_phone"]
    rules["attach"] = [{"name": "sole", "tables": ["loyalty.members"], "max_expected_namesakes": 5}]
    return config(match=rules, guard={"max_value_frequency": 4, "max_block_size": 5, "max_cluster_size": 4})


@pytest.mark.parametrize("seed", [1, 2])
def test_random_increments_unify_incrementally_as_a_full_unify_does(seed):
    rng = np.random.default_rng(seed)
    cfg = random_config()
    names = {CRM: "crm", SHOP: "shop", LOYALTY: "loyalty"}
    tables = {t: random_rows(rng, name, [f"{name}{i}" for i in range(12)]) for t, name in names.items()}
    last = unify(cfg, tables, KEYS, run_id="run")
    serial = 100
    for _ in range(3):
        for t, name in names.items():
            frame, key = tables[t], KEYS[t]
            kept = frame[rng.random(len(frame)) > 0.15].copy()  # deletions
            changed = rng.random(len(kept)) < 0.15  # changes: the row drawn afresh under its key
            kept.loc[changed] = random_rows(rng, name, list(kept.loc[changed, key])).set_index(kept.index[changed])
            serial += 4
            fresh = random_rows(rng, name, [f"{name}{serial + i}" for i in range(4)])
            tables[t] = pd.concat([kept, fresh], ignore_index=True)
        full, last = both(cfg, tables, last)
        assert last.stats["incremental"]["incremental"]


def test_record_hashes_follow_each_rows_values_whatever_the_other_rows_and_their_order():
    records = pd.DataFrame(
        {
            "key": pd.array(["a", "b", "c"], dtype="string"),
            "email": pd.array(["x@example.com", None, ""], dtype="string"),
            "rank": [0, 1, 2],
            "birth_date": pd.to_datetime(["1980-01-02", None, "1990-03-04"], utc=True),
        }
    )
    hashes = record_hashes(records)
    assert hashes.dtype == np.int64 and len(set(hashes)) == 3
    # The same row gives the same hash in another frame, in another place; a changed value (a missing e-mail
    # written as empty) gives another.
    again = record_hashes(records.iloc[[2, 0]].reset_index(drop=True))
    assert again.tolist() == [hashes[2], hashes[0]]
    changed = records.copy()
    changed.loc[1, "email"] = ""
    assert record_hashes(changed)[1] != hashes[1] and record_hashes(changed)[0] == hashes[0]
    assert len(record_hashes(records.iloc[:0])) == 0


def test_previous_rows_find_each_records_row_by_its_whole_identity():
    from ci_pipeline.unify.incremental import previous_rows

    def frame(rows):
        return pd.DataFrame(rows, columns=["source", "table", "key"]).astype("string")

    # A "|" in a table name or key must not make two identities meet (a joined text would).
    last = frame([("crm", "contacts", "1"), ("crm", "a|b", "c"), ("shop", "customers", "1"), ("crm", "a", "b|c")])
    now = frame([("shop", "customers", "1"), ("crm", "a", "b|c"), ("crm", "contacts", "2"), ("crm", "a|b", "c")])
    assert previous_rows(now, last).tolist() == [2, 3, -1, 1]
    assert previous_rows(now.iloc[:0], last).tolist() == []
    assert previous_rows(now, last.iloc[:0]).tolist() == [-1, -1, -1, -1]


def test_increments_scored_by_a_match_model_unify_as_a_full_unify_does(tmp_path):
    from ci_pipeline_tests.unify.test_probabilistic_method import config as model_config
    from ci_pipeline_tests.unify.test_probabilistic_method import hand_model

    cfg, model, lake = model_config(), hand_model(), Lake.local(tmp_path)
    tables = frames()
    last = unify(cfg, tables, KEYS, run_id="run", match_method=ProbabilisticMatches(model))
    assert last.state.meta["method"] and len(last.state.model_pairs) == last.state.meta["model_pairs"] > 0

    # A new record sharing Bob's e-mail, and a new person.
    add(tables, SHOP, customer_id="s4", full_name="Robert Smith", email="bob.smith@example.com")
    add(tables, CRM, contact_id="c5", first_name="Vera", last_name="Quill", email="vera@example.org")
    full, last = both(cfg, tables, last, lake, model=model)
    report = last.stats["incremental"]
    assert report["incremental"] and report["records_new"] == 2 and report["model_pairs_reused"] > 0
    assert report["model_pairs_reused"] < len(last.state.model_pairs)
    ids = last.records.set_index("key")["CustomerId"]
    assert ids["s4"] == ids["c1"]

    # A changed e-mail, a deletion, and the crm rows in another order (records are taken in key order).
    tables[CRM].loc[tables[CRM]["contact_id"] == "c1", "email"] = "robert@elsewhere.net"
    tables[LOYALTY] = tables[LOYALTY][tables[LOYALTY]["member_id"] != "m2"]
    tables[CRM] = tables[CRM].iloc[::-1].reset_index(drop=True)
    full, last = both(cfg, tables, last, lake, model=model)
    assert last.stats["incremental"]["incremental"]
    assert last.stats["incremental"]["records_changed"] == 1 and last.stats["incremental"]["records_deleted"] == 1

    # Nothing changed: every candidate pair keeps its levels.
    full, again = both(cfg, tables, last, model=model)
    assert again.stats["incremental"]["model_pairs_reused"] == len(again.state.model_pairs)


def test_a_value_the_model_masks_as_too_frequent_keeps_the_next_runs_pairs_reusable():
    """A first (full) run keeps the model's masks too: the next run, nothing changed, finds them the same and
    reuses every candidate pair instead of scoring them all again."""
    from ci_pipeline_tests.unify.test_probabilistic_method import config as model_config
    from ci_pipeline_tests.unify.test_probabilistic_method import hand_model

    cfg, model = model_config(), hand_model()
    cfg = cfg.model_copy(update={"guard": cfg.guard.model_copy(update={"max_value_frequency": 1})})
    tables = frames()
    first = unify(cfg, tables, KEYS, run_id="r1", match_method=ProbabilisticMatches(model))
    masked = first.stats["match_method"]["frequent_values_ignored"]
    assert masked and first.state.meta["model_masks"] == {name: sorted(v) for name, v in masked.items()}
    again = unify(cfg, tables, KEYS, run_id="r2", match_method=ProbabilisticMatches(model), state=first.state)
    assert again.stats["incremental"]["incremental"]
    assert again.stats["incremental"]["model_pairs_reused"] == len(again.state.model_pairs) > 0


@pytest.mark.parametrize("seed", [3, 4])
def test_random_increments_scored_by_a_match_model_unify_as_a_full_unify_does(seed):
    from ci_pipeline_tests.unify.test_probabilistic_method import config as model_config
    from ci_pipeline_tests.unify.test_probabilistic_method import hand_model

    rng = np.random.default_rng(seed)
    cfg, model = model_config(), hand_model()
    cfg = cfg.model_copy(update={"guard": cfg.guard.model_copy(update={"max_cluster_size": 4})})
    names = {CRM: "crm", SHOP: "shop", LOYALTY: "loyalty"}
    tables = {t: random_rows(rng, name, [f"{name}{i}" for i in range(12)]) for t, name in names.items()}
    last = unify(cfg, tables, KEYS, run_id="run", match_method=ProbabilisticMatches(model))
    serial = 100
    for _ in range(3):
        for t, name in names.items():
            frame, key = tables[t], KEYS[t]
            kept = frame[rng.random(len(frame)) > 0.15].copy()
            changed = rng.random(len(kept)) < 0.15
            kept.loc[changed] = random_rows(rng, name, list(kept.loc[changed, key])).set_index(kept.index[changed])
            serial += 4
            fresh = random_rows(rng, name, [f"{name}{serial + i}" for i in range(4)])
            # The rows in a new order too: a table's records may come in any order.
            tables[t] = pd.concat([kept, fresh], ignore_index=True).sample(frac=1, random_state=serial)
        full, last = both(cfg, tables, last, model=model)
        assert last.stats["incremental"]["incremental"]


def test_another_match_model_or_rules_beside_it_is_a_full_unify():
    from ci_pipeline_tests.unify.test_probabilistic_method import config as model_config
    from ci_pipeline_tests.unify.test_probabilistic_method import hand_model

    tables = frames()
    last = unify(model_config(), tables, KEYS, run_id="run", match_method=ProbabilisticMatches(hand_model()))
    stricter = dataclasses.replace(hand_model(), prior=0.001)
    fall_back(model_config(), tables, last, "stored match model", match_method=ProbabilisticMatches(stricter))
    # A model beside match rules: the rules' pairs are scored over every record.
    hybrid = model_config(rules=config().match.model_dump(mode="json")["rules"])
    before = unify(hybrid, tables, KEYS, run_id="run", match_method=ProbabilisticMatches(hand_model()))
    assert before.state.model_pairs is None
    fall_back(hybrid, tables, before, "match rules beside the model", match_method=ProbabilisticMatches(hand_model()))
