"""Where the pipeline keeps its outputs: a local folder or Azure Data Lake Storage Gen2 / Blob."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from ci_pipeline.config.base import REGION_PATTERN, SecretRef, StrictModel


class LakeConfig(StrictModel):
    """The data lake that holds every asset output, quarantine table and export.

    ``url`` is a local folder (relative to the configuration file, or ``file:///abs/path``) or an Azure URL:
    ``abfss://<container>@<account>.dfs.core.windows.net/<folder>`` or ``abfs://<container>/<folder>``.
    Azure sources listed under ``sources`` use the same credentials.
    """

    url: str = "lake"
    #: Connection string (the simplest for development and the Azurite emulator).
    connection_string: SecretRef | None = None
    account_name: str | None = None
    account_key: SecretRef | None = None
    sas_token: SecretRef | None = None
    #: azure-identity credential to use when no key, SAS or connection string is given.
    credential: Literal["default", "managed_identity", "client_secret", "none"] = "default"
    tenant_id: str | None = None
    client_id: str | None = None
    client_secret: SecretRef | None = None
    #: A governed ``adls`` connection (``ci-pipeline connections``) that supplies the account and its credential
    #: instead of the keys above; resolved as the user who launched the run (docs/governance.md).
    connection: str | None = Field(None, min_length=1, max_length=200)
    #: Azure region of the storage account (``westeurope``); must equal ``publish.sink.region`` when both are set.
    region: str | None = Field(None, pattern=REGION_PATTERN)

    @model_validator(mode="after")
    def _connection_or_inline(self):
        inline = [
            k
            for k in ("connection_string", "account_name", "account_key", "sas_token", "client_secret")
            if getattr(self, k)
        ]
        if self.connection and inline:
            raise ValueError(
                f"connection {self.connection!r} supplies the account and credential; remove {', '.join(inline)} "
                "(or remove connection to keep the inline references)"
            )
        if self.connection and not self.url.startswith(("abfs://", "abfss://", "az://")):
            raise ValueError("connection applies to a lake in Azure: give url as abfss://<container>@<account>...")
        return self
