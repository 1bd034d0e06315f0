"""CDM exports on a local folder and Azurite: layout, parts, metadata after data, retention, read back with Microsoft's
CDM SDK, and SQL over them with DuckDB."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest

from ci_pipeline import outputs
from ci_pipeline.errors import UserError
from ci_pipeline.export import StoredTable, cdm, query, read_export, write_export, write_table
from ci_pipeline.lake import Lake

T0 = datetime(2026, 6, 30, 12, 5, tzinfo=UTC)


def tables() -> dict[str, pd.DataFrame]:
    profile = outputs.build(
        "CustomerProfile", pd.DataFrame({"CustomerId": ["C1", "C2", "C3"], "FullName": ['Ann "A", B', None, "Cy"]})
    )
    activity = outputs.build(
        "UnifiedActivity",
        pd.DataFrame(
            {
                "CustomerId": ["C1", "C2"],
                "ActivityId": ["orders|1", "orders|2"],
                "SourceEntityName": ["orders"] * 2,
                "SourceActivityId": ["1", "2"],
                "ActivityType": ["SalesOrder"] * 2,
                "ActivityTimeStamp": ["2026-06-30T12:00:00Z", "2026-01-02T03:04:05Z"],
                "SemanticData": [{"amount": 10.5}, {"amount": 3}],
            }
        ),
    )
    return {"CustomerProfile": profile, "UnifiedActivity": activity, "Enrichment": outputs.empty_table("Enrichment")}


def test_csv_export_layout_parts_and_model_json(tmp_path):
    lake = Lake.local(tmp_path)
    result = write_export(lake, "warehouse", tables(), T0, rows_per_part=2)
    files = lake.find("exports/warehouse")
    assert "exports/warehouse/CustomerProfile/2026/06/30/1205/CustomerProfile_1.csv" in files
    assert "exports/warehouse/CustomerProfile/2026/06/30/1205/CustomerProfile_2.csv" in files
    assert result.tables["CustomerProfile"] == {
        "rows": 3,
        "parts": 2,
        "bytes": result.tables["CustomerProfile"]["bytes"],
    }
    first = lake.read_bytes("exports/warehouse/CustomerProfile/2026/06/30/1205/CustomerProfile_1.csv").decode()
    assert first == '"C1","Ann ""A"", B"\n"C2",""\n'
    model = json.loads(lake.read_bytes("exports/warehouse/model.json"))
    entity = {e["name"]: e for e in model["entities"]}["UnifiedActivity"]
    types = {a["name"]: a["dataType"] for a in entity["attributes"]}
    assert types["ActivityTimeStamp"] == "dateTime" and types["msdynci_unifiedactivityid"] == "guid"
    # A plain absolute path: what the CDM SDK's local adapter resolves (a file:// URL no adapter understands).
    assert entity["partitions"][0]["location"] == str(tmp_path) + (
        "/exports/warehouse/UnifiedActivity/2026/06/30/1205/UnifiedActivity_1.csv"
    )
    # The metadata is the last thing written: every data file is older than or as old as model.json.
    newest_data = max(lake.info(f)["mtime"] for f in files if f.endswith(".csv"))
    assert lake.info("exports/warehouse/model.json")["mtime"] >= newest_data


def test_retention_keeps_n_snapshots_and_rerun_in_same_minute_replaces_parts(tmp_path):
    lake = Lake.local(tmp_path)
    for minutes in range(4):
        write_export(lake, "wh", tables(), T0 + timedelta(minutes=minutes), rows_per_part=1, retention=2)
    snapshots = {f.split("/")[6] for f in lake.find("exports/wh/CustomerProfile")}
    assert snapshots == {"1207", "1208"}
    # Same run again with bigger parts: the extra part files of the earlier attempt are removed.
    result = write_export(lake, "wh", tables(), T0 + timedelta(minutes=3), rows_per_part=10, retention=2)
    assert [f for f in lake.find("exports/wh/CustomerProfile") if "/1208/" in f] == [
        "exports/wh/CustomerProfile/2026/06/30/1208/CustomerProfile_1.csv"
    ]
    assert result.removed_snapshots == []
    assert len(query(lake, "SELECT * FROM CustomerProfile", ["wh"])) == 3


def test_sql_over_csv_and_parquet_exports(tmp_path):
    lake = Lake.local(tmp_path)
    write_export(lake, "csvwh", tables(), T0, rows_per_part=1)
    write_export(lake, "pqwh", tables(), T0, fmt="parquet", rows_per_part=1)
    for name in ["csvwh", "pqwh"]:
        profile = query(lake, "SELECT * FROM CustomerProfile ORDER BY CustomerId", [name])
        assert profile["CustomerId"].tolist() == ["C1", "C2", "C3"]
        assert profile["FullName"].tolist()[0] == 'Ann "A", B'
        stamp = query(lake, "SELECT max(ActivityTimeStamp) AS t FROM UnifiedActivity", [name])["t"].iloc[0]
        assert pd.Timestamp(stamp) == pd.Timestamp("2026-06-30T12:00:00Z")
        assert query(lake, "SELECT count(*) AS n FROM Enrichment", [name])["n"].iloc[0] == 0
    both = query(
        lake,
        "SELECT count(*) AS n FROM csvwh.CustomerProfile JOIN pqwh.CustomerProfile USING (CustomerId)",
        ["csvwh", "pqwh"],
    )
    assert both["n"].iloc[0] == 3
    # An export not written yet leaves the rest readable, and a query of it says it is not written.
    assert query(lake, "SELECT 1 AS one", ["missing"])["one"].tolist() == [1]
    with pytest.raises(UserError, match="export\\(s\\) missing not written yet"):
        query(lake, "SELECT * FROM missing.CustomerProfile", ["missing"])
    with pytest.raises(UserError, match="sql: .*the views are"):
        query(lake, "SELECT * FROM Nope", ["csvwh"])


def test_a_date_column_of_the_profile_is_a_date_in_both_exports_their_metadata_and_the_sink(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from ci_pipeline.dataverse.prepare import prepare
    from ci_pipeline.unify.records import typed_dates

    written = pd.DataFrame({"CustomerId": ["C1", "C2"], "BirthDate": ["1980-01-02", "1843-00-00"]}).astype("string")
    lake = Lake.local(tmp_path)
    lake.write_parquet("ci_pipeline/unify/customer_profile.parquet", typed_dates(written))
    stored = StoredTable(lake, "ci_pipeline/unify/customer_profile.parquet")
    for source in (stored, stored.frame("CustomerProfile")):
        write_export(lake, "csvwh", {"CustomerProfile": source}, T0)
        write_export(lake, "pqwh", {"CustomerProfile": source}, T0, fmt="parquet")
        model = json.loads(lake.read_bytes("exports/csvwh/model.json"))["entities"][0]
        assert [a["dataType"] for a in model["attributes"]] == ["string", "date", "string"]
        csv = lake.read_bytes(read_export(lake, "csvwh")[0].files[0]).decode()
        assert csv == '"C1","1980-01-02",""\n"C2","","1843"\n'
        definition = json.loads(lake.read_bytes("exports/pqwh/CustomerProfile.cdm.json"))["definitions"][0]
        assert [a["dataType"] for a in definition["hasAttributes"]] == ["string", "date", "string"]
        part = pq.read_table(tmp_path / read_export(lake, "pqwh")[0].files[0])
        assert part.schema.field("BirthDate").type == pa.date32()
    assert query(lake, "SELECT BirthDate FROM csvwh.CustomerProfile WHERE BirthDate < DATE '1990-01-01'", ["csvwh"])[
        "BirthDate"
    ].astype("string").tolist() == ["1980-01-02"]
    # The sink (and the Web API's payload) gets the date as Dataverse takes a date-only value: YYYY-MM-DD.
    rows = pa.Table.from_batches(list(prepare("CustomerProfile", stored.frame("CustomerProfile")).batches()))
    by_id = {r["msdynci_customerid"]: r for r in rows.to_pylist()}
    assert (by_id["C1"]["msdynci_birthdate"], by_id["C1"]["msdynci_birthdatetext"]) == ("1980-01-02", None)
    assert (by_id["C2"]["msdynci_birthdate"], by_id["C2"]["msdynci_birthdatetext"]) == (None, "1843")


def _sdk_read(folder, document):
    import warnings

    from cdm.objectmodel import CdmCorpusDefinition
    from cdm.storage import LocalAdapter

    async def read():
        corpus = CdmCorpusDefinition()
        corpus.storage.mount("local", LocalAdapter(root=str(folder)))
        corpus.storage.default_namespace = "local"
        manifest = await corpus.fetch_object_async(f"local:/{document}")
        assert manifest is not None, f"the CDM SDK could not load {document}"
        found = {}
        for entity in manifest.entities:
            definition = await corpus.fetch_object_async(
                corpus.storage.create_absolute_corpus_path(entity.entity_path, manifest)
            )
            found[entity.entity_name] = (
                [a.name for a in definition.attributes],
                [p.location for p in entity.data_partitions],
            )
        return found

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return asyncio.run(read())


@pytest.mark.slow
def test_cdm_sdk_reads_model_json_and_manifest(tmp_path):
    lake = Lake.local(tmp_path)
    write_export(lake, "csvwh", tables(), T0, rows_per_part=2)
    write_export(lake, "pqwh", tables(), T0, fmt="parquet", rows_per_part=2)
    model = _sdk_read(tmp_path / "exports" / "csvwh", "model.json")
    assert set(model) == {"CustomerProfile", "UnifiedActivity", "Enrichment"}
    assert model["CustomerProfile"][0] == ["CustomerId", "FullName"]
    assert model["UnifiedActivity"][0] == outputs.UNIFIED_ACTIVITY_COLUMNS
    # The partitions as the SDK resolved them with its own local adapter (relative to the folder it mounted).
    assert model["CustomerProfile"][1] == [
        "CustomerProfile/2026/06/30/1205/CustomerProfile_1.csv",
        "CustomerProfile/2026/06/30/1205/CustomerProfile_2.csv",
    ]
    manifest = _sdk_read(tmp_path / "exports" / "pqwh", "default.manifest.cdm.json")
    assert manifest["Enrichment"][0] == outputs.ENRICHMENT_COLUMNS
    assert manifest["CustomerProfile"][1] == [
        "CustomerProfile/2026/06/30/1205/CustomerProfile_1.parquet",
        "CustomerProfile/2026/06/30/1205/CustomerProfile_2.parquet",
    ]


@pytest.mark.slow
def test_export_and_sql_on_azurite(azure_container):
    import os

    lake = Lake.from_url(f"abfs://{azure_container}/lake", {"connection_string": os.environ["AZURE_TEST_CONNECTION"]})
    for minutes in range(3):
        write_export(lake, "wh", tables(), T0 + timedelta(minutes=minutes), rows_per_part=2, retention=2)
    write_export(lake, "pq", tables(), T0, fmt="parquet")
    snapshots = {f.split("/")[6] for f in lake.find("exports/wh/CustomerProfile")}
    assert snapshots == {"1206", "1207"}
    entities = {e.name: e for e in read_export(lake, "wh")}
    assert entities["CustomerProfile"].files == [
        "exports/wh/CustomerProfile/2026/06/30/1207/CustomerProfile_1.csv",
        "exports/wh/CustomerProfile/2026/06/30/1207/CustomerProfile_2.csv",
    ]
    model = json.loads(lake.read_bytes("exports/wh/model.json"))
    assert model["entities"][0]["partitions"][0]["location"].startswith("http://127.0.0.1:")
    result = query(lake, "SELECT CustomerId FROM wh.CustomerProfile ORDER BY 1", ["wh", "pq"], default="wh")
    assert result["CustomerId"].tolist() == ["C1", "C2", "C3"]
    assert query(lake, "SELECT count(*) AS n FROM pq.UnifiedActivity", ["wh", "pq"])["n"].iloc[0] == 2


def test_an_export_written_with_a_sas_token_keeps_it_out_of_its_manifest(azure_container, azurite):
    """A client made from a SAS token carries it in its URL: the manifest's locations are the account's URL alone,
    since every reader of the export reads them."""
    from datetime import UTC, datetime

    from azure.storage.blob import ContainerSasPermissions, generate_container_sas

    from ci_pipeline_tests.conftest import AZURITE_KEY

    expiry = datetime.now(UTC) + timedelta(hours=1)
    sas = generate_container_sas(
        "devstoreaccount1",
        azure_container,
        AZURITE_KEY,
        permission=ContainerSasPermissions.from_string("racwdl"),
        expiry=expiry,
    )
    endpoint = f"http://127.0.0.1:{azurite['port']}/devstoreaccount1"
    connection = f"BlobEndpoint={endpoint};SharedAccessSignature={sas}"
    lake = Lake.from_url(f"abfs://{azure_container}/lake", {"connection_string": connection})
    write_export(lake, "wh", tables(), T0)
    text = lake.read_bytes("exports/wh/model.json").decode()
    location = json.loads(text)["entities"][0]["partitions"][0]["location"]
    assert location.startswith(f"{endpoint}/{azure_container}/lake/exports/wh/"), location
    assert "sig=" not in text and sas.split("sig=")[1].split("&")[0] not in text


@pytest.mark.slow
def test_unreachable_lake_gives_a_clear_error():
    from ci_pipeline.errors import StorageError
    from ci_pipeline_tests.conftest import AZURITE_KEY, free_port

    dead = (
        "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;"
        f"AccountKey={AZURITE_KEY};BlobEndpoint=http://127.0.0.1:{free_port()}/devstoreaccount1;"
    )
    with pytest.raises(StorageError, match="unreachable"):
        write_export(Lake.from_url("abfs://nowhere/lake", {"connection_string": dead}), "wh", tables(), T0)


def test_a_table_written_ahead_on_azurite_is_taken_until_its_stored_file_changes(azure_container):
    import os

    lake = Lake.from_url(f"abfs://{azure_container}/ahead", {"connection_string": os.environ["AZURE_TEST_CONNECTION"]})
    lake.write_parquet("ci_pipeline/unify/customer_profile.parquet", tables()["CustomerProfile"])
    stored = StoredTable(lake, "ci_pipeline/unify/customer_profile.parquet")
    record = write_table(lake, "wh", "CustomerProfile", stored, T0, rows_per_part=2)
    assert lake.exists(f"exports/wh/CustomerProfile/2026/06/30/1205/{cdm.TABLE_RECORD}")
    first = write_export(lake, "wh", {"CustomerProfile": stored}, T0, rows_per_part=2)
    assert first.taken == ["CustomerProfile"] and [e.files for e in read_export(lake, "wh")] == [
        [f"exports/wh/{f}" for f in record["files"]]
    ]
    # The same bytes written again are a new blob (a new ETag): the export writes the table itself.
    lake.write_parquet("ci_pipeline/unify/customer_profile.parquet", tables()["CustomerProfile"].iloc[:1])
    again = write_export(lake, "wh", {"CustomerProfile": stored}, T0, rows_per_part=2)
    assert again.taken == [] and again.tables["CustomerProfile"]["rows"] == 1
    assert query(lake, "SELECT count(*) AS n FROM CustomerProfile", ["wh"])["n"].iloc[0] == 1
