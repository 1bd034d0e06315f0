"""The output-table contract: exact spec columns, identifiers and uuid5 GUIDs computed here independently."""

from __future__ import annotations

import uuid

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from ci_pipeline import outputs
from ci_pipeline.dataverse import logical_column, primary_key, sink_table
from ci_pipeline.dataverse.naming import entity_set
from ci_pipeline.errors import UserError

NS = uuid.UUID("07e3607e-db94-5423-b773-540dff3be29c")


def expected_guid(text: str) -> str:
    return str(uuid.uuid5(NS, text))


def test_namespace_is_the_documented_one():
    assert uuid.uuid5(uuid.NAMESPACE_URL, "https://ci-pipeline.dev/output-tables") == NS == outputs.NAMESPACE


def test_alternate_key_rows_by_hand():
    df = pd.DataFrame(
        {
            "DataSourceName": ["crm", "loyalty"],
            "EntityName": ["contacts", "members"],
            "AlternateValue": ["c-1", "m-7"],
            "KeyRing": [[{"dataSourceName": "crm"}], '[{"x": 1}]'],
            "CustomerId": ["CU1", "CU1"],
        }
    )
    out = outputs.build("AlternateKey", df)
    assert list(out.columns) == outputs.ALTERNATE_KEY_COLUMNS
    rows = {r.msdynci_identifier: r for r in out.itertuples()}
    assert set(rows) == {"crm|contacts|c-1", "loyalty|members|m-7"}
    assert rows["crm|contacts|c-1"].AlternateKeyId == expected_guid("crm|contacts|c-1")
    assert rows["crm|contacts|c-1"].KeyRing == '[{"dataSourceName":"crm"}]'
    assert rows["loyalty|members|m-7"].KeyRing == '[{"x": 1}]'
    assert out["AlternateKeyId"].tolist() == sorted(out["AlternateKeyId"].tolist())


def test_customer_measure_enrichment_prediction_by_hand():
    measure = outputs.build("CustomerMeasure", pd.DataFrame({"CustomerId": ["A"], "Measures": [{"b": 2, "a": 1.5}]}))
    assert measure.iloc[0].to_dict() == {
        "CustomerId": "A",
        "Measures": '{"a":1.5,"b":2}',
        "msdynci_identifier": "Customer_Measure|A",
        "msdynci_customermeasureid": expected_guid("Customer_Measure|A"),
    }
    enrichment = outputs.build(
        "Enrichment",
        pd.DataFrame({"CustomerId": ["A"], "EnrichmentProvider": ["P"], "EnrichmentType": ["T"], "Values": [{}]}),
    )
    assert list(enrichment.columns) == outputs.ENRICHMENT_COLUMNS
    assert enrichment.iloc[0]["msdynci_identifier"] == "P|T|A"
    assert enrichment.iloc[0]["msdynci_enrichmentid"] == expected_guid("P|T|A")
    prediction = outputs.build(
        "Prediction",
        pd.DataFrame({"CustomerId": ["A"], "ModelProvider": ["ci"], "Model": ["Churn"], "Values": ['{"s":1}']}),
    )
    assert list(prediction.columns) == outputs.PREDICTION_COLUMNS
    assert prediction.iloc[0]["msdynci_identifier"] == "Churn|ci|A"
    assert prediction.iloc[0]["msdynci_predictionid"] == expected_guid("Churn|ci|A")


def test_segment_membership_sorts_unique_names_and_documents_name():
    out = outputs.build(
        "SegmentMembership",
        pd.DataFrame({"CustomerId": ["A"], "Segments": [["vip", "churn_risk", "vip"]]}),
        SegmentProvider="proj",
    )
    assert list(out.columns) == outputs.SEGMENT_MEMBERSHIP_COLUMNS
    row = out.iloc[0]
    assert row["Segments"] == '["churn_risk","vip"]'
    assert row["msdynci_identifier"] == "A|proj|Customer|Segments"
    assert row["msdynci_segmentmembershipid"] == expected_guid("A|proj|Customer|Segments")


def test_unified_activity_timestamp_range_index_and_guid():
    out = outputs.build(
        "UnifiedActivity",
        pd.DataFrame(
            {
                "CustomerId": ["A"],
                "ActivityId": ["orders|o-1"],
                "SourceEntityName": ["orders"],
                "SourceActivityId": ["o-1"],
                "ActivityType": ["SalesOrder"],
                "ActivityTimeStamp": ["2026-06-30T12:00:00Z"],
                "SemanticData": [{"amount": 10}],
            }
        ),
    )
    assert list(out.columns) == outputs.UNIFIED_ACTIVITY_COLUMNS
    row = out.iloc[0]
    assert row["RangeIndex"] == "1782820800"
    assert row["SemanticData"] == '{"amount":10}'
    # the timeline's formula, so shaping a frame without the column gives the GUIDs the timeline would
    assert row["msdynci_unifiedactivityid"] == expected_guid("UnifiedActivity|orders|o-1")
    table = sink_table("UnifiedActivity", out)
    assert table.frame.loc[0, "msdynci_activitytimestamp"] == "2026-06-30T12:00:00Z"


def test_customer_profile_key_and_logical_names():
    shaped = outputs.build("CustomerProfile", pd.DataFrame({"Email": ["a@x"], "CustomerId": ["C1"]}))
    assert list(shaped.columns) == ["CustomerId", "Email"]
    table = sink_table("CustomerProfile", shaped, prefix="contoso")
    assert table.primary_key == "contoso_customerprofileid"
    assert table.columns == ["contoso_customerprofileid", "contoso_customerid", "contoso_email"]
    assert table.frame.iloc[0, 0] == expected_guid("C1")
    assert table.entity_set == "contoso_customerprofiles"
    assert entity_set("UnifiedActivity") == "msdynci_unifiedactivities"
    assert entity_set("AlternateKey") == "msdynci_alternatekeys"
    assert logical_column("msdynci_identifier", "abc") == "abc_identifier"
    assert primary_key("AlternateKey") == "msdynci_alternatekeyid"


def test_bad_input_names_table_and_columns():
    with pytest.raises(UserError, match="AlternateKey: the input has no column.*KeyRing"):
        outputs.build("AlternateKey", pd.DataFrame({"DataSourceName": ["a"]}))
    with pytest.raises(UserError, match="AlternateKey: 1 row.s. have no AlternateValue .e.g. row 1"):
        outputs.build("AlternateKey", keys_with_gap())
    with pytest.raises(UserError, match="CustomerProfile: 2 rows share a CustomerId"):
        outputs.build("CustomerProfile", pd.DataFrame({"CustomerId": ["A", "A"]}))
    with pytest.raises(UserError, match="maps to the Dataverse column"):
        sink_table(
            "CustomerProfile",
            outputs.build("CustomerProfile", pd.DataFrame({"CustomerId": ["A"], "customerid": ["x"]})),
        )


def test_bulk_guids_equal_uuid5_one_by_one():
    names = pd.Series(["", "crm|contacts|c-1", "Zoë|Ärger|€", "😀|a\x00b", "x" * 500, *[f"k{i}" for i in range(1000)]])
    assert outputs.guids(names).tolist() == [expected_guid(n) for n in names]
    assert outputs.guids(pd.Series([], dtype="string")).tolist() == []
    # In the order and with the index of the identifiers given.
    shuffled = names.sample(frac=1, random_state=3)
    found = outputs.guids(shuffled)
    assert found.index.equals(shuffled.index) and found.tolist() == [expected_guid(n) for n in shuffled]


def keys_with_gap() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "DataSourceName": ["crm", "crm"],
            "EntityName": ["contacts", "contacts"],
            "AlternateValue": pd.Series(["c-1", None], dtype="string"),
            "KeyRing": ["[]", "[]"],
            "CustomerId": ["A", "B"],
        }
    )


def test_publishing_checks_the_stage_s_table_and_never_recomputes_its_ids():
    built = outputs.build("CustomerMeasure", pd.DataFrame({"CustomerId": ["B", "A"], "Measures": ["{}", "{}"]}))
    assert built["msdynci_customermeasureid"].tolist() == sorted(
        [expected_guid("Customer_Measure|A"), expected_guid("Customer_Measure|B")]
    )
    # The stage computed the GUIDs once; publishing keeps whatever it was handed and only orders the rows.
    handed = built.assign(msdynci_customermeasureid=["g-2", "g-1"])
    assert outputs.finish("CustomerMeasure", handed)["msdynci_customermeasureid"].tolist() == ["g-1", "g-2"]
    with pytest.raises(UserError, match=r"CustomerMeasure: the columns are not the output contract's \(missing: "):
        outputs.finish("CustomerMeasure", pd.DataFrame({"CustomerId": ["A"], "Measures": ["{}"]}))
    with pytest.raises(UserError, match="CustomerMeasure: 2 rows share a msdynci_customermeasureid"):
        outputs.finish("CustomerMeasure", built.assign(msdynci_customermeasureid="same"))
    with pytest.raises(UserError, match="'Predictions' is not an output table; use one of CustomerProfile"):
        outputs.finish("Predictions", built)


def test_with_ids_takes_identifier_parts_that_are_not_columns():
    content = pd.DataFrame(
        {"CustomerId": ["A"], "SegmentProvider": ["p"], "SegmentMembershipType": ["Customer"], "Segments": ['["x"]']}
    )
    table = outputs.with_ids("SegmentMembership", content, Name="Lists")
    assert list(table.columns) == outputs.SEGMENT_MEMBERSHIP_COLUMNS
    assert table.loc[0, "msdynci_identifier"] == "A|p|Customer|Lists"
    assert table.loc[0, "msdynci_segmentmembershipid"] == expected_guid("A|p|Customer|Lists")
    assert outputs.with_ids("SegmentMembership", content).loc[0, "msdynci_identifier"] == "A|p|Customer|Segments"


def test_a_json_column_handed_over_as_dicts_is_published_as_json():
    built = outputs.build("CustomerMeasure", pd.DataFrame({"CustomerId": ["A"], "Measures": ["{}"]}))
    handed = built.assign(Measures=pd.Series([{"b": 1, "a": "é"}], dtype=object))
    assert outputs.finish("CustomerMeasure", handed).loc[0, "Measures"] == '{"a":"é","b":1}'


@pytest.mark.parametrize("dtype", ["string[pyarrow]", "string[python]", object])
def test_finish_orders_rows_by_key_and_refuses_repeated_keys_whatever_the_text_type(dtype):
    ids = pd.Series(["b", "é", "a", "B", "ab"], dtype=dtype)
    out = outputs.finish("CustomerProfile", pd.DataFrame({"CustomerId": ids, "Name": list("12345")}))
    # Byte (code point) order, as the sink and the exports expect: upper case before lower, accents last.
    assert out["CustomerId"].tolist() == ["B", "a", "ab", "b", "é"]
    assert out["Name"].tolist() == ["4", "3", "5", "1", "2"]
    already = outputs.finish("CustomerProfile", out)
    assert already["Name"].tolist() == out["Name"].tolist()
    with pytest.raises(UserError, match=r"CustomerProfile: 2 rows share a CustomerId \(e.g. \['ab'\]\)"):
        outputs.finish("CustomerProfile", pd.DataFrame({"CustomerId": pd.Series(["ab", "c", "ab"], dtype=dtype)}))


def test_guid_keys_are_ordered_as_numbers_exactly_as_their_texts_sort():
    guids = [str(uuid.uuid5(uuid.NAMESPACE_URL, str(i))) for i in range(2000)]
    # Keys sharing their first 16 digits are ordered by the last 16.
    guids += ["00000000-0000-5000-8000-00000000000b", "00000000-0000-5000-8000-00000000000a"]
    content = pd.DataFrame({"CustomerId": [f"C{i}" for i in range(len(guids))], "Measures": ["{}"] * len(guids)})
    handed = outputs.with_ids("CustomerMeasure", content).assign(msdynci_customermeasureid=guids)
    assert outputs.guid_words(pa.array(guids)) is not None
    out = outputs.finish("CustomerMeasure", handed)
    assert out["msdynci_customermeasureid"].tolist() == sorted(guids)
    assert out["CustomerId"].tolist() == [f"C{guids.index(g)}" for g in sorted(guids)]
    # A chunk that starts inside its buffers (a slice), as a column of several parts may hold.
    as_chunks = pa.chunked_array([pa.array(guids[:7]), pa.array(["x", *guids[7:]]).slice(1)])
    whole, chunked = outputs.guid_words(pa.array(guids)), outputs.guid_words(as_chunks)
    assert all(np.array_equal(a, b) for a, b in zip(whole, chunked, strict=True))
    with pytest.raises(UserError, match=r"CustomerMeasure: 2 rows share a msdynci_customermeasureid \(e.g. \['0"):
        outputs.finish("CustomerMeasure", handed.assign(msdynci_customermeasureid=guids[:-1] + guids[-2:-1]))


@pytest.mark.parametrize("key", ["A0000000-0000-5000-8000-000000000000", "0000000-0000-5000-8000-0000000000000"])
def test_keys_that_are_not_lowercase_guids_are_ordered_as_texts(key):
    keys = ["b0000000-0000-5000-8000-000000000000", key, "10000000-0000-5000-8000-000000000000"]
    assert outputs.guid_words(pa.array(keys)) is None
    content = pd.DataFrame({"CustomerId": ["x", "y", "z"], "Measures": ["{}"] * 3})
    handed = outputs.with_ids("CustomerMeasure", content).assign(msdynci_customermeasureid=keys)
    assert outputs.finish("CustomerMeasure", handed)["msdynci_customermeasureid"].tolist() == sorted(keys)
