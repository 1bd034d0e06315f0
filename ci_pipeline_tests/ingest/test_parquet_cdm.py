"""Parquet files and folders, and CDM folders (model.json and manifests; CSV and Parquet partitions; patterns)."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from ci_pipeline.errors import UserError


def write_parquet(path, frame):
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_parquet(path, index=False)


def test_parquet_file_keeps_its_types_and_applies_declared_ones(tmp_path, ingest):
    write_parquet(
        tmp_path / "orders.parquet",
        pd.DataFrame(
            {
                "id": ["b", "a", "c", "a"],
                "amount": [1.5, 2.0, 3.0, 4.0],
                "qty": [1, 2, 3, 4],
                "at": pd.to_datetime(["2024-01-01", "2024-01-02", "2024-01-03", "2024-01-04"]),
                "day": ["2024-01-01", "nope", "2024-01-03", "2024-01-04"],
            }
        ),
    )
    result = ingest(
        {"t": {"format": "parquet", "path": "orders.parquet", "primary_key": "id", "columns": {"day": "date"}}}
    )
    data = result.data
    assert data["id"].tolist() == ["a", "b", "c"]  # 'a' at row 2 is malformed, so row 4's 'a' is its first clean key
    assert data["amount"].tolist() == [4.0, 1.5, 3.0]
    assert data["qty"].dtype == "Int64" and data["amount"].dtype == "float64"
    assert str(data["at"].dtype) == "datetime64[ns, UTC]" and data["day"].dtype == "datetime64[ns]"
    q = result.quarantine
    assert q["line"].tolist() == [2] and q["kind"].tolist() == ["malformed_value"]
    assert json.loads(q["raw"].iloc[0])["day"] == "nope"


def test_parquet_folder_reads_every_file(tmp_path, ingest):
    write_parquet(tmp_path / "out" / "part-0.parquet", pd.DataFrame({"id": [2, 1], "v": ["x", "y"]}))
    write_parquet(tmp_path / "out" / "sub" / "part-1.parquet", pd.DataFrame({"id": [3], "v": ["z"]}))
    (tmp_path / "out" / "_SUCCESS").write_text("")
    result = ingest({"t": {"format": "parquet", "path": "out", "primary_key": "id"}})
    assert result.data["id"].tolist() == [1, 2, 3]
    assert len(result.files) == 2


def test_empty_parquet_folder(tmp_path, ingest):
    (tmp_path / "out").mkdir()
    with pytest.raises(UserError, match=r"out: the folder holds no \.parquet files"):
        ingest({"t": {"format": "parquet", "path": "out", "primary_key": "id"}})


MODEL = {
    "name": "loyalty",
    "version": "1.0",
    "entities": [
        {
            "$type": "LocalEntity",
            "name": "Members",
            "annotations": [{"name": "ci:CustomDateFormat", "value": "MM/dd/yyyy"}],
            "attributes": [
                {"name": "member_id", "dataType": "string"},
                {"name": "points", "dataType": "int64"},
                {"name": "joined_on", "dataType": "date"},
                {
                    "name": "seen_at",
                    "dataType": "dateTime",
                    "annotations": [{"name": "ci:CustomTimestampFormat", "value": "yyyy-MM-dd HH:mm"}],
                },
            ],
            "partitions": [
                {
                    "name": "p0",
                    "location": "Members/part-0.csv",
                    "fileFormatSettings": {"$type": "CsvFormatSettings", "columnHeaders": False, "delimiter": ","},
                },
                {"name": "p1", "location": "https://acct.dfs.core.windows.net/c/Members/part-1.parquet"},
            ],
        }
    ],
}


def test_model_json_with_headerless_csv_and_parquet_partitions_and_custom_date_formats(tmp_path, ingest):
    model = json.loads(json.dumps(MODEL))
    model["entities"][0]["partitions"][1]["location"] = "Members/part-1.parquet"
    (tmp_path / "cdm" / "Members").mkdir(parents=True)
    (tmp_path / "cdm" / "model.json").write_text(json.dumps(model))
    (tmp_path / "cdm" / "Members" / "part-0.csv").write_text(
        "m2,10,03/04/2020,2024-01-02 03:04\nm1,x,03/05/2020,2024-01-02 03:05\nm3,5,03/06/2020\n"
    )
    write_parquet(
        tmp_path / "cdm" / "Members" / "part-1.parquet",
        pd.DataFrame(
            {"member_id": ["m4"], "points": [7], "joined_on": ["12/31/2021"], "seen_at": ["2024-02-02 01:00"]}
        ),
    )
    result = ingest(
        {"members": {"format": "cdm", "path": "cdm/model.json", "entity": "Members", "primary_key": "member_id"}},
        table="members",
    )
    data = result.data
    assert data["member_id"].tolist() == ["m2", "m4"]
    assert data["points"].dtype == "Int64" and data["points"].tolist() == [10, 7]
    assert data["joined_on"].tolist() == [pd.Timestamp("2020-03-04"), pd.Timestamp("2021-12-31")]
    assert data["seen_at"].iloc[0] == pd.Timestamp("2024-01-02 03:04", tz="UTC")
    q = result.quarantine
    assert q["kind"].tolist() == ["malformed_value", "column_count"]
    assert q["line"].tolist() == [2, 3]
    assert result.balanced and result.rows_read == 4


def test_a_csv_export_of_ci_pipeline_is_read_back_as_a_cdm_source(tmp_path, ingest):
    from datetime import UTC, datetime

    from ci_pipeline import outputs
    from ci_pipeline.export import write_export
    from ci_pipeline.lake import Lake

    profile = pd.DataFrame({"CustomerId": ["C2", "C1", "C3"], "FullName": ["Bo", 'Ann "A", B', None]})
    tables = {"CustomerProfile": outputs.build("CustomerProfile", profile)}
    write_export(Lake.local(tmp_path / "out"), "wh", tables, datetime(2026, 6, 30, 12, 5, tzinfo=UTC), rows_per_part=2)
    model = {"format": "cdm", "path": "out/exports/wh/model.json", "entity": "CustomerProfile"}
    result = ingest({"t": {**model, "primary_key": "CustomerId"}})
    assert result.data["CustomerId"].tolist() == ["C1", "C2", "C3"]
    assert result.data["FullName"].tolist()[0] == 'Ann "A", B' and len(result.files) == 2


def test_model_json_partition_that_does_not_exist(tmp_path, ingest):
    (tmp_path / "cdm").mkdir()
    (tmp_path / "cdm" / "model.json").write_text(json.dumps(MODEL))
    with pytest.raises(
        UserError, match=r"model\.json: entity Members lists partition .*part-0\.csv, which does not exist"
    ):
        ingest(
            {"members": {"format": "cdm", "path": "cdm/model.json", "entity": "Members", "primary_key": "member_id"}},
            table="members",
        )


def test_unknown_entity_names_the_entities_there_are(tmp_path, ingest):
    (tmp_path / "cdm").mkdir()
    (tmp_path / "cdm" / "model.json").write_text(json.dumps(MODEL))
    with pytest.raises(UserError, match=r"no entity named 'members2' \(entities: Members\)"):
        ingest({"members2": {"format": "cdm", "path": "cdm/model.json", "primary_key": "member_id"}}, table="members2")


def write_manifest(root, partitions=None, patterns=None):
    root.mkdir(parents=True, exist_ok=True)
    entity = {"type": "LocalEntity", "entityName": "Customer", "entityPath": "Customer.cdm.json/Customer"}
    if partitions is not None:
        entity["dataPartitions"] = partitions
    if patterns is not None:
        entity["dataPartitionPatterns"] = patterns
    (root / "default.manifest.cdm.json").write_text(
        json.dumps({"jsonSchemaSemanticVersion": "1.1.0", "manifestName": "default", "entities": [entity]})
    )
    (root / "Customer.cdm.json").write_text(
        json.dumps(
            {
                "jsonSchemaSemanticVersion": "1.1.0",
                "definitions": [
                    {
                        "entityName": "Customer",
                        "hasAttributes": [
                            {"name": "CustomerId", "purpose": "hasA", "dataType": "string"},
                            {
                                "name": "BirthDate",
                                "purpose": "hasA",
                                "dataType": "date",
                                "appliedTraits": [
                                    {
                                        "traitReference": "is.formatted.date",
                                        "arguments": [{"name": "format", "value": "dd.MM.yyyy"}],
                                    }
                                ],
                            },
                            {"name": "Value", "dataType": {"dataTypeReference": "decimal"}},
                        ],
                    }
                ],
            }
        )
    )


CSV_TRAIT = [
    {
        "traitReference": "is.partition.format.CSV",
        "arguments": [{"name": "columnHeaders", "value": "true"}, {"name": "delimiter", "value": ";"}],
    }
]


def test_manifest_with_csv_and_parquet_partitions(tmp_path, ingest):
    root = tmp_path / "cdm"
    write_manifest(
        root,
        partitions=[
            {"name": "p0", "location": "local:/Customer/part-0.csv", "exhibitsTraits": CSV_TRAIT},
            {
                "name": "p1",
                "location": "Customer/part-1.parquet",
                "exhibitsTraits": [{"traitReference": "is.partition.format.parquet"}],
            },
        ],
    )
    (root / "Customer").mkdir()
    (root / "Customer" / "part-0.csv").write_text("CustomerId;BirthDate;Value\nc2;31.12.1990;1.25\n")
    write_parquet(
        root / "Customer" / "part-1.parquet",
        pd.DataFrame({"CustomerId": ["c1"], "BirthDate": ["01.01.1980"], "Value": [2.5]}),
    )
    result = ingest(
        {
            "customer": {
                "format": "cdm",
                "path": "cdm/default.manifest.cdm.json",
                "entity": "Customer",
                "primary_key": "CustomerId",
            }
        },
        table="customer",
    )
    assert result.data["CustomerId"].tolist() == ["c1", "c2"]
    assert result.data["BirthDate"].tolist() == [pd.Timestamp("1980-01-01"), pd.Timestamp("1990-12-31")]
    assert result.data["Value"].tolist() == [2.5, 1.25]


@pytest.mark.parametrize(
    "pattern",
    [{"globPattern": "/**/*.csv"}, {"regularExpression": "/?part-\\d+\\.csv"}],
    ids=["glob", "regex"],
)
def test_manifest_partition_patterns(tmp_path, ingest, pattern):
    root = tmp_path / "cdm"
    write_manifest(root, patterns=[{"name": "p", "rootLocation": "Customer", **pattern}])
    (root / "Customer").mkdir()
    (root / "Customer" / "part-0.csv").write_text("c1,01.02.1999,1\n")
    (root / "Customer" / "part-1.csv").write_text("c2,01.02.1998,2\n")
    (root / "Customer" / "notes.txt").write_text("not data")
    result = ingest(
        {
            "customer": {
                "format": "cdm",
                "path": "cdm/default.manifest.cdm.json",
                "entity": "Customer",
                "primary_key": "CustomerId",
            }
        },
        table="customer",
    )
    assert result.data["CustomerId"].tolist() == ["c1", "c2"]
    assert len(result.files) == 2


def test_manifest_pointing_at_a_missing_partition(tmp_path, ingest):
    write_manifest(tmp_path / "cdm", partitions=[{"name": "p0", "location": "Customer/gone.csv"}])
    with pytest.raises(
        UserError, match=r"entity Customer lists partition .*Customer/gone\.csv, which does not exist; restore"
    ):
        ingest(
            {
                "customer": {
                    "format": "cdm",
                    "path": "cdm/default.manifest.cdm.json",
                    "entity": "Customer",
                    "primary_key": "CustomerId",
                }
            },
            table="customer",
        )


def test_dictionary_columns_are_read_as_their_values(tmp_path, ingest):
    """pandas writes a ``category`` column as an Arrow dictionary: it is read as its values, not as a category
    (whose min and max the profile could not take)."""
    frame = pd.DataFrame({"id": ["a", "b", "c"], "city": ["oslo", None, "oslo"], "tier": [3, 1, 3]})
    write_parquet(tmp_path / "t.parquet", frame.astype({"city": "category", "tier": "category"}))
    result = ingest({"t": {"format": "parquet", "path": "t.parquet", "primary_key": "id"}})
    assert result.data["city"].dtype == "string" and result.data["tier"].dtype == "Int64"
    assert result.data["city"].tolist()[::2] == ["oslo", "oslo"] and pd.isna(result.data["city"].iloc[1])
    city = next(row for row in result.profile if row["column"] == "city")
    assert (city["min"], city["max"]) == ("oslo", "oslo")


def test_timestamps_with_a_zone_keep_their_local_calendar_date_when_read_as_dates(tmp_path, ingest):
    """A birth date written as midnight Europe/Berlin is 23:00 the day before in UTC: read as a date (declared, or
    a column of local midnights only), it keeps the date where it was written; other timestamps become UTC."""
    berlin = pd.to_datetime(["1976-02-16", None, "2016-11-08"]).tz_localize("Europe/Berlin")
    frame = pd.DataFrame(
        {
            "id": ["a", "b", "c"],
            "dob": berlin,
            "day": berlin + pd.Timedelta(minutes=30),
            "at": berlin + pd.Timedelta(minutes=30),
        }
    )
    write_parquet(tmp_path / "t.parquet", frame)
    result = ingest({"t": {"format": "parquet", "path": "t.parquet", "primary_key": "id", "columns": {"day": "date"}}})
    data = result.data
    assert data["dob"].dtype == "datetime64[ns]" and data["day"].dtype == "datetime64[ns]"
    assert data["dob"].dt.strftime("%Y-%m-%d").tolist()[::2] == ["1976-02-16", "2016-11-08"]
    assert data["day"].dt.strftime("%Y-%m-%d").tolist()[::2] == ["1976-02-16", "2016-11-08"]
    assert pd.isna(data["dob"].iloc[1])
    assert str(data["at"].dtype) == "datetime64[ns, UTC]"
    assert data["at"].iloc[0] == pd.Timestamp("1976-02-15 23:30", tz="UTC")


def test_a_parquet_file_naming_a_column_twice_is_refused_naming_it(tmp_path, ingest):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from ci_pipeline.ingest.preflight import source_problems
    from ci_pipeline_tests.ingest.conftest import write_config

    columns = [pa.array(["1", "2"]), pa.array(["a@x.org", "b@x.org"]), pa.array(["c@x.org", None])]
    pq.write_table(pa.table(columns, names=["id", "email", "email"]), tmp_path / "t.parquet")
    tables = {"t": {"format": "parquet", "path": "t.parquet", "primary_key": "id"}}
    with pytest.raises(UserError, match=r"t\.parquet: the file has more than one column named email; .*distinct"):
        ingest(tables)
    problems = source_problems(write_config(tmp_path, tables))
    assert len(problems) == 1 and problems[0].startswith("sources.src.tables.t.path: ")
    assert "more than one column named email" in problems[0]


def test_a_float_column_of_whole_numbers_read_as_text_has_no_fraction(tmp_path, ingest):
    """A phone number stored as a double is 4155510033, not 4155510033.0, when the column is read as text; a column
    with a true fraction keeps it."""
    frame = pd.DataFrame({"id": ["a", "b", "c"], "phone": [4155510033.0, None, 4155510046.0], "x": [1.0, 2.5, None]})
    write_parquet(tmp_path / "t.parquet", frame)
    columns = {"phone": "string", "x": "string"}
    result = ingest({"t": {"format": "parquet", "path": "t.parquet", "primary_key": "id", "columns": columns}})
    assert result.data["phone"].tolist()[::2] == ["4155510033", "4155510046"] and pd.isna(result.data["phone"][1])
    assert result.data["x"].tolist()[:2] == ["1.0", "2.5"]
