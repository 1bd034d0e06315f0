"""Connection types, their settings, and the consent text for the ones that send data outside the platform."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from ci_pipeline.errors import UserError
from ci_pipeline.governance.secrets import check_ref

#: The longest plain setting (an org URL, an account name) the store keeps.
MAX_SETTING = 500


@dataclass(frozen=True)
class ConnectionType:
    """What a connection of one type holds.

    Attributes:
        required: plain settings it must have (URLs, ids; stored as given).
        optional: plain settings it may have.
        secrets: settings that are secret references; ``one_of`` lists groups of which exactly one must be given
            (at most one when ``secret_optional``).
        leaves_platform: it sends customer data to a third party, so creating it needs recorded consent.
    """

    name: str
    required: tuple[str, ...]
    optional: tuple[str, ...]
    secrets: tuple[str, ...]
    one_of: tuple[str, ...] = ()
    secret_optional: bool = False
    leaves_platform: bool = False
    description: str = ""

    @property
    def settings(self) -> tuple[str, ...]:
        """Every setting this type accepts."""
        return self.required + self.optional + self.secrets


CONNECTION_TYPES: dict[str, ConnectionType] = {
    t.name: t
    for t in (
        ConnectionType(
            "dataverse",
            required=("org_url", "tenant_id", "client_id"),
            optional=(),
            secrets=("client_secret", "certificate"),
            one_of=("client_secret", "certificate"),
            description="a Dataverse environment, reached as an app registration with a secret or a certificate",
        ),
        ConnectionType(
            "adls",
            required=("account", "container"),
            optional=(),
            secrets=("account_key", "sas_token", "connection_string"),
            one_of=("account_key", "sas_token", "connection_string"),
            secret_optional=True,
            description="an Azure Data Lake Storage Gen2 container (no secret: the azure-identity default credential)",
        ),
        ConnectionType(
            "http-enrichment",
            required=("url",),
            optional=(),
            secrets=("api_key",),
            one_of=("api_key",),
            leaves_platform=True,
            description="an enrichment provider's HTTP API, which receives customer attributes",
        ),
        ConnectionType(
            "webhook",
            required=(),
            optional=(),
            # A webhook URL carries its own token (Slack, Teams, Power Automate), so the URL is itself a secret.
            secrets=("url",),
            one_of=("url",),
            leaves_platform=True,
            description="a webhook that receives notifications about runs and segments",
        ),
    )
}

#: The consent texts, by version. A changed wording gets a new version; old records keep theirs.
CONSENT_TEXTS: dict[str, str] = {
    "1": (
        "I understand that this connection sends customer data outside the ci_pipeline environment, to a service "
        "that its own terms and its own compliance boundary govern, and I confirm that the organisation may send it "
        "there."
    ),
}
CONSENT_VERSION = "1"


def consent_text(version: str = CONSENT_VERSION) -> str:
    """The consent text of ``version``."""
    return CONSENT_TEXTS[version]


def consent_sha256(version: str = CONSENT_VERSION) -> str:
    """SHA-256 of the consent text of ``version``, recorded with each consent."""
    return hashlib.sha256(consent_text(version).encode("utf-8")).hexdigest()


def _option(key: str) -> str:
    return "--" + key.replace("_", "-")


def _check_url(value: str, what: str) -> str:
    parts = urlsplit(value)
    loopback = parts.hostname in ("localhost", "127.0.0.1", "::1")
    if parts.scheme != "https" and not (parts.scheme == "http" and loopback):
        raise UserError(f"{what}: use an https:// URL (plain http only for localhost)")
    if not parts.hostname:
        raise UserError(f"{what}: the URL has no host")
    # Each is a place a token hides (`https://host/path#token=...`); none may be stored and shown as a setting.
    if parts.username or parts.password or parts.query or parts.fragment or value.rstrip().endswith(("?", "#")):
        raise UserError(
            f"{what}: the URL carries credentials, a query string or a fragment (#...); give the URL without them "
            "and the credential as a secret reference"
        )
    return value


def check_settings(
    type_name: str, settings: Mapping[str, str], roots: Sequence[Path], *, partial: bool = False
) -> tuple[dict[str, str], dict[str, str]]:
    """Split and check a connection's settings into (plain fields, secret references).

    ``partial`` checks an edit: only the given settings, without the required ones.
    """
    ctype = CONNECTION_TYPES.get(type_name)
    if ctype is None:
        raise UserError(f"--type {type_name}: unknown connection type; use one of {', '.join(CONNECTION_TYPES)}")
    unknown = [k for k in settings if k not in ctype.settings]
    if unknown:
        accepted = " ".join(_option(k) for k in ctype.settings)
        raise UserError(
            f"{' '.join(_option(k) for k in unknown)}: not a setting of {type_name} connections; they take {accepted}"
        )
    fields: dict[str, str] = {}
    refs: dict[str, str] = {}
    for key, value in settings.items():
        if key in ctype.secrets:
            refs[key] = check_ref(value, _option(key), roots)
        else:
            value = value.strip()
            if not value or len(value) > MAX_SETTING:
                raise UserError(f"{_option(key)}: give a value of 1 to {MAX_SETTING} characters")
            fields[key] = _check_url(value, _option(key)) if key.endswith("url") else value
    if not partial:
        missing = [k for k in ctype.required if k not in fields]
        if missing:
            raise UserError(f"{type_name} connections need {' '.join(_option(k) for k in missing)}")
    chosen = [k for k in ctype.one_of if k in refs]
    if len(chosen) > 1:
        raise UserError(f"give only one of {', '.join(_option(k) for k in chosen)}")
    if not partial and not chosen and not ctype.secret_optional:
        raise UserError(f"{type_name} connections need {' or '.join(_option(k) for k in ctype.one_of)}")
    return fields, refs
