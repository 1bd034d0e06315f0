"""What the stage makes of a provider's values: rows, the Enrichment table, flat fields for segments."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from ci_pipeline.enrich import (
    EnrichmentFailed,
    EnrichmentResult,
    enrichment_rows,
    enrichment_table,
    flat_fields,
    published,
    segment_fields,
)
from ci_pipeline.enrich.provider import customer_values, json_objects
from ci_pipeline.outputs import ENRICHMENT_COLUMNS

CUSTOMERS = pd.Series(["A", "B", "C"], dtype="string")


def result(rows) -> EnrichmentResult:
    return EnrichmentResult(pd.DataFrame(rows, columns=["CustomerId", "EnrichmentType", "Values"]))


def test_rows_for_customers_the_profile_does_not_hold_are_counted_not_published():
    rows, counts = enrichment_rows(result([("A", "T", {"x": 1}), ("GONE", "T", {"x": 2})]), "acme", CUSTOMERS, "e")
    assert rows["CustomerId"].tolist() == ["A"] and counts == {"unknown_customers": 1}
    assert rows["Values"].tolist() == ['{"x":1}']


def test_a_customer_given_the_same_type_twice_is_an_error_naming_the_enrichment():
    with pytest.raises(EnrichmentFailed, match=r"enrich.enrichments.e: 2 rows give a customer the same"):
        enrichment_rows(result([("A", "T", {"x": 1}), ("A", "T", {"x": 2})]), "acme", CUSTOMERS, "e")
    thrice = [("B", "T", {"x": 1}), ("A", "T", {}), ("B", "U", {}), ("C", "T", {}), ("B", "T", {}), ("B", "T", {})]
    with pytest.raises(EnrichmentFailed, match=r"3 rows give a customer the same EnrichmentType twice \(e.g. \['B'\]"):
        enrichment_rows(result(thrice), "acme", CUSTOMERS, "e")


def test_values_built_column_wise_are_what_json_writes_and_match_the_flat_fields():
    values = pd.DataFrame(
        {
            "Street1": ['12 "OAK" ST', None, "C:\\PATH", "S\u00e3o Paulo\u2028", "TAB\tAND\x01", ""],
            "Valid": [True, False, True, False, True, True],
            "Role": pd.array([True, None, False, None, True, False], dtype="boolean"),
            "Reason": [None] * 6,
        }
    )
    text = json_objects(values)
    records = values.astype(object).where(values.notna(), None).to_dict("records")
    assert list(text) == [json.dumps(r, sort_keys=True, separators=(",", ":"), ensure_ascii=False) for r in records]
    ids = pd.Series(["F", "B", "D", "A", "E", "C"], dtype="string")
    frame, fields = customer_values(ids, "T", values)
    assert frame["CustomerId"].tolist() == list("ABCDEF")
    rows, _ = enrichment_rows(EnrichmentResult(frame), "acme", ids, "e")
    pd.testing.assert_frame_equal(segment_fields({"e": fields}), segment_fields({"e": flat_fields(rows)}))


def test_rows_without_values_are_an_error():
    with pytest.raises(EnrichmentFailed, match="no EnrichmentType or Values"):
        enrichment_rows(result([("A", "T", None)]), "acme", CUSTOMERS, "e")


def test_the_enrichment_table_follows_the_output_contract_even_when_empty():
    rows, _ = enrichment_rows(result([("B", "T", {"x": 1}), ("A", "T", {"x": 2})]), "acme", CUSTOMERS, "e")
    table = enrichment_table([rows])
    assert list(table.columns) == ENRICHMENT_COLUMNS
    assert set(table["msdynci_identifier"]) == {"acme|T|A", "acme|T|B"}
    assert list(enrichment_table([]).columns) == ENRICHMENT_COLUMNS and enrichment_table([]).empty


def test_flat_fields_join_nested_keys_with_dots_and_keep_types():
    rows, _ = enrichment_rows(
        result([("A", "T", {"City": "Boston", "Geo": {"Lat": 42.3}, "Tags": ["x"], "Ok": True}), ("B", "T", {})]),
        "acme",
        CUSTOMERS,
        "e",
    )
    fields = segment_fields({"addr": flat_fields(rows)}).set_index("CustomerId")
    assert set(fields.columns) == {"addr.City", "addr.Geo.Lat", "addr.Ok"}
    assert fields.loc["A", "addr.Geo.Lat"] == 42.3 and fields["addr.Geo.Lat"].dtype == "float64"
    assert fields["addr.Ok"].dtype == "boolean" and fields.loc["A", "addr.Ok"]
    assert pd.isna(fields.loc["B", "addr.City"])


def test_several_types_of_one_enrichment_carry_the_type_in_the_field_name():
    rows, _ = enrichment_rows(result([("A", "Home", {"City": "X"}), ("A", "Work", {"City": "Y"})]), "p", CUSTOMERS, "e")
    assert flat_fields(rows).set_index("CustomerId").loc["A"].to_dict() == {"Home.City": "X", "Work.City": "Y"}


@pytest.mark.parametrize(
    "values",
    [
        # Parsed by Arrow: nested objects, lists left out, numbers, booleans and members some rows lack.
        [{"City": "Boston", "Geo": {"Lat": 42.3, "Zone": {"Id": 7}}, "Tags": ["x"], "Ok": True}, {}, {"Ok": None}],
        [{"N": 1}, {"N": None}, {"N": 3, "Text": 'a "quoted"\tvalue'}],
        # Left to Python: a member of two types, a line break inside a value, an empty object inside.
        [{"N": 1}, {"N": "one"}, {"N": 2.5}],
        [{"Text": "two\nlines"}, {"Text": "one"}, {}],
        [{"Geo": {}}, {"Geo": {"Lat": 1.0}}, {}],
    ],
)
def test_flat_fields_parsed_by_arrow_are_what_python_gives(values, monkeypatch):
    rows, _ = enrichment_rows(result(list(zip(CUSTOMERS, "TTT", values, strict=True))), "acme", CUSTOMERS, "e")
    found = flat_fields(rows)
    monkeypatch.setattr(published, "_parsed_in_arrow", lambda rows, several: None)
    by_python = flat_fields(rows)
    pd.testing.assert_frame_equal(found, by_python)
    pd.testing.assert_frame_equal(segment_fields({"e": found}), segment_fields({"e": by_python}))


@pytest.mark.parametrize("widest_holds_everyone", [True, False])
def test_segment_fields_hold_every_customer_of_any_enrichment_as_an_outer_merge_would(widest_holds_everyone):
    everyone = [f"C{i:02d}" for i in range(12)]
    wide = pd.DataFrame({"CustomerId": pd.array(everyone, dtype="string"), "Score": np.arange(12.0)})
    some = everyone[::3] if widest_holds_everyone else [*everyone[::3], "Z"]
    narrow = pd.DataFrame(
        {
            "CustomerId": pd.array(some[::-1] + some[:1], dtype="string"),  # out of order, the last one twice
            "Ok": [True] * (len(some) + 1),
            "Level": pd.array([f"L{i}" for i in range(len(some) + 1)], dtype="string"),
        }
    )
    found = segment_fields({"wide": wide, "narrow": narrow})
    expected = (
        narrow.drop_duplicates("CustomerId")
        .rename(columns={"Ok": "narrow.Ok", "Level": "narrow.Level"})
        .merge(wide.rename(columns={"Score": "wide.Score"}), on="CustomerId", how="outer")
        .sort_values("CustomerId")
        .reset_index(drop=True)
    )
    assert found["CustomerId"].tolist() == sorted(set(everyone) | set(some))
    assert found["narrow.Ok"].dtype == "boolean" and found["wide.Score"].dtype == "float64"
    for column in ("narrow.Ok", "narrow.Level", "wide.Score"):
        assert (
            found[column].astype(object).where(found[column].notna(), None).tolist()
            == expected[column].astype(object).where(expected[column].notna(), None).tolist()
        )
