"""The redaction layer: resolved secrets and well-known secret shapes never survive into text."""

from __future__ import annotations

import logging

import pytest

from ci_pipeline.config.base import resolve_secret
from ci_pipeline.redact import (
    MASK,
    RedactingFilter,
    clipped,
    install_log_redaction,
    redact,
    redact_value,
    register,
)


def test_a_secret_resolved_from_env_is_masked_with_its_encoded_forms(monkeypatch):
    monkeypatch.setenv("REDACT_TEST_SECRET", "s3cr3t/val+ue=")
    value = resolve_secret("env:REDACT_TEST_SECRET", "lake.account_key")
    assert value == "s3cr3t/val+ue="
    text = "failed with s3cr3t/val+ue= and s3cr3t%2Fval%2Bue%3D and s3cr3t%2Fval%2Bue%3D in a URL"
    assert "s3cr3t" not in redact(text)
    assert redact(text).count(MASK) == 3


def test_a_secret_read_from_a_file_is_masked(tmp_path):
    (tmp_path / "secret.txt").write_text("file-held-secret-42\n")
    resolve_secret("file:secret.txt", "publish.sink.dataverse.client_secret", tmp_path)
    assert redact("token file-held-secret-42 refused") == f"token {MASK} refused"


def test_a_secret_quoted_in_a_json_body_is_masked_as_json_escapes_it():
    """A provider's error body quoting the key: "/" written "\\/" (PHP's json_encode), quotes and backslashes
    escaped, non-ASCII letters as \\u escapes."""
    register("Kq7/json+KEY/12==")
    register('pä"ss\\wörd-99')
    body = '{"error": "API key Kq7\\/json+KEY\\/12== is not valid", "k": "p\\u00e4\\"ss\\\\w\\u00f6rd-99"}'
    assert redact(body) == f'{{"error": "API key {MASK} is not valid", "k": "{MASK}"}}'
    assert redact('{"k": "pä\\"ss\\\\wörd-99"}') == f'{{"k": "{MASK}"}}'


def test_text_is_redacted_before_it_is_cut():
    """Cut first, a secret straddling the cut would leave its first characters readable."""
    register("Straddle-SECRET-4471")
    text = "x" * 190 + "Straddle-SECRET-4471 and more"
    assert clipped(text, 200) == "x" * 190 + MASK + " and mo..."
    assert "Straddle" not in clipped(text, 200) and clipped("short", 200) == "short"


def test_the_parts_of_a_connection_string_are_masked_alone():
    register(
        "DefaultEndpointsProtocol=https;AccountName=acct;AccountKey=a2V5LWtleS1rZXk=;"
        "SharedAccessSignature=sv=2022-11-02&sp=r&sig=UniqueSigValue%3D"
    )
    assert "a2V5LWtleS1rZXk" not in redact("Authentication with a2V5LWtleS1rZXk= failed")
    # The SDK puts the signature into request URLs, decoded or not.
    assert "UniqueSigValue" not in redact("GET /c/b?sv=2022-11-02&sig=UniqueSigValue= HTTP/1.1")
    assert "UniqueSigValue" not in redact("signature UniqueSigValue%3D")


@pytest.mark.parametrize(
    ("text", "kept", "gone"),
    [
        ("https://a.blob.core.windows.net/c/x?sv=2022&sp=r&sig=Zm9vYmFy%3D", "sv=2022", "Zm9vYmFy"),
        ("DefaultEndpointsProtocol=https;AccountName=a;AccountKey=bm90LWEta2V5==;", "AccountName=a", "bm90LWEta2V5"),
        ("BlobEndpoint=http://h/a;SharedAccessSignature=sv=1&sig=abcd1234;", "BlobEndpoint", "abcd1234"),
        ("client_secret=very-secret-value&grant_type=client_credentials", "grant_type", "very-secret-value"),
        ("Authorization: Bearer eyJhbGciOiJSUzI1NiJ9.payload.sig", "Authorization", "eyJhbGci"),
        ("got bearer eyJhbGciOiJSUzI1NiJ9.payload from the cache", "from the cache", "eyJhbGci"),
        ("POST https://user:p4ssw0rd@hooks.example.com/x failed", "hooks.example.com", "p4ssw0rd"),
        ("https://hooks.example.com/in?token=tok123456&x=1", "x=1", "tok123456"),
        ("https://func.example.net/api/notify?code=funckey987", "/api/notify", "funckey987"),
        ("https://maps.example.com/geo?key=AIzaSyDummy&q=1", "q=1", "AIzaSyDummy"),
        ("https://idp.example.com/cb#x&access_token=at-1234-5678", "idp.example.com", "at-1234-5678"),
        ('{"client_secret": "json-held-secret", "client_id": "app"}', '"client_id": "app"', "json-held-secret"),
    ],
)
def test_well_known_secret_shapes_are_masked(text, kept, gone):
    result = redact(text)
    assert gone not in result
    assert kept in result
    assert MASK in result


@pytest.mark.parametrize(
    "text",
    [
        "abfss://customerinsights@contosolake.dfs.core.windows.net/ci: not found in the lake",
        "malformed value in column 'code': 'x' is not a valid int; error code=403",
        "sources.crm.tables.contacts.primary_key: 'contact_id'",
        "the listed bearer of a shared phone number",
    ],
)
def test_ordinary_messages_are_left_alone(text):
    assert redact(text) == text


def test_redact_value_walks_metadata_and_notices():
    register("meta-held-secret")
    value = {"text": "failed: meta-held-secret", "steps": [{"error": "sig=abc123"}], "count": 3}
    assert redact_value(value) == {"text": f"failed: {MASK}", "steps": [{"error": f"sig={MASK}"}], "count": 3}


def test_log_records_are_redacted_in_message_arguments_and_traceback(caplog):
    register("log-held-secret")
    logger = logging.getLogger("ci_pipeline.test_redact")
    logger.addFilter(RedactingFilter())
    try:
        with caplog.at_level(logging.INFO, logger="ci_pipeline.test_redact"):
            try:
                raise RuntimeError("connecting with log-held-secret")
            except RuntimeError:
                logger.exception("request to %s failed", "https://h/x?sig=abcdef123")
    finally:
        logger.filters.clear()
    text = caplog.text
    assert "log-held-secret" not in text and "abcdef123" not in text
    assert "RuntimeError: connecting with ***" in text


def test_installed_record_factory_redacts_every_logger(caplog):
    register("factory-held-secret")
    install_log_redaction()
    install_log_redaction()  # idempotent: one layer, not two
    with caplog.at_level(logging.WARNING):
        logging.getLogger("some.library").warning("key is %s", "factory-held-secret")
    assert "factory-held-secret" not in caplog.text
    assert "key is ***" in caplog.text
