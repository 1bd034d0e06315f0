"""Where the pipeline keeps its outputs: a local folder or Azure Data Lake Storage Gen2 / Blob."""

from __future__ import annotations

from typing import Literal

from ci_pipeline.config.base import SecretRef, StrictModel


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
