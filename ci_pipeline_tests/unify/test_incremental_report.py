"""How unification ran, in words for the log and the run's summary."""

from __future__ import annotations

from ci_pipeline.unify.incremental import report_text


def test_an_incremental_plan_says_what_was_new_and_what_was_reused():
    report = {
        "incremental": True,
        "reason": "",
        "records": 50578,
        "records_new": 1060,
        "records_changed": 0,
        "records_deleted": 0,
        "records_unchanged": 49518,
        "pairs_reused": 18846,
        "model_pairs_reused": 232523,
        "customers_reused": 11172,
    }
    assert report_text(report) == (
        "incremental: 50,578 records (1,060 new, 0 changed, 0 deleted, 49,518 unchanged); "
        "reused 18,846 dedup and match pairs, 232,523 model candidate pairs, 11,172 customers"
    )


def test_a_full_unification_says_why():
    assert report_text({"incremental": False, "reason": "the match rules changed"}) == "full: the match rules changed"
    assert report_text({"incremental": False, "reason": ""}) == "full"
