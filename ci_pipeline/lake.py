"""The data lake: one fsspec-based storage for a local folder (default) and Azure Data Lake Storage / Blob.

The same code runs on ``file://``, on the Azurite emulator (tests) and on ADLS Gen2 (``abfss://``): only the
filesystem object differs. Every write is atomic, so a reader never sees a half-written file.
"""

from __future__ import annotations

import contextlib
import io
import os
import posixpath
import tempfile
import uuid
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import fsspec
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq
from fsspec.asyn import sync

from ci_pipeline.config.base import resolve_secret
from ci_pipeline.config.lake import LakeConfig
from ci_pipeline.errors import StorageError
from ci_pipeline.redact import first_line, redact

AZURE_PROTOCOLS = ("abfs", "abfss", "az")


@dataclass(frozen=True)
class WrittenTable:
    """A table a step stored in the lake itself, in batches, instead of handing a whole frame to the IO manager:
    where it is (lake-relative), its rows and its Arrow schema (with the pandas metadata readers load it with)."""

    path: str
    rows: int
    schema: pa.Schema


class StorageUnavailable(StorageError):
    """The storage account answered with a server error or timed out through every retry."""

    #: Worth another try of the whole step later (unlike a refused credential or an account that is not there).
    transient = True


@dataclass(frozen=True)
class Lake:
    """A root folder on some filesystem, with atomic writes and Parquet helpers.

    Paths given to the methods are relative to the root, with ``/`` separators.

    Examples:
        >>> lake = Lake.local("/tmp/my-lake")
        >>> lake.write_parquet("unify/customer_profile.parquet", df)  # doctest: +SKIP
    """

    fs: Any
    root: str
    protocol: str = "file"
    storage_options: dict = field(default_factory=dict, compare=False, repr=False)
    #: The governed connection whose container this is (``connection 'partner'``), for messages; empty otherwise.
    held_by: str = field(default="", compare=False)

    @classmethod
    def local(cls, folder: str | os.PathLike) -> Lake:
        path = Path(folder).expanduser().resolve()
        return cls(fs=fsspec.filesystem("file"), root=path.as_posix(), protocol="file")

    @classmethod
    def from_url(cls, url: str, storage_options: dict | None = None) -> Lake:
        """A lake rooted at ``url`` (``file://``, a plain path, ``abfs://``, ``abfss://`` or ``az://``)."""
        parsed = urlparse(url)
        protocol = parsed.scheme if "://" in url else "file"
        if protocol == "file":
            return cls.local(parsed.path if "://" in url else url)
        if protocol not in AZURE_PROTOCOLS:
            raise StorageError(
                f"lake url {url!r}: unsupported scheme {protocol!r}; use a local folder, file://, abfs://, "
                "abfss:// or az://"
            )
        options = dict(storage_options or {})
        container, _, account_host = parsed.netloc.partition("@")
        if account_host and "account_name" not in options and "connection_string" not in options:
            options["account_name"] = account_host.split(".")[0]
        _check_reachable(url, options)
        # The storage library warns "Failed to fetch container properties for <container>. Assume it exists
        # already" when a credential may not read them (a container's SAS), also of a container that does not
        # exist: the lake says itself, naming the connection and the fix, when one is missing
        # (`_refuse_missing_container`). Set here, not at import, where a caller's warning settings may not last.
        warnings.filterwarnings("ignore", message="Failed to fetch container properties", category=UserWarning)
        try:
            fs = fsspec.filesystem("abfs", **options)
        except Exception as exc:  # adlfs repeats the connection details it could not use
            raise StorageError(
                f"{url}: cannot open the storage account ({type(exc).__name__}: {_first_line(exc)}); check "
                "the connection string or the credentials"
            ) from None
        _bound_retries(fs)
        root = posixpath.join(container, parsed.path.lstrip("/")).rstrip("/")
        return cls(fs=fs, root=root, protocol=protocol, storage_options=options)

    @classmethod
    def from_config(cls, config: LakeConfig, base_dir: Path | None = None, connection: dict | None = None) -> Lake:
        """Build the lake a configuration describes, resolving secrets now (at call time).

        ``connection``: ``lake.connection`` resolved through the governance layer (required when it is set).
        """
        url = config.url
        if "://" not in url:
            path = Path(url).expanduser()
            return cls.local(path if path.is_absolute() else (base_dir or Path.cwd()) / path)
        if config.connection:
            if connection is None:
                # A command outside a run (validate, sql, ...): the acting user resolves it, with the same rules.
                from ci_pipeline.governance.runtime import resolve_outside_run

                connection = resolve_outside_run(config.connection, "lake.connection", "adls", base_dir or Path.cwd())
            return cls.from_url(url, connection_storage_options(config, connection))
        return cls.from_url(url, azure_storage_options(config, base_dir))

    @classmethod
    def for_connection(cls, connection: dict) -> Lake:
        """The container of a governed ``adls`` connection (resolved), as a lake rooted at the container."""
        url = f"abfs://{connection['container']}"
        settings = LakeConfig(url=url, connection=connection["name"])
        held_by = f"connection {connection['name']!r}"
        try:
            lake = cls.from_url(url, connection_storage_options(settings, connection))
        except StorageError as exc:
            raise type(exc)(f"{held_by}: {exc}") from None
        return replace(lake, held_by=held_by)

    # -- paths -------------------------------------------------------------------------------------------------
    def path(self, relative: str = "") -> str:
        """The full filesystem path of a lake-relative path."""
        return posixpath.join(self.root, relative.lstrip("/")) if relative else self.root

    def url(self, relative: str = "") -> str:
        """A URL for a lake-relative path, for messages and metadata."""
        full = self.path(relative)
        return f"file://{full}" if self.protocol == "file" else f"{self.protocol}://{full}"

    def filesystem_for(self, location: str) -> tuple[Any, str]:
        """The filesystem and path for a source location: local paths use the local filesystem, Azure URLs use
        the lake's credentials, so sources can live in the same storage account as the lake.

        Raises:
            StorageError: an unsupported scheme, or an Azure URL while the lake is a local folder.
        """
        parsed = urlparse(location)
        protocol = parsed.scheme if "://" in location else "file"
        if protocol == "file":
            return fsspec.filesystem("file"), (parsed.path if "://" in location else location)
        if protocol not in AZURE_PROTOCOLS:
            raise StorageError(f"{location}: unsupported scheme {protocol!r}; use a path, file://, abfs:// or abfss://")
        if self.protocol not in AZURE_PROTOCOLS:
            # A local lake has no account or credentials to read Azure with (the SDK would fail with a traceback).
            raise StorageError(
                f"{redact(location)}: an Azure location, but the lake is a local folder; Azure sources are read with "
                "the lake's credentials, so they need a lake in Azure: set lake.url to "
                "abfss://<container>@<account>.dfs.core.windows.net/<folder> with its credentials, or copy the "
                "data and give its local path"
            )
        fs = self.fs
        container = parsed.netloc.partition("@")[0]
        return fs, posixpath.join(container, parsed.path.lstrip("/")).rstrip("/")

    # -- reading -----------------------------------------------------------------------------------------------
    def exists(self, relative: str) -> bool:
        return self._call("check", relative, lambda: self.fs.exists(self.path(relative)))

    def read_bytes(self, relative: str) -> bytes:
        return self._call("read", relative, lambda: self.fs.cat_file(self.path(relative)))

    def read_parquet(self, relative: str) -> pd.DataFrame:
        data = self.read_bytes(relative)
        return pq.read_table(io.BytesIO(data)).to_pandas()

    def dataset(self, relative: str) -> ds.Dataset:
        """A stored Parquet file or folder as an Arrow dataset: read by batches and chosen columns (DuckDB scans it
        directly), so a reader of a large table never holds all of it."""
        if self.protocol == "file":
            filesystem = pafs.LocalFileSystem()
        else:
            filesystem = pafs.PyFileSystem(pafs.FSSpecHandler(self.fs))
        return self._call(
            "read", relative, lambda: ds.dataset(self.path(relative), format="parquet", filesystem=filesystem)
        )

    def find(self, relative: str = "") -> list[str]:
        """Every file below a folder, as lake-relative paths, sorted."""
        base = self.path(relative)
        if not self._call("list", relative, lambda: self.fs.exists(base)):
            return []
        found = self._call("list", relative, lambda: self.fs.find(base))
        prefix = self.root.rstrip("/") + "/"
        return sorted(p[len(prefix) :] if p.startswith(prefix) else p for p in found)

    def info(self, relative: str) -> dict:
        return self._call("stat", relative, lambda: self.fs.info(self.path(relative)))

    # -- writing -----------------------------------------------------------------------------------------------
    def write_bytes(self, relative: str, data: bytes) -> str:
        """Write a file atomically and return its full path.

        Locally the data goes to a temporary name in the same folder and is renamed into place; Azure commits a
        blob only when the upload is complete, so a single put is already atomic there.
        """
        full = self.path(relative)
        if self.protocol == "file":
            with self.writing(relative) as tmp, open(tmp, "wb") as handle:
                handle.write(data)
            return full
        self._call("write", relative, lambda: self.fs.pipe_file(full, data))
        return full

    @contextlib.contextmanager
    def writing(self, relative: str) -> Iterator[str]:
        """A local file path to write ``relative`` into (a streamed writer, DuckDB); it replaces the lake's file
        atomically when the block ends without an error, and is removed otherwise.

        Locally the file is written beside its destination and renamed into place; on Azure it is written to a
        local temporary folder and uploaded (a blob is committed only when its upload is complete).
        """
        full = self.path(relative)
        if self.protocol == "file":
            folder = posixpath.dirname(full)
            os.makedirs(folder, exist_ok=True)
            tmp = posixpath.join(folder, f".{posixpath.basename(full)}.{uuid.uuid4().hex}.tmp")
            try:
                yield tmp
                with open(tmp, "rb+") as handle:
                    os.fsync(handle.fileno())
                os.replace(tmp, full)
            finally:
                if os.path.exists(tmp):
                    os.remove(tmp)
            return
        with tempfile.TemporaryDirectory(prefix="ci-pipeline-upload-") as folder:
            tmp = os.path.join(folder, posixpath.basename(full))
            yield tmp
            self._call("write", relative, lambda: self.fs.put_file(tmp, full))

    def write_parquet(self, relative: str, df: pd.DataFrame) -> str:
        buffer = io.BytesIO()
        pq.write_table(pa.Table.from_pandas(df, preserve_index=False), buffer, compression="zstd")
        return self.write_bytes(relative, buffer.getvalue())

    def delete(self, relative: str, recursive: bool = False) -> None:
        full = self.path(relative)
        if self.exists(relative):
            self._call("delete", relative, lambda: self.fs.rm(full, recursive=recursive))

    # -- errors ------------------------------------------------------------------------------------------------
    def _call(self, action: str, relative: str, fn):
        try:
            return fn()
        except FileNotFoundError as exc:
            self._refuse_missing_container(relative, exc)
            raise StorageError(f"{self.url(relative)}: not found in the lake") from None
        except StorageError:
            raise
        except Exception as exc:  # network, auth and SDK errors all surface as one clear message
            self._refuse_missing_container(relative, exc)
            # Not chained: the SDK's own message can carry the request URL with its SAS signature, and Dagster
            # stores every cause of a failure in the run's event log.
            raise storage_failure(self.url(relative), action, exc) from None

    def _refuse_missing_container(self, relative: str, failed: BaseException) -> None:
        """Raise a clear error when the lake's container does not exist: an operation ``failed``, and the storage
        said so, or says so when asked (adlfs turns some of its answers into a RecursionError or a missing file)."""
        if self.protocol == "file":
            return
        container = self.root.split("/")[0]
        if not _says_container_not_found(failed):
            # Asked only after failures a missing container can cause (not a refusal, not an outage: each retried).
            if not isinstance(failed, FileNotFoundError | RecursionError) and getattr(failed, "status_code", 0) != 404:
                return
            try:
                # adlfs's client is the SDK's asynchronous one, run on adlfs's own event loop.
                if sync(self.fs.loop, self.fs.service_client.get_container_client(container).exists):
                    return
            except Exception:  # a credential that may not ask (a container's SAS) or no answer: the error stands
                return
        where = f" of {self.held_by}" if self.held_by else ""
        fix = "the connection's --container" if self.held_by else "the container in lake.url"
        raise StorageError(
            f"{self.url(relative)}: the container {container!r}{where} does not exist in the storage account; "
            f"create it, or fix {fix}"
        ) from None


def _says_container_not_found(exc: BaseException | None) -> bool:
    """Whether the storage answered ``ContainerNotFound`` (the SDK's error, or one it caused or was raised in)."""
    for _ in range(4):
        if exc is None:
            return False
        if getattr(exc, "error_code", None) == "ContainerNotFound":
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def storage_failure(url: str, action: str, exc: BaseException) -> StorageError:
    """The clear error for a storage operation on ``url`` that failed with ``exc`` (network, credentials, the SDK's
    errors): what could not be done, the error's first line, and the fix; :class:`StorageUnavailable` when another
    try later may succeed. Raise it ``from None``: the SDK's message chained to it can carry a SAS signature."""
    status = getattr(exc, "status_code", None) or 0
    transient = status >= 500 or _unreachable(exc)
    if status in (401, 403):
        fix = "the storage account refused the credentials; check the key or SAS token (its permissions and "
        fix += "expiry) or the role assignment of the identity on this container"
    else:
        fix = "check the lake url, the credentials and that the storage account is reachable"
    error = StorageUnavailable if transient else StorageError
    return error(f"{url}: cannot {action} ({type(exc).__name__}: {_first_line(exc)}); {fix}")


def _unreachable(exc: BaseException) -> bool:
    """Whether the storage service could not be reached or did not answer in time (worth another try later)."""
    if isinstance(exc, TimeoutError):
        return True
    # Imported here: a local lake never needs the Azure SDK, and an error of the SDK means it is loaded already.
    from azure.core.exceptions import ServiceRequestError, ServiceResponseError

    return isinstance(exc, (ServiceRequestError, ServiceResponseError))


def _first_line(exc: BaseException) -> str:
    return first_line(exc) or "no message"


def azure_storage_options(config: LakeConfig, base_dir: Path | None = None) -> dict:
    """adlfs keyword arguments for the credentials a :class:`LakeConfig` names."""
    key = "lake"
    if config.connection_string:
        return {"connection_string": resolve_secret(config.connection_string, f"{key}.connection_string", base_dir)}
    options: dict[str, Any] = {}
    if config.account_name:
        options["account_name"] = config.account_name
    if config.account_key:
        options["account_key"] = resolve_secret(config.account_key, f"{key}.account_key", base_dir)
    elif config.sas_token:
        options["sas_token"] = resolve_secret(config.sas_token, f"{key}.sas_token", base_dir)
    elif config.credential == "client_secret":
        from azure.identity import ClientSecretCredential

        if not (config.tenant_id and config.client_id and config.client_secret):
            raise StorageError("lake: credential 'client_secret' needs tenant_id, client_id and client_secret")
        options["credential"] = ClientSecretCredential(
            config.tenant_id,
            config.client_id,
            resolve_secret(config.client_secret, f"{key}.client_secret", base_dir),
        )
    elif config.credential == "managed_identity":
        from azure.identity import ManagedIdentityCredential

        options["credential"] = ManagedIdentityCredential(client_id=config.client_id)
    elif config.credential == "default":
        options["anon"] = False
    else:
        options["anon"] = True
    return options


def connection_storage_options(config: LakeConfig, connection: dict) -> dict:
    """adlfs keyword arguments from a governed ``adls`` connection, after checking it is the lake's container."""
    parsed = urlparse(config.url)
    container, _, host = parsed.netloc.partition("@")
    account = host.split(".")[0] if host else None
    if container != connection["container"] or (account and account != connection["account"]):
        raise StorageError(
            f"lake.url names container {container!r}{f' of account {account!r}' if account else ''}, but "
            f"lake.connection {connection['name']!r} is for container {connection['container']!r} of account "
            f"{connection['account']!r}; make them agree"
        )
    if connection.get("connection_string"):
        return {"connection_string": connection["connection_string"]}
    options: dict[str, Any] = {"account_name": connection["account"]}
    for secret in ("account_key", "sas_token"):
        if connection.get(secret):
            options[secret] = connection[secret]
            return options
    options["anon"] = False
    return options


#: Seconds to open a connection to the storage account, and to wait for an answer once connected.
CONNECT_TIMEOUT = 5
READ_TIMEOUT = 20
#: Retries of one storage request after a dropped connection, a timeout or a 5xx: 2, about 1 s and 3 s apart.
#: The Azure SDK's default (3 retries 15-40 s apart, 20 s connect and 60 s read timeouts) takes 90 s and more.
STORAGE_RETRIES = 2


def connection_string_problem(connection_string: str) -> str | None:
    """Why ``connection_string`` is no Azure Storage connection string (None when it is one): it names the account
    (``AccountName=``) or its endpoint (``BlobEndpoint=``). Never quotes the value."""
    parts = {p.split("=", 1)[0].strip() for p in connection_string.split(";") if "=" in p}
    if parts & {"AccountName", "BlobEndpoint"}:
        return None
    return (
        "the connection string names neither AccountName nor BlobEndpoint, so it is no Azure Storage connection "
        "string (the portal's 'Access keys' give one: DefaultEndpointsProtocol=https;AccountName=...;AccountKey=...); "
        "store that one"
    )


def _blob_endpoint(url: str, options: dict) -> tuple[str, str, int]:
    connection_string = options.get("connection_string")
    if connection_string:
        if problem := connection_string_problem(connection_string):
            raise StorageError(f"{url}: {problem}")
        parts = dict(p.split("=", 1) for p in connection_string.split(";") if "=" in p)
        if "BlobEndpoint" in parts:
            endpoint = urlparse(parts["BlobEndpoint"])
            scheme = endpoint.scheme or "https"
            return scheme, endpoint.hostname or "", endpoint.port or (443 if scheme == "https" else 80)
        account = parts.get("AccountName", "")
        suffix = parts.get("EndpointSuffix", "core.windows.net")
        return parts.get("DefaultEndpointsProtocol", "https"), f"{account}.blob.{suffix}", 443
    account = options.get("account_name") or urlparse(url).netloc.partition("@")[2].split(".")[0]
    return "https", f"{account}.blob.core.windows.net", 443


def _check_reachable(url: str, options: dict) -> None:
    """Fail in seconds, not after the Azure SDK's minutes of retries, when the storage account cannot be reached.

    One HTTP request to the blob endpoint with :data:`CONNECT_TIMEOUT`: any answer (even 400 or 403) proves the
    service is there; a refused or silent connection fails here, before anything is read or written.
    """
    scheme, host, port = _blob_endpoint(url, options)
    if not host or host.startswith("."):
        raise StorageError(f"{url}: no storage account named; give account_name, a connection string or an abfss URL")
    import httpx

    try:
        httpx.head(f"{scheme}://{host}:{port}/", timeout=CONNECT_TIMEOUT)
    except httpx.HTTPError as exc:
        reason = "no answer" if isinstance(exc, httpx.TimeoutException) else _first_line(exc)
        raise StorageError(
            f"{url}: storage endpoint {host}:{port} is unreachable ({reason} within {CONNECT_TIMEOUT} s); check the "
            "account name, the network and the connection string"
        ) from None


def _bound_retries(fs) -> None:
    """Give the storage client :data:`STORAGE_RETRIES` quick retries and short timeouts.

    adlfs creates the Azure client itself and passes no retry or transport settings, so they are set on the
    client's retry policy and transport, which every container and blob client it hands out shares.
    """
    client = fs.service_client
    retry = client._config.retry_policy
    retry.total_retries = retry.connect_retries = retry.read_retries = retry.status_retries = STORAGE_RETRIES
    retry.initial_backoff, retry.increment_base, retry.random_jitter_range = 1, 2, 1
    connection = client._pipeline._transport.connection_config
    connection.timeout, connection.read_timeout = CONNECT_TIMEOUT, READ_TIMEOUT
