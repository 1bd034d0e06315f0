"""The enrich stage materialised over a lake pre-filled with a timeline: enrichments, Enrichment, segments, publish."""

from __future__ import annotations

import json
import sqlite3

import dagster as dg
import pandas as pd
import pytest
import yaml

from ci_pipeline.config import ProjectConfig
from ci_pipeline.defs import enrich, publish, segments
from ci_pipeline.defs.registry import REFRESHED, produced_tables
from ci_pipeline.defs.resources import shared_resources
from ci_pipeline.defs.stages import STAGES
from ci_pipeline.enrich import EnrichmentFailed, EnrichmentInputs, EnrichmentResult, segment_fields
from ci_pipeline.enrich.registry import FACTORIES
from ci_pipeline.governance import METADATA_URL_ENV, USER_ENV, Governance, SecretResolver, open_store
from ci_pipeline.lake import Lake
from ci_pipeline.outputs import ENRICHMENT_COLUMNS, guid
from ci_pipeline.redact import register

SHOP = {
    "owner": "web",
    "tables": {
        name: {"format": "parquet", "path": name, "primary_key": key}
        for name, key in (("customers", "customer_id"), ("order_lines", "line_id"))
    },
}
CONFIG = {
    "name": "demo",
    "sources": {"shop": SHOP},
    "activities": {
        "tables": {
            "order_lines": {
                "source": "shop",
                "table": "order_lines",
                "type": "SalesOrderLine",
                "timestamp": "order_date",
                "fields": {"amount": "line_amount", "brand": "brand", "category": "category"},
                "customer": {"source": "shop", "table": "customers", "column": "customer_id"},
            },
        }
    },
    "measures": {"as_of": "2026-06-30"},
    "enrich": {
        "enrichments": {
            "brands": {"provider": "brand_affinity", "params": {"chosen": ["Voltix", "Lumera"]}},
            "interests": {"provider": "interest_affinity"},
        }
    },
    "segments": {
        "definitions": {
            "voltix_fans": {
                "rules": [{"field": "enrichment.brands.Affinity.Voltix.Level", "op": "in", "value": ["Very high"]}]
            },
            "toy_buyers": {"rules": [{"field": "enrichment.interests.Top", "op": "=", "value": "Toys"}]},
        }
    },
    "publish": {"sink": {"kind": "sqlite", "path": "sink.sqlite"}, "exports": [{"name": "warehouse"}]},
}
UPSTREAM = (["activities", "activity_facts"], ["unify", "customer_profile"])
BRANDS = {"Voltix": "Electronics", "Lumera": "Toys", "Casa": "Home"}


def timeline(customers: int = 40) -> pd.DataFrame:
    """Customer i buys mostly brand i % 3, once a month for i % 5 + 1 months (and customer 0 never)."""
    rows = []
    names = list(BRANDS)
    for i in range(1, customers):
        for month in range(i % 5 + 1):
            brand = names[i % 3] if month % 4 else names[(i + 1) % 3]
            rows.append((f"C{i:03d}", f"2026-{6 - month:02d}-15", brand, 10.0 + i))
    frame = pd.DataFrame(rows, columns=["CustomerId", "date", "brand", "amount"])
    return pd.DataFrame(
        {
            "ActivityId": pd.array([f"l{i}" for i in range(len(frame))], dtype="string"),
            "CustomerId": frame["CustomerId"].astype("string"),
            "Activity": pd.array(["order_lines"] * len(frame), dtype="string"),
            "ActivityType": pd.array(["SalesOrderLine"] * len(frame), dtype="string"),
            "ActivityTimeStamp": pd.to_datetime(frame["date"], utc=True),
            "amount": frame["amount"],
            "brand": frame["brand"].astype("string"),
            "category": frame["brand"].map(BRANDS).astype("string"),
        }
    )


def prefill(lake: Lake, customers: int = 40) -> None:
    lake.write_parquet("ci_pipeline/activities/activity_facts.parquet", timeline(customers))
    ids = [f"C{i:03d}" for i in range(customers)]
    people = pd.DataFrame({"CustomerId": ids, "Gender": ["f", "m"] * (customers // 2)}).astype("string")
    lake.write_parquet("ci_pipeline/unify/customer_profile.parquet", people)


def project(tmp_path, **changes) -> ProjectConfig:
    raw = json.loads(json.dumps(CONFIG))
    raw.update(changes)
    raw["lake"] = {"url": str(tmp_path / "lake")}
    # The run's resources read the configuration file again (governance of the run).
    (tmp_path / "ci_pipeline.yaml").write_text(yaml.safe_dump(raw), encoding="utf-8")
    config = ProjectConfig.model_validate(raw)
    config._path = tmp_path / "ci_pipeline.yaml"
    return config


def materialize(config: ProjectConfig, instance=None, tags=None):
    produced = {t: k for t, k in produced_tables(config, STAGES).items() if t in ("Enrichment", "SegmentMembership")}
    defs = dg.Definitions.merge(enrich.build(config), segments.build(config), publish.build(config, produced))
    assets = [a for a in defs.assets if not isinstance(a, dg.SourceAsset)]
    return dg.materialize(
        [*assets, *(dg.SourceAsset(key=k) for k in UPSTREAM)],
        resources=shared_resources(config),
        selection=REFRESHED,
        instance=instance,
        tags=tags,
    )


def checks(result) -> dict:
    return {(c.asset_key.to_user_string(), c.check_name): c for c in result.get_asset_check_evaluations()}


def sink_types(tmp_path) -> list[str]:
    """The EnrichmentType of every row of the sink's Enrichment table."""
    with sqlite3.connect(tmp_path / "sink.sqlite") as db:
        return [r[0] for r in db.execute('SELECT "msdynci_enrichmenttype" FROM "msdynci_enrichment"')]


@pytest.fixture
def lake(tmp_path) -> Lake:
    lake = Lake.local(tmp_path / "lake")
    prefill(lake)
    return lake


def test_a_refresh_publishes_the_affinities_to_enrichment_and_segments_use_their_fields(tmp_path, lake):
    result = materialize(project(tmp_path))
    table = lake.read_parquet("ci_pipeline/enrich/enrichment.parquet")
    assert list(table.columns) == ENRICHMENT_COLUMNS
    assert len(table) == 2 * 40  # every profile customer, customer C000 without purchases included
    assert set(table["EnrichmentType"]) == {"BrandAffinity", "InterestAffinity"}
    assert set(table["EnrichmentProvider"]) == {"demo"}
    row = table[(table["CustomerId"] == "C000") & (table["EnrichmentType"] == "BrandAffinity")].iloc[0]
    assert row["msdynci_identifier"] == "demo|BrandAffinity|C000"
    assert row["msdynci_enrichmentid"] == guid("demo|BrandAffinity|C000")
    assert json.loads(row["Values"])["Prior"] is True
    assert len(lake.read_parquet("ci_pipeline/enrich/brands.parquet")) == 40
    # The sink and the export hold the same rows.
    assert len(sink_types(tmp_path)) == 80
    assert list((tmp_path / "lake" / "exports" / "warehouse" / "Enrichment").rglob("*.csv"))
    # Segments read enrichment.<name>.<field>.
    fields = lake.read_parquet("ci_pipeline/enrich/enrichment_fields.parquet").set_index("CustomerId")
    membership = lake.read_parquet("ci_pipeline/segments/segment_membership.parquet")
    members = {c: json.loads(s) for c, s in zip(membership["CustomerId"], membership["Segments"], strict=True)}
    fans = {c for c, s in members.items() if "voltix_fans" in s}
    assert fans == set(fields.index[fields["brands.Affinity.Voltix.Level"] == "Very high"]) and fans
    toys = {c for c, s in members.items() if "toy_buyers" in s}
    assert toys == set(fields.index[fields["interests.Top"] == "Toys"]) and toys
    assert all(c.passed for c in checks(result).values() if c.asset_key.path[0] == "enrich")
    metadata = result.asset_materializations_for_node("run_enrichments")
    by_key = {m.asset_key.to_user_string(): m.metadata for m in metadata}
    assert by_key["enrich/brands"]["customers_on_prior"].value >= 1
    enrichment = by_key["enrich/enrichment"]
    assert [row.data for row in enrichment["status"].records] == [
        {"enrichment": "brands", "status": "succeeded"},
        {"enrichment": "interests", "status": "succeeded"},
    ]
    per_type = {(r.data["provider"], r.data["type"]): r.data["rows"] for r in enrichment["rows_per_type"].records}
    assert per_type and all(enrichment[f"rows {p}/{t}"].value == n for (p, t), n in per_type.items())


class Exploding:
    """A provider whose service is down: it raises with a secret in its message."""

    name = "acme"
    needs = frozenset()

    def enrich(self, inputs):
        raise ConnectionError("acme refused the key sk-live-123456 at https://acme.example/v1")


class Working:
    name = "acme"
    needs = frozenset()

    def enrich(self, inputs):
        ids = inputs.profiles["CustomerId"].astype("string")
        values = pd.DataFrame({"CustomerId": ids, "EnrichmentType": "Household", "Values": [{"Size": 3}] * len(ids)})
        return EnrichmentResult(values, {"returned": len(ids)})


def test_a_provider_that_fails_keeps_its_previous_output_and_the_rest_of_the_run_goes_on(tmp_path, lake, monkeypatch):
    enrichments = {**CONFIG["enrich"]["enrichments"], "household": {"provider": "acme"}}
    config = project(tmp_path, enrich={"enrichments": enrichments})
    monkeypatch.setitem(FACTORIES, "acme", lambda params, context: Working())
    materialize(config)
    before = lake.read_parquet("ci_pipeline/enrich/household.parquet")
    assert len(before) == 40 and json.loads(before["Values"].iloc[0]) == {"Size": 3}

    register("sk-live-123456")
    monkeypatch.setitem(FACTORIES, "acme", lambda params, context: Exploding())
    result = materialize(config)
    check = checks(result)[("enrich/household", "provider_succeeded")]
    assert not check.passed and check.severity == dg.AssetCheckSeverity.ERROR
    message = check.metadata["error"].text
    assert "enrich.enrichments.household: provider 'acme' failed: ConnectionError" in message
    assert "sk-live-123456" not in message
    assert check.metadata["kept"].text == "its last output stays published"
    # The run's summary prints the description after the failed check's name.
    assert check.description == f"{message}; its last output stays published"
    # Its table is untouched, its rows are still in Enrichment and the sink, the others were refreshed.
    pd.testing.assert_frame_equal(lake.read_parquet("ci_pipeline/enrich/household.parquet"), before)
    table = lake.read_parquet("ci_pipeline/enrich/enrichment.parquet")
    assert (table["EnrichmentType"] == "Household").sum() == 40
    assert sink_types(tmp_path).count("Household") == 40
    assert checks(result)[("enrich/brands", "provider_succeeded")].passed
    assert lake.exists("ci_pipeline/segments/segment_membership.parquet")
    assert result.success


def test_a_provider_that_fails_on_its_first_run_publishes_nothing_for_it(tmp_path, lake, monkeypatch):
    enrichments = {"household": {"provider": "acme"}, "brands": {"provider": "brand_affinity"}}
    segments_section = {
        "definitions": {"big": {"rules": [{"field": "enrichment.household.Size", "op": ">", "value": 2}]}}
    }
    config = project(tmp_path, enrich={"enrichments": enrichments}, segments=segments_section)
    monkeypatch.setitem(FACTORIES, "acme", lambda params, context: Exploding())
    result = materialize(config)
    assert not checks(result)[("enrich/household", "provider_succeeded")].passed
    table = lake.read_parquet("ci_pipeline/enrich/enrichment.parquet")
    assert set(table["EnrichmentType"]) == {"BrandAffinity"}
    # A segment on its fields selects no one rather than failing every segment.
    membership = lake.read_parquet("ci_pipeline/segments/segment_membership.parquet")
    assert membership.empty
    assert not checks(result)[("segments/segment_membership", "no_empty_segments")].passed


def test_an_inactive_enrichment_is_skipped_and_shown_as_skipped_not_failed(tmp_path, lake):
    config = project(tmp_path)
    materialize(config)
    kept = lake.read_parquet("ci_pipeline/enrich/interests.parquet")
    enrichments = json.loads(json.dumps(CONFIG["enrich"]["enrichments"]))
    enrichments["interests"]["active"] = False
    # New purchases arrive; the inactive enrichment does not see them.
    prefill(lake, customers=50)
    result = materialize(project(tmp_path, enrich={"enrichments": enrichments}))
    check = checks(result)[("enrich/interests", "provider_succeeded")]
    assert check.passed and check.metadata["skipped"].text == "inactive in the configuration"
    pd.testing.assert_frame_equal(lake.read_parquet("ci_pipeline/enrich/interests.parquet"), kept)
    status = {
        m.asset_key.to_user_string(): m.metadata for m in result.asset_materializations_for_node("run_enrichments")
    }
    outcome = {row.data["enrichment"]: row.data["status"] for row in status["enrich/enrichment"]["status"].records}
    assert outcome == {"brands": "succeeded", "interests": "skipped"}
    assert "enrich/interests" not in status
    assert len(lake.read_parquet("ci_pipeline/enrich/brands.parquet")) == 50
    table = lake.read_parquet("ci_pipeline/enrich/enrichment.parquet")
    assert (table["EnrichmentType"] == "InterestAffinity").sum() == 40


def test_no_brand_field_on_the_timeline_fails_that_enrichment_with_the_fix(tmp_path, lake):
    lake.write_parquet("ci_pipeline/activities/activity_facts.parquet", timeline().drop(columns="brand"))
    result = materialize(project(tmp_path))
    check = checks(result)[("enrich/brands", "provider_succeeded")]
    assert not check.passed
    assert "activities.tables.order_lines.fields (brand: <column>)" in check.metadata["error"].text
    assert checks(result)[("enrich/interests", "provider_succeeded")].passed


def test_merged_customers_leave_the_kept_output_of_a_failed_enrichment(tmp_path, lake, monkeypatch):
    config = project(tmp_path, enrich={"enrichments": {"household": {"provider": "acme"}}}, segments={})
    monkeypatch.setitem(FACTORIES, "acme", lambda params, context: Working())
    materialize(config)
    people = lake.read_parquet("ci_pipeline/unify/customer_profile.parquet")
    lake.write_parquet("ci_pipeline/unify/customer_profile.parquet", people[people["CustomerId"] != "C001"])
    monkeypatch.setitem(FACTORIES, "acme", lambda params, context: Exploding())
    materialize(config)
    table = lake.read_parquet("ci_pipeline/enrich/enrichment.parquet")
    assert len(table) == 39 and "C001" not in set(table["CustomerId"])


def test_a_provider_raising_enrichment_failed_shows_its_own_message(tmp_path, lake, monkeypatch):
    class Refusing(Working):
        def enrich(self, inputs):
            raise EnrichmentFailed("enrich.enrichments.household: the provider's quota is used up; run tomorrow")

    config = project(tmp_path, enrich={"enrichments": {"household": {"provider": "acme"}}}, segments={})
    monkeypatch.setitem(FACTORIES, "acme", lambda params, context: Refusing())
    result = materialize(config)
    check = checks(result)[("enrich/household", "provider_succeeded")]
    assert check.metadata["error"].text == "enrich.enrichments.household: the provider's quota is used up; run tomorrow"
    assert check.metadata["kept"].text == "it has no earlier output"


def test_no_enrichments_means_no_enrich_stage(tmp_path):
    config = project(tmp_path, enrich={})
    assert not enrich.build(config).assets
    assert "Enrichment" not in produced_tables(config, STAGES)


def governed_acme(tmp_path, monkeypatch, principal: str | None = None) -> tuple[Governance, ProjectConfig, list]:
    """An initialised environment (root its admin, ``principal`` the service principal) with an http-enrichment
    connection ``acme_api`` that the enrichment ``household`` names, and a provider recording the URL it was given
    (the list returned)."""
    url = f"sqlite:///{tmp_path / 'metadata.sqlite'}"
    monkeypatch.setenv(METADATA_URL_ENV, url)
    monkeypatch.setenv(USER_ENV, "root")
    monkeypatch.setenv("ACME_KEY", "k-123")
    admin = Governance(open_store(url), "root", SecretResolver([tmp_path]))
    admin.init({}, principal)
    settings = {"url": "https://acme.example/v1", "api_key": "env:ACME_KEY"}
    admin.add_connection("acme_api", "http-enrichment", settings, consent=True)
    config = project(
        tmp_path, enrich={"enrichments": {"household": {"provider": "acme", "connection": "acme_api"}}}, segments={}
    )
    seen = []

    def factory(params, context):
        seen.append(context.resolve_connection(context.connection)["url"])
        return Working()

    monkeypatch.setitem(FACTORIES, "acme", factory)
    return admin, config, seen


def test_an_enrichment_whose_connection_was_removed_is_skipped_and_keeps_its_output(tmp_path, lake, monkeypatch):
    admin, config, seen = governed_acme(tmp_path, monkeypatch)
    admin.bind("enrichment", "household", "acme_api")
    assert checks(materialize(config))[("enrich/household", "provider_succeeded")].passed
    assert seen == ["https://acme.example/v1"]

    admin.remove_connection("acme_api", detach=True)
    result = materialize(config)
    check = checks(result)[("enrich/household", "provider_succeeded")]
    assert check.passed and check.metadata["skipped"].text == "its connection binding is inactive"
    assert len(seen) == 1
    assert (lake.read_parquet("ci_pipeline/enrich/enrichment.parquet")["EnrichmentType"] == "Household").sum() == 40


def test_a_scheduled_run_uses_an_enrichment_connection_as_the_service_principal(tmp_path, lake, monkeypatch):
    """A schedule or sensor acts as governance.service_principal: a connection not shared with it sends no
    customer to the provider, whoever the process's user is (here the admin)."""
    admin, config, seen = governed_acme(tmp_path, monkeypatch, "ci-pipeline-scheduler")
    nightly = {"dagster/schedule_name": "nightly"}
    check = checks(materialize(config, tags=nightly))[("enrich/household", "provider_succeeded")]
    assert not check.passed and seen == []
    assert (
        "connection 'acme_api' is not shared with 'ci-pipeline-scheduler', who runs it; an admin shares it with "
        "`ci-pipeline connections share acme_api ci-pipeline-scheduler`"
    ) in check.description
    admin.share("acme_api", "ci-pipeline-scheduler")
    assert checks(materialize(config, tags=nightly))[("enrich/household", "provider_succeeded")].passed
    assert seen == ["https://acme.example/v1"]


def _with_contact_details(lake: Lake) -> pd.DataFrame:
    profile = lake.read_parquet("ci_pipeline/unify/customer_profile.parquet")
    n = len(profile)
    profile["Email"] = pd.array([f"c{i}@gmail.com" if i % 4 else f"info@shop{i}.example" for i in range(n)], "string")
    profile["Address1"] = pd.array([f"{i} north main street" for i in range(n)], "string")
    profile["City"] = pd.array(["springfield"] * n, "string")
    profile["PostalCode"] = pd.array(["2134"] * n, "string")
    lake.write_parquet("ci_pipeline/unify/customer_profile.parquet", profile)
    return profile


def test_the_enrichments_of_the_profile_alone_run_in_their_own_step_and_reach_enrichment_and_segments(tmp_path, lake):
    profile = _with_contact_details(lake)
    enrichments = {**CONFIG["enrich"]["enrichments"], "mail": {"provider": "email"}, "places": {"provider": "address"}}
    config = project(tmp_path, enrich={"enrichments": enrichments})
    result = materialize(config)
    early = {m.asset_key.to_user_string() for m in result.asset_materializations_for_node("enrich_profiles")}
    assert early == {"enrich/mail", "enrich/places", "enrich/profile_enrichments"}
    table = lake.read_parquet("ci_pipeline/enrich/enrichment.parquet")
    assert table["EnrichmentType"].value_counts().to_dict() == {
        "BrandAffinity": 40,
        "InterestAffinity": 40,
        "Email": 40,
        "Address": 40,
    }
    # The fields segments read are the ones the providers give, though the last step reads them from the rows.
    fields = lake.read_parquet("ci_pipeline/enrich/enrichment_fields.parquet")
    for name, build in (("mail", FACTORIES["email"]), ("places", FACTORIES["address"])):
        own = build({}, None).enrich(EnrichmentInputs(profiles=profile)).fields
        expected = segment_fields({name: own})
        lake.write_parquet("expected.parquet", expected)
        pd.testing.assert_frame_equal(fields[list(expected.columns)], lake.read_parquet("expected.parquet"))
    status = {
        m.asset_key.to_user_string(): m.metadata for m in result.asset_materializations_for_node("run_enrichments")
    }
    assert [row.data for row in status["enrich/enrichment"]["status"].records] == [
        {"enrichment": name, "status": "succeeded"} for name in ("brands", "interests", "mail", "places")
    ]

    # The e-mail enrichment fails: its last rows stay in Enrichment and the last step says it failed.
    before = lake.read_parquet("ci_pipeline/enrich/mail.parquet")
    broken = {**enrichments, "mail": {"provider": "email", "params": {"column": "WorkEmail"}}}
    result = materialize(project(tmp_path, enrich={"enrichments": broken}))
    check = checks(result)[("enrich/mail", "provider_succeeded")]
    assert not check.passed and "WorkEmail" in check.metadata["error"].text
    pd.testing.assert_frame_equal(lake.read_parquet("ci_pipeline/enrich/mail.parquet"), before)
    assert (lake.read_parquet("ci_pipeline/enrich/enrichment.parquet")["EnrichmentType"] == "Email").sum() == 40
    status = {
        m.asset_key.to_user_string(): m.metadata for m in result.asset_materializations_for_node("run_enrichments")
    }
    outcome = {row.data["enrichment"]: row.data["status"] for row in status["enrich/enrichment"]["status"].records}
    assert outcome == {"brands": "succeeded", "interests": "succeeded", "mail": "failed", "places": "succeeded"}


def test_a_configuration_of_profile_enrichments_alone_still_has_the_step_that_builds_enrichment():
    config = ProjectConfig.model_validate({**CONFIG, "enrich": {"enrichments": {"mail": {"provider": "email"}}}})
    defs = enrich.build(config)
    nodes = sorted(a.node_def.name for a in defs.assets)
    assert nodes == ["enrich_profiles", "run_enrichments"]
