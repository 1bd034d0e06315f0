"""A loopback HTTPS server that answers like Azure Key Vault's secret API, with a certificate made on the spot.

It implements what azure-keyvault-secrets needs: the challenge (a request without a token gets 401 and a
``WWW-Authenticate: Bearer`` header naming the authority and resource), then ``GET /secrets/<name>[/<version>]``
with the bearer token.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from ci_pipeline_tests.conftest import SERVE

TOKEN = "test-access-token-for-the-loopback-vault"


def self_signed_certificate(folder: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and localhost, and its key, written as PEM files."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = folder / "vault.crt", folder / "vault.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_file, key_file


class FakeVault:
    """The server: ``secrets`` maps name -> {version: value}; ``requests`` records (method, path, authorized)."""

    def __init__(self, folder: Path, secrets: dict[str, dict[str, str]]):
        self.secrets = secrets
        self.requests: list[tuple[str, str, bool]] = []
        self.cert_file, key_file = self_signed_certificate(folder)
        vault = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output clean
                pass

            def _send(self, status: int, body: dict, headers: dict | None = None) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                path = urlsplit(self.path).path.rstrip("/")
                authorized = self.headers.get("Authorization") == f"Bearer {TOKEN}"
                vault.requests.append(("GET", path, authorized))
                if not authorized:
                    tenant = "00000000-0000-0000-0000-000000000000"
                    challenge = (
                        f'Bearer authorization="https://login.microsoftonline.com/{tenant}", '
                        'resource="https://vault.azure.net"'
                    )
                    self._send(401, {"error": {"code": "Unauthorized"}}, {"WWW-Authenticate": challenge})
                    return
                parts = path.split("/")[1:]
                base = f"https://{self.headers['Host']}"
                if len(parts) in (2, 3) and parts[0] == "secrets" and parts[1] in vault.secrets:
                    versions = vault.secrets[parts[1]]
                    version = parts[2] if len(parts) == 3 else list(versions)[-1]
                    if version in versions:
                        self._send(
                            200,
                            {
                                "value": versions[version],
                                "id": f"{base}/secrets/{parts[1]}/{version}",
                                "attributes": {"enabled": True, "created": 1700000000, "updated": 1700000000},
                            },
                        )
                        return
                self._send(404, {"error": {"code": "SecretNotFound", "message": f"{path} was not found"}})

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.cert_file, key_file)
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.host = f"127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs=SERVE, daemon=True)

    def __enter__(self) -> FakeVault:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()


class StaticCredential:
    """An azure-identity style credential that hands out the vault's test token for the scope it is asked."""

    def __init__(self):
        self.scopes: list[tuple[str, ...]] = []

    def get_token(self, *scopes, **kwargs):
        from azure.core.credentials import AccessToken

        self.scopes.append(scopes)
        return AccessToken(TOKEN, int(dt.datetime.now(dt.UTC).timestamp()) + 3600)
