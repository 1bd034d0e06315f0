"""keyvault:// references, read by the real azure-keyvault-secrets client from a loopback HTTPS vault."""

from __future__ import annotations

import logging

import pytest
from azure.core.pipeline.transport import RequestsTransport

from ci_pipeline.governance import SecretRefError, SecretResolver
from ci_pipeline.redact import redact
from ci_pipeline_tests.governance.keyvault_server import FakeVault, StaticCredential

SECRET = "kv-Secret-Value-7f3a91c2e5"
OLD = "kv-Older-Value-0b8e44d1aa"


@pytest.fixture
def vault(tmp_path):
    with FakeVault(tmp_path, {"dv-client-secret": {"0123abcd": OLD, "89efabcd": SECRET}}) as server:
        yield server


def resolver_for(vault, tmp_path) -> tuple[SecretResolver, StaticCredential]:
    credential = StaticCredential()
    resolver = SecretResolver(
        [tmp_path],
        credential=credential,
        # The test certificate is trusted by this transport only; the challenge names vault.azure.net, not 127.0.0.1.
        keyvault_options={
            "transport": RequestsTransport(connection_verify=str(vault.cert_file)),
            "verify_challenge_resource": False,
        },
    )
    return resolver, credential


def test_a_secret_is_read_through_the_challenge_and_registered_for_redaction(vault, tmp_path, caplog):
    resolver, credential = resolver_for(vault, tmp_path)
    caplog.set_level(logging.DEBUG)
    assert resolver.resolve(f"keyvault://{vault.host}/dv-client-secret", "client_secret") == SECRET
    # First the unauthenticated challenge, then the same GET with the token the credential gave for the vault.
    assert [r[2] for r in vault.requests] == [False, True]
    assert credential.scopes == [("https://vault.azure.net/.default",)]
    assert redact(f"token was {SECRET}") == "token was ***"
    assert SECRET not in caplog.text


def test_a_pinned_version_is_read(vault, tmp_path):
    resolver, _ = resolver_for(vault, tmp_path)
    assert resolver.resolve(f"keyvault://{vault.host}/dv-client-secret/0123abcd", "client_secret") == OLD
    assert vault.requests[-1][1] == "/secrets/dv-client-secret/0123abcd"


def test_a_missing_secret_names_the_reference_and_the_fix(vault, tmp_path):
    resolver, _ = resolver_for(vault, tmp_path)
    with pytest.raises(SecretRefError, match=r"HTTP 404.*no such secret") as raised:
        resolver.resolve(f"keyvault://{vault.host}/nope", "api_key")
    assert "api_key" in str(raised.value)


def test_an_untrusted_certificate_is_refused(vault, tmp_path):
    resolver = SecretResolver([tmp_path], credential=StaticCredential(), keyvault_options={"retry_total": 0})
    with pytest.raises(SecretRefError, match="could not be read"):
        resolver.resolve(f"keyvault://{vault.host}/dv-client-secret", "client_secret")


def test_a_connection_with_a_key_vault_secret_resolves_for_its_users_only(vault, tmp_path, capsys):
    from ci_pipeline.governance import AccessDenied, Governance, open_store

    store = open_store(f"sqlite:///{tmp_path / 'metadata.sqlite'}")
    resolver, _ = resolver_for(vault, tmp_path)
    root, alice = Governance(store, "root", resolver), Governance(store, "alice", resolver)
    root.init({})
    root.grant_role("alice", "contributor")
    ref = f"keyvault://{vault.host}/dv-client-secret"
    settings = {"org_url": "https://contoso.crm.dynamics.com", "tenant_id": "t", "client_id": "c", "client_secret": ref}
    root.add_connection("dv", "dataverse", settings, consent=False)
    with pytest.raises(AccessDenied):
        alice.resolve_connection("dv")
    root.share("dv", "alice")
    assert alice.resolve_connection("dv")["client_secret"] == SECRET
    assert alice.connection("dv") == {"name": "dv", "type": "dataverse"}
    assert SECRET not in (tmp_path / "metadata.sqlite").read_bytes().decode("utf-8", "replace")
    assert SECRET not in "".join(capsys.readouterr())
