"""Governance of an environment: who may do what, with which connections and secrets, all of it audited.

The front door for the CLI commands and, later, the Dagster resources. No Dagster import anywhere here.

Examples:
    >>> from ci_pipeline.governance import open_governance
    >>> gov = open_governance(config, acting_user())  # doctest: +SKIP
    >>> gov.connections()  # doctest: +SKIP
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ci_pipeline.governance.audit import ChainReport
    from ci_pipeline.governance.connections import CONNECTION_TYPES, CONSENT_VERSION, consent_text
    from ci_pipeline.governance.identity import USER_ENV, acting_user
    from ci_pipeline.governance.models import BINDING_KINDS, ROLES
    from ci_pipeline.governance.secrets import SECRET_ROOTS_ENV, SecretRefError, SecretResolver, secret_roots
    from ci_pipeline.governance.service import (
        AccessDenied,
        ConsentRequired,
        Governance,
        InitResult,
        default_resolver,
        source_owners,
    )
    from ci_pipeline.governance.store import METADATA_URL_ENV, MetadataStore, metadata_url, open_store

#: The module of each public name. They are imported on first use: the store and its models import SQLAlchemy,
#: and every command line imports this package to register the governance commands (and a submodule imports its
#: package first), so a command that never touches governance does not pay for SQLAlchemy.
_HOME = {
    name: module
    for module, names in {
        "audit": ("ChainReport",),
        "connections": ("CONNECTION_TYPES", "CONSENT_VERSION", "consent_text"),
        "identity": ("USER_ENV", "acting_user"),
        "models": ("BINDING_KINDS", "ROLES"),
        "secrets": ("SECRET_ROOTS_ENV", "SecretRefError", "SecretResolver", "secret_roots"),
        "service": ("AccessDenied", "ConsentRequired", "Governance", "InitResult", "default_resolver", "source_owners"),
        "store": ("METADATA_URL_ENV", "MetadataStore", "metadata_url", "open_store"),
    }.items()
    for name in names
}


def __getattr__(name: str):
    module = _HOME.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def open_governance(config, actor: str, resolver: SecretResolver | None = None) -> Governance:
    """The governance rules of ``config``'s environment, acting as ``actor`` (the store is migrated on open)."""
    from ci_pipeline.governance.service import Governance, default_resolver
    from ci_pipeline.governance.store import metadata_url, open_store

    store = open_store(metadata_url(config))
    return Governance(store, actor, resolver or default_resolver(config))


__all__ = [
    "BINDING_KINDS",
    "CONNECTION_TYPES",
    "CONSENT_VERSION",
    "METADATA_URL_ENV",
    "ROLES",
    "SECRET_ROOTS_ENV",
    "USER_ENV",
    "AccessDenied",
    "ChainReport",
    "ConsentRequired",
    "Governance",
    "InitResult",
    "MetadataStore",
    "SecretRefError",
    "SecretResolver",
    "acting_user",
    "consent_text",
    "default_resolver",
    "metadata_url",
    "open_governance",
    "open_store",
    "secret_roots",
    "source_owners",
]
