"""The one-to-one rules between a pipeline environment, its storage account and a Dataverse environment, kept by a
marker row in the sink: the embedded SQLite file and the Web API (against the loopback server)."""

from __future__ import annotations

import pytest
import yaml

from ci_pipeline.config import load_config
from ci_pipeline.dataverse.attachment import AttachmentClaim, AttachmentError
from ci_pipeline.dataverse.loopback import LoopbackDataverse
from ci_pipeline.dataverse.sqlite import SqliteSink
from ci_pipeline.dataverse.webapi import WebApiSink
from ci_pipeline.errors import ConfigError
from ci_pipeline_tests.publish.test_webapi import client_for

ONE = AttachmentClaim("env-one", "acct1")


@pytest.fixture
def sqlite_sink(tmp_path):
    def open_sink():
        return SqliteSink(tmp_path / "sink.sqlite")

    return open_sink


@pytest.fixture
def webapi_sink():
    with LoopbackDataverse() as server:

        def open_sink():
            return WebApiSink(client_for(server))

        yield open_sink


@pytest.fixture(params=["sqlite", "webapi"])
def open_sink(request, sqlite_sink, webapi_sink):
    return sqlite_sink if request.param == "sqlite" else webapi_sink


def test_the_first_claim_writes_the_marker_and_the_same_one_is_accepted_again(open_sink):
    with open_sink() as sink:
        sink.claim(ONE)
    with open_sink() as sink:
        sink.claim(ONE)


def test_another_pipeline_environment_is_refused_with_how_to_detach(open_sink):
    with open_sink() as sink:
        sink.claim(ONE)
    with open_sink() as sink, pytest.raises(AttachmentError) as refused:
        sink.claim(AttachmentClaim("env-two", "acct1"))
    message = str(refused.value)
    assert "already attached to another environment (pipeline environment env-one" in message
    assert "ci-pipeline connections detach-dataverse" in message


def test_another_storage_account_is_refused(open_sink):
    with open_sink() as sink:
        sink.claim(ONE)
    with open_sink() as sink, pytest.raises(AttachmentError, match="connected to storage account 'acct1'; it refuses"):
        sink.claim(AttachmentClaim("env-one", "acct2"))


def test_releasing_the_marker_lets_another_environment_attach(open_sink):
    with open_sink() as sink:
        sink.claim(ONE)
        assert not sink.release("env-two")
        assert sink.release("env-one")
    with open_sink() as sink:
        sink.claim(AttachmentClaim("env-two", "acct2"))


def test_different_regions_are_refused_naming_both_keys(open_sink):
    with open_sink() as sink, pytest.raises(AttachmentError) as refused:
        sink.claim(AttachmentClaim("env-one", "acct1", lake_region="westeurope", dataverse_region="northeurope"))
    assert "publish.sink.region 'northeurope' and lake.region 'westeurope' differ" in str(refused.value)


def test_the_sqlite_marker_is_not_a_published_table(sqlite_sink):
    with sqlite_sink() as sink:
        sink.claim(ONE)
        assert sink.tables() == [] and sink.usage() == {}


def test_the_configuration_refuses_different_regions_naming_both_keys(tmp_path):
    config = {
        "lake": {"url": "lake", "region": "westeurope"},
        "sources": {"crm": {"owner": "a", "tables": {"t": {"format": "csv", "path": "t.csv", "primary_key": "id"}}}},
        "publish": {"sink": {"kind": "sqlite", "region": "northeurope"}},
    }
    (tmp_path / "ci_pipeline.yaml").write_text(yaml.safe_dump(config))
    with pytest.raises(ConfigError, match="publish.sink.region: 'northeurope' differs from lake.region 'westeurope'"):
        load_config(tmp_path / "ci_pipeline.yaml")
