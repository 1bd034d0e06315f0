"""Brand and interest affinity on tiny purchase timelines made in each test."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from ci_pipeline.enrich import EnrichmentFailed, EnrichmentInputs, ProviderContext
from ci_pipeline.enrich.affinity import (
    build_brand,
    build_interest,
    levels,
    profile_customers,
    purchase_pairs,
    scores,
    settings_from,
    share_of_voice,
)

AS_OF = pd.Timestamp("2026-07-01", tz="UTC")


def lines(rows: list[tuple[str, str, float, str]], category: str = "Home") -> pd.DataFrame:
    """Activity facts of order lines: (customer, brand, amount, date)."""
    frame = pd.DataFrame(rows, columns=["CustomerId", "brand", "amount", "date"])
    return pd.DataFrame(
        {
            "ActivityId": [f"l{i}" for i in range(len(frame))],
            "CustomerId": frame["CustomerId"].astype("string"),
            "Activity": "order_lines",
            "ActivityType": "SalesOrderLine",
            "ActivityTimeStamp": pd.to_datetime(frame["date"], utc=True),
            "amount": frame["amount"].astype("float64"),
            "quantity": pd.array([1] * len(frame), dtype="Int64"),
            "brand": frame["brand"].astype("string"),
            "category": pd.Series([category] * len(frame), dtype="string"),
        }
    )


def profile(ids, **columns) -> pd.DataFrame:
    return pd.DataFrame({"CustomerId": pd.array(ids, dtype="string"), **columns})


def run(facts, people, params=None, provider=build_brand):
    built = provider(params or {}, ProviderContext(enrichment="brands", project="demo"))
    return built.enrich(EnrichmentInputs(profiles=people, activities=facts, as_of=AS_OF))


def values_of(result) -> dict[str, dict]:
    return {c: json.loads(v) for c, v in zip(result.values["CustomerId"], result.values["Values"], strict=True)}


def test_a_customer_who_buys_a_brand_most_has_the_highest_affinity_for_it():
    facts = lines(
        [
            ("A", "Voltix", 100, "2026-06-01"),
            ("A", "Voltix", 80, "2026-05-01"),
            ("A", "Lumera", 10, "2026-04-01"),
            ("B", "Lumera", 90, "2026-06-10"),
            ("B", "Lumera", 50, "2026-03-10"),
            ("C", "Voltix", 20, "2026-02-01"),
            ("C", "Lumera", 20, "2026-02-01"),
        ]
    )
    result = run(facts, profile(["A", "B", "C"]))
    values = values_of(result)
    assert values["A"]["Affinity"]["Voltix"]["Score"] > values["C"]["Affinity"]["Voltix"]["Score"]
    assert values["B"]["Affinity"]["Lumera"]["Score"] > values["A"]["Affinity"]["Lumera"]["Score"]
    assert values["A"]["Top"] == "Voltix" and values["B"]["Top"] == "Lumera"
    for customer in values.values():
        assert sum(a["ShareOfVoice"] for a in customer["Affinity"].values()) == 100
        for affinity in customer["Affinity"].values():
            assert 1 <= affinity["Score"] <= 100
            assert affinity["Level"] == levels(np.array([affinity["Score"]]))[0]
    assert set(result.values["EnrichmentType"]) == {"BrandAffinity"}
    # The Values are compact, key-sorted JSON, as the stage writes every provider's.
    text = result.values["Values"].iloc[0]
    assert text == json.dumps(json.loads(text), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    fields = result.fields.set_index("CustomerId")
    assert fields.loc["A", "Affinity.Voltix.Score"] == values["A"]["Affinity"]["Voltix"]["Score"]
    assert fields.loc["B", "Top"] == "Lumera"


def test_recent_purchases_weigh_more_than_old_ones():
    facts = lines(
        [
            ("RECENT", "Voltix", 50, "2026-06-20"),
            ("RECENT", "Lumera", 50, "2022-06-20"),
            ("OLD", "Voltix", 50, "2022-06-20"),
            ("OLD", "Lumera", 50, "2026-06-20"),
        ]
    )
    values = values_of(run(facts, profile(["OLD", "RECENT"]), {"half_life_days": 180}))
    assert values["RECENT"]["Top"] == "Voltix" and values["OLD"]["Top"] == "Lumera"
    assert values["RECENT"]["Affinity"]["Voltix"]["Score"] > values["OLD"]["Affinity"]["Voltix"]["Score"]


def test_purchases_after_the_reference_date_are_left_out_and_counted():
    facts = lines([("A", "Voltix", 50, "2026-06-20"), ("A", "Lumera", 500, "2026-07-02")])
    result = run(facts, profile(["A"]))
    assert result.counts["lines_after_as_of"] == 1 and result.counts["lines_used"] == 1
    assert values_of(result)["A"]["Top"] == "Voltix"


def test_a_customer_with_no_purchases_gets_the_prior_of_customers_like_them_marked_as_such():
    # Everyone in postal area 021 buys Voltix, everyone in 900 buys Lumera; two newcomers, one in each area.
    rows = [(f"N{i}", "Voltix", 40, "2026-06-01") for i in range(6)]
    rows += [(f"S{i}", "Lumera", 40, "2026-06-01") for i in range(6)]
    people = profile(
        [f"N{i}" for i in range(6)] + [f"S{i}" for i in range(6)] + ["NEW_N", "NEW_S"],
        PostalCode=["02139"] * 6 + ["90001"] * 6 + ["02140", "90002"],
    )
    result = run(lines(rows), people, {"chosen": ["Voltix", "Lumera"], "min_group": 2})
    values = values_of(result)
    assert values["NEW_N"]["Prior"] is True and values["N0"]["Prior"] is True  # one line: fewer than min_lines
    assert values["NEW_N"]["PriorGroup"] == "PostalArea=021" and values["NEW_S"]["PriorGroup"] == "PostalArea=900"
    assert values["NEW_N"]["Top"] == "Voltix" and values["NEW_S"]["Top"] == "Lumera"
    assert values["NEW_N"]["Affinity"]["Voltix"]["Score"] > values["NEW_S"]["Affinity"]["Voltix"]["Score"]
    assert result.counts["customers_with_history"] == 12 and result.counts["customers"] == 14
    # Shares of customers without history still sum to 100 over the chosen brands.
    assert sum(a["ShareOfVoice"] for a in values["NEW_S"]["Affinity"].values()) == 100


def test_a_birth_date_known_only_in_part_still_gives_an_age_band():
    # Everyone born in 1960 buys Voltix, around 2005 Lumera; the newcomers' birth dates are a year, a year and
    # month, as unification writes them (1958-00-00, 2004-05-00).
    rows = [(f"O{i}", "Voltix", 40, "2026-06-01") for i in range(6)]
    rows += [(f"Y{i}", "Lumera", 40, "2026-06-01") for i in range(6)]
    people = profile(
        [f"O{i}" for i in range(6)] + [f"Y{i}" for i in range(6)] + ["NEW_O", "NEW_Y"],
        BirthDate=["1960-03-04"] * 6 + ["2005-03-04"] * 6 + ["1958-00-00", "2004-05-00"],
    )
    values = values_of(run(lines(rows), people, {"chosen": ["Voltix", "Lumera"], "min_group": 2}))
    assert values["NEW_O"]["PriorGroup"] == "AgeBand=65+" and values["NEW_Y"]["PriorGroup"] == "AgeBand=<25"
    assert values["NEW_O"]["Top"] == "Voltix" and values["NEW_Y"]["Top"] == "Lumera"


def test_a_typed_birth_date_known_only_in_part_gives_an_age_band_from_the_text_beside_it():
    import datetime as dt

    rows = [(f"O{i}", "Voltix", 40, "2026-06-01") for i in range(6)]
    rows += [(f"Y{i}", "Lumera", 40, "2026-06-01") for i in range(6)]
    # The profile as the lake holds it: BirthDate a date, a date known in part in BirthDateText (1958, 2004-05).
    people = profile(
        [f"O{i}" for i in range(6)] + [f"Y{i}" for i in range(6)] + ["NEW_O", "NEW_Y"],
        BirthDate=[dt.date(1960, 3, 4)] * 6 + [dt.date(2005, 3, 4)] * 6 + [None, None],
        BirthDateText=[None] * 12 + ["1958", "2004-05"],
    )
    values = values_of(run(lines(rows), people, {"chosen": ["Voltix", "Lumera"], "min_group": 2}))
    assert values["NEW_O"]["PriorGroup"] == "AgeBand=65+" and values["NEW_Y"]["PriorGroup"] == "AgeBand=<25"


def test_customers_with_enough_history_are_not_marked_prior():
    facts = lines([("A", "Voltix", 10, "2026-06-01")] * 3 + [("B", "Lumera", 10, "2026-06-01")])
    values = values_of(run(facts, profile(["A", "B"])))
    assert values["A"]["Prior"] is False and values["B"]["Prior"] is True


def test_a_brand_with_one_buyer_scores_that_buyer_highest():
    rows = [(f"C{i}", "Common", 30, "2026-05-01") for i in range(20)]
    rows += [("C0", "Rare", 30, "2026-05-01")]
    result = run(lines(rows), profile([f"C{i}" for i in range(20)]), {"chosen": ["Common", "Rare"]})
    values = values_of(result)
    rare = {c: v["Affinity"]["Rare"]["Score"] for c, v in values.items()}
    assert rare["C0"] == 100 and max(s for c, s in rare.items() if c != "C0") < 100
    assert values["C0"]["Affinity"]["Rare"]["Level"] == "Very high"


def test_interest_affinity_reads_the_category_field():
    facts = pd.concat(
        [lines([("A", "Voltix", 30, "2026-05-01")], "Electronics"), lines([("B", "Lumera", 30, "2026-05-01")], "Toys")]
    )
    result = run(facts, profile(["A", "B"]), provider=build_interest)
    values = values_of(result)
    assert values["A"]["Top"] == "Electronics" and values["B"]["Top"] == "Toys"
    assert set(result.values["EnrichmentType"]) == {"InterestAffinity"}


def test_no_brand_field_mapped_is_a_clear_error_naming_what_to_map():
    facts = lines([("A", "Voltix", 30, "2026-05-01")]).drop(columns="brand")
    with pytest.raises(EnrichmentFailed) as raised:
        run(facts, profile(["A"]))
    message = str(raised.value)
    assert "enrich.enrichments.brands.params.field" in message
    assert "activities.tables.order_lines.fields (brand: <column>)" in message


def test_an_activity_without_purchases_is_a_clear_error():
    with pytest.raises(EnrichmentFailed, match="order_lines.*no purchase"):
        run(lines([]), profile(["A"]))


def test_a_chosen_brand_never_bought_scores_zero_and_is_warned_about():
    result = run(lines([("A", "Voltix", 30, "2026-05-01")]), profile(["A"]), {"chosen": ["Voltix", "Voltixx"]})
    assert any("'Voltixx' was never bought" in w for w in result.warnings)
    assert values_of(result)["A"]["Affinity"]["Voltixx"] == {"Level": None, "Score": 0, "ShareOfVoice": 0}
    assert values_of(result)["A"]["Affinity"]["Voltix"]["ShareOfVoice"] == 100


def test_the_fields_an_affinity_writes_are_those_the_configuration_accepts():
    from ci_pipeline.config.enrich import EnrichmentSpec, field_problem

    facts = lines([("A", "Voltix", 30, "2026-05-01"), ("B", "Lumera", 20, "2026-05-01")])
    for params in ({}, {"chosen": ["Voltix", "Lumera"]}):
        written = run(facts, profile(["A", "B"]), params).fields.columns.drop("CustomerId")
        spec = EnrichmentSpec(provider="brand_affinity", params=params)
        assert [f for f in written if field_problem(spec, f)] == []
        assert field_problem(spec, "PriorGroup") and field_problem(spec, "Affinity.Voltix") is not None


def test_bad_parameters_name_the_key():
    with pytest.raises(EnrichmentFailed, match=r"enrich.enrichments.brands.params.top: .*less than or equal to 5"):
        run(lines([("A", "Voltix", 30, "2026-05-01")]), profile(["A"]), {"top": 9})


def test_quantity_can_weigh_instead_of_spend():
    facts = lines([("A", "Cheap", 1, "2026-05-01")] * 5 + [("A", "Dear", 500, "2026-05-01")])
    assert values_of(run(facts, profile(["A"])))["A"]["Top"] == "Dear"
    assert values_of(run(facts, profile(["A"]), {"weight": "quantity"}))["A"]["Top"] == "Cheap"


def test_returns_reduce_spend_and_a_fully_returned_brand_counts_nothing():
    facts = lines(
        [("A", "Voltix", 50, "2026-05-01"), ("A", "Voltix", -50, "2026-05-02"), ("A", "Lumera", 5, "2026-05-03")]
    )
    values = values_of(run(facts, profile(["A", "B"]), {"chosen": ["Voltix", "Lumera"]}))
    assert values["A"]["Top"] == "Lumera"


def test_scores_are_percentiles_with_ties_sharing_one_score():
    shares = np.array([[0.1], [0.1], [0.5], [0.9]])
    assert scores(shares)[:, 0].tolist() == [38, 38, 75, 100]
    assert scores(np.array([[0.0], [0.2]]))[:, 0].tolist() == [0, 100]


def test_levels_follow_the_reference_bands():
    assert levels(np.array([0, 1, 34, 35, 69, 70, 84, 85, 100])).tolist() == [
        None, "Low", "Low", "Medium", "Medium", "High", "High", "Very high", "Very high"
    ]  # fmt: skip


def test_share_of_voice_rounds_to_whole_numbers_summing_to_100():
    voice = share_of_voice(np.array([[1.0, 1.0, 1.0], [0.2, 0.0, 0.0], [0.0, 0.0, 0.0], [0.505, 0.25, 0.245]]))
    assert voice.tolist() == [[34, 33, 33], [100, 0, 0], [0, 0, 0], [51, 25, 24]]


def test_brands_can_come_from_a_product_catalog():
    facts = lines([("A", "x", 30, "2026-05-01"), ("B", "x", 30, "2026-05-01"), ("C", "x", 5, "2026-05-01")])
    facts = facts.drop(columns="brand").assign(product=pd.array(["P1", "P2", "UNKNOWN"], dtype="string"))
    catalog = pd.DataFrame({"sku": ["P1", "P2"], "maker": ["Voltix", "Lumera"]})
    params = {"catalog": {"source": "erp", "table": "products", "key": "sku", "columns": {"maker": "brand"}}}
    built = build_brand(params, ProviderContext(enrichment="brands"))
    result = built.enrich(
        EnrichmentInputs(
            profiles=profile(["A", "B", "C"]), activities=facts, as_of=AS_OF, tables={"erp.products": catalog}
        )
    )
    values = values_of(result)
    assert values["A"]["Top"] == "Voltix" and values["B"]["Top"] == "Lumera"
    # A product the catalog does not hold has no brand: counted, not guessed.
    assert result.counts["lines_without_name"] == 1


def test_a_catalog_without_the_named_column_is_a_clear_error():
    facts = lines([("A", "x", 30, "2026-05-01")]).assign(product=pd.array(["P1"], dtype="string"))
    params = {"catalog": {"source": "erp", "table": "products", "key": "sku", "columns": {"maker": "brand"}}}
    built = build_brand(params, ProviderContext(enrichment="brands"))
    inputs = EnrichmentInputs(
        profiles=profile(["A"]), activities=facts, as_of=AS_OF, tables={"erp.products": pd.DataFrame({"sku": ["P1"]})}
    )
    with pytest.raises(EnrichmentFailed, match=r"params.catalog: erp.products has no column maker"):
        built.enrich(inputs)


def test_a_brand_bought_by_the_buyers_of_what_a_customer_buys_ranks_above_an_unrelated_one():
    # Voltix buyers also buy Lumera; Ardent buyers buy nothing else. A bought Voltix, B bought Ardent, for the same
    # amount: A is more likely to buy Lumera than B, though neither has bought it yet.
    rows = [(f"V{i}", "Voltix", 40, "2026-05-01") for i in range(5)]
    rows += [(f"V{i}", "Lumera", 40, "2026-05-02") for i in range(5)]
    rows += [(f"R{i}", "Ardent", 40, "2026-05-01") for i in range(5)]
    rows += [("A", "Voltix", 40, "2026-05-01"), ("B", "Ardent", 40, "2026-05-01")]
    people = profile([f"V{i}" for i in range(5)] + [f"R{i}" for i in range(5)] + ["A", "B"])
    values = values_of(run(lines(rows), people, {"chosen": ["Lumera", "Voltix", "Ardent"]}))
    assert values["A"]["Affinity"]["Lumera"]["Score"] > values["B"]["Affinity"]["Lumera"]["Score"]
    # What a customer bought still counts most: A's top brand is the one A bought.
    assert values["A"]["Top"] == "Voltix" and values["B"]["Top"] == "Ardent"


def test_the_timeline_read_as_a_parquet_dataset_gives_the_same_values_as_in_memory(tmp_path):
    import fsspec
    import pyarrow.dataset as ds
    import pyarrow.fs as pafs

    facts = lines(
        [("A", "Voltix", 30, "2026-05-01"), ("A", " Lumera ", 10, "2026-06-01"), ("B", "Lumera", 5, "2026-02-01")]
    )
    facts = pd.concat([facts, lines([("B", "Voltix", 9, "2026-06-01")]).assign(Activity="web_sessions")])
    facts.to_parquet(tmp_path / "facts.parquet")
    built = build_brand({}, ProviderContext(enrichment="brands"))
    people = profile(["A", "B", "C"])
    from_file = built.enrich(
        EnrichmentInputs(profiles=people, as_of=AS_OF, activity_dataset=ds.dataset(tmp_path / "facts.parquet"))
    )
    # A lake other than a local folder: its dataset is scanned through Arrow, not by DuckDB's own reader.
    remote = pafs.PyFileSystem(pafs.FSSpecHandler(fsspec.filesystem("file")))
    through_arrow = built.enrich(
        EnrichmentInputs(
            profiles=people,
            as_of=AS_OF,
            activity_dataset=ds.dataset(str(tmp_path / "facts.parquet"), filesystem=remote),
        )
    )
    in_memory = run(facts, people)
    assert values_of(from_file) == values_of(in_memory) == values_of(through_arrow)
    assert from_file.counts == in_memory.counts == through_arrow.counts and from_file.counts["lines_used"] == 3
    # Blanks around a name are not part of it, and lines of other activities are not purchases.
    assert set(values_of(from_file)["A"]["Affinity"]) == {"Lumera", "Voltix"}


def test_brand_and_interest_affinity_of_one_run_sum_the_purchase_lines_once():
    from ci_pipeline.config.enrich import EnrichmentSpec
    from ci_pipeline.enrich import shared_memo
    from ci_pipeline.enrich.affinity import PurchasePairs

    facts = pd.concat(
        [lines([("A", "Voltix", 30, "2026-05-01")], "Electronics"), lines([("B", "Lumera", 30, "2026-05-01")], "Toys")]
    )
    memo = shared_memo(
        {"brands": EnrichmentSpec(provider="brand_affinity"), "interests": EnrichmentSpec(provider="interest_affinity")}
    )
    people = profile(["A", "B"])
    inputs = EnrichmentInputs(profiles=people, activities=facts, as_of=AS_OF, shared=memo)
    brands = build_brand({}, ProviderContext(enrichment="brands")).enrich(inputs)
    scans = [v for v in memo.values() if isinstance(v, dict) and v]
    # One scan, holding the pairs of both name fields.
    assert len(scans) == 1 and all(isinstance(p, PurchasePairs) for p in scans[0].values()) and len(scans[0]) == 2
    interests = build_interest({}, ProviderContext(enrichment="interests")).enrich(inputs)
    assert len([v for v in memo.values() if isinstance(v, dict) and v]) == 1
    assert values_of(interests) == values_of(run(facts, people, provider=build_interest))
    assert values_of(brands) == values_of(run(facts, people))


def test_spend_sums_do_not_depend_on_the_order_of_the_lines():
    # In doubles, (1e15 + 0.3) - 1e15 and (1e15 - 1e15) + 0.3 differ: a sum in the order DuckDB's threads happen to
    # add the lines would differ between runs. A and B bought the same lines in other orders; C buys another brand.
    bought = [("Voltix", 1e15), ("Voltix", 0.3), ("Voltix", -1e15)]
    rows = [("A", b, v, "2026-06-01") for b, v in bought] + [("B", b, v, "2026-06-01") for b, v in bought[::-1]]
    rows.append(("C", "Lumera", 5.0, "2026-06-01"))
    customers = profile_customers(profile(["A", "B", "C"]))
    settings = settings_from({}, "brand_affinity")
    pairs = purchase_pairs(lines(rows), customers, settings, AS_OF, {}, {})
    assert pairs.customer.tolist() == [0, 1, 2]
    assert pairs.spend[0] == pairs.spend[1] == pytest.approx(0.3 * 2 ** (-30 / 365), rel=1e-9)
    again = purchase_pairs(lines(rows[::-1]), customers, settings, AS_OF, {}, {})
    assert again.spend.tolist() == pairs.spend.tolist()
