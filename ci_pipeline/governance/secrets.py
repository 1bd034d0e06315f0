"""Secret references of connections: checked when stored, resolved only when needed, never stored as values.

Three kinds of reference:

- ``env:NAME``: an environment variable of the process that resolves it;
- ``keyvault://<vault>/<secret>[/<version>]``: a secret in Azure Key Vault, read with azure-keyvault-secrets and
  an azure-identity credential. ``<vault>`` is a vault name (``https://<vault>.vault.azure.net``) or a host name
  with dots (another cloud: ``contoso.vault.azure.cn``);
- ``file:PATH``: a file for local development, only inside the allowed roots, never through ``..``.

Every resolved value is registered with :mod:`ci_pipeline.redact` before it is returned, so no log line, error or
metadata can carry it afterwards. Errors name the reference, never the value.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path, PurePath

from ci_pipeline.errors import UserError
from ci_pipeline.redact import register as register_secret

#: Extra folders ``file:`` references may point into, separated by the OS path separator (``:`` on Linux).
SECRET_ROOTS_ENV = "CI_PIPELINE_SECRET_ROOTS"

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,254}$")
_VAULT_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9-]{1,22}[A-Za-z0-9]$")
_VAULT_HOST = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.-]*(:[0-9]{1,5})?$")
_KV_SECRET = re.compile(r"^[A-Za-z0-9-]{1,127}$")
_KV_VERSION = re.compile(r"^[A-Za-z0-9]{1,64}$")
_HELP = (
    "use env:VARIABLE_NAME, keyvault://<vault>/<secret>[/<version>] or file:path/inside/an/allowed/root; "
    "secret values are never stored"
)


class SecretRefError(UserError):
    """A secret reference that is malformed, points outside the allowed roots, or cannot be resolved."""


def secret_roots(config_dir: Path) -> list[Path]:
    """The folders ``file:`` references may point into: the configuration's folder and ``$CI_PIPELINE_SECRET_ROOTS``."""
    roots = [config_dir]
    extra = os.environ.get(SECRET_ROOTS_ENV, "")
    roots += [Path(p).expanduser() for p in extra.split(os.pathsep) if p.strip()]
    return [r.resolve() for r in roots]


def check_ref(ref: str, what: str, roots: Sequence[Path]) -> str:
    """Return ``ref`` if it is a well-formed reference (a ``file:`` one inside ``roots``), else raise.

    The message names ``what`` (the option or key) and never repeats ``ref``, which may be a pasted secret.
    """
    kind, sep, target = ref.partition(":")
    if not sep:
        raise SecretRefError(f"{what}: not a secret reference; {_HELP}")
    if kind == "env":
        if not _ENV_NAME.match(target):
            raise SecretRefError(f"{what}: env: needs a variable name (letters, digits, _); {_HELP}")
        return ref
    if kind == "keyvault":
        _keyvault_parts(ref, what)
        return ref
    if kind == "file":
        _file_path(target, what, roots)
        return ref
    raise SecretRefError(f"{what}: not a secret reference; {_HELP}")


def _keyvault_parts(ref: str, what: str) -> tuple[str, str, str | None]:
    rest = ref.removeprefix("keyvault://")
    if rest == ref:
        raise SecretRefError(f"{what}: a Key Vault reference is keyvault://<vault>/<secret>[/<version>]")
    parts = rest.split("/")
    if len(parts) not in (2, 3):
        raise SecretRefError(f"{what}: a Key Vault reference is keyvault://<vault>/<secret>[/<version>]")
    vault, name = parts[0], parts[1]
    version = parts[2] if len(parts) == 3 else None
    vault_ok = _VAULT_HOST.match(vault) if ("." in vault or ":" in vault) else _VAULT_NAME.match(vault)
    if not vault_ok:
        raise SecretRefError(
            f"{what}: the vault is neither a Key Vault name (3-24 letters, digits and dashes) nor a host name"
        )
    if not _KV_SECRET.match(name):
        raise SecretRefError(f"{what}: Key Vault secret names are 1-127 letters, digits and dashes")
    if version is not None and not _KV_VERSION.match(version):
        raise SecretRefError(f"{what}: a Key Vault secret version is letters and digits only")
    return vault, name, version


def _file_path(target: str, what: str, roots: Sequence[Path]) -> Path:
    if not target.strip():
        raise SecretRefError(f"{what}: file: needs a path; {_HELP}")
    if ".." in PurePath(target).parts:
        raise SecretRefError(f"{what}: file: references may not contain '..'; give a path inside an allowed root")
    path = Path(target).expanduser()
    if not path.is_absolute():
        path = roots[0] / path
    # Symbolic links are followed before the check, so a link inside a root cannot lead outside it.
    try:
        resolved = path.resolve()
    except (OSError, RuntimeError):  # a symbolic link loop
        raise SecretRefError(f"{what}: file {path} cannot be resolved (a symbolic link loop?); fix the path") from None
    if not any(resolved.is_relative_to(root) for root in roots):
        allowed = ", ".join(str(r) for r in roots)
        raise SecretRefError(
            f"{what}: file {path} is outside the allowed folders ({allowed}); move it there or add its folder to "
            f"${SECRET_ROOTS_ENV}"
        )
    return resolved


class SecretResolver:
    """Turns references into values at the moment they are needed, registering each value for redaction.

    Args:
        roots: folders ``file:`` references may point into (the first one anchors relative paths).
        credential: azure-identity credential for Key Vault (default: ``DefaultAzureCredential``, made on first use).
        keyvault_options: extra keyword arguments for ``SecretClient`` (a transport, ``verify_challenge_resource``).
    """

    def __init__(self, roots: Sequence[Path], credential=None, keyvault_options: dict | None = None):
        self.roots = [Path(r).resolve() for r in roots]
        self._credential = credential
        self._keyvault_options = dict(keyvault_options or {})
        self._clients: dict[str, object] = {}

    def resolve(self, ref: str, what: str) -> str:
        """The secret value ``ref`` points at; ``what`` names it in errors (which never hold the value)."""
        check_ref(ref, what, self.roots)
        kind, _, target = ref.partition(":")
        if kind == "env":
            # Stripped as a file's is: `export KEY=$(cat key.txt)` or a pasted key brings a line break along.
            value = (os.environ.get(target) or "").strip()
            if not value:
                raise SecretRefError(
                    f"{what}: environment variable {target} is not set; export it or edit the reference"
                )
            return register_secret(_no_controls(value, what))
        if kind == "file":
            path = _file_path(target, what, self.roots)
            try:
                value = path.read_text(encoding="utf-8").strip()
            except (OSError, UnicodeDecodeError) as exc:
                reason = getattr(exc, "strerror", None) or "not UTF-8 text"
                raise SecretRefError(
                    f"{what}: cannot read secret file {path}: {reason}; create it or fix the path"
                ) from None
            if not value:
                raise SecretRefError(f"{what}: secret file {path} is empty")
            return register_secret(_no_controls(value, what))
        return self._from_keyvault(ref, what)

    def _from_keyvault(self, ref: str, what: str) -> str:
        from azure.core.exceptions import AzureError, HttpResponseError

        from ci_pipeline.redact import redact

        vault, name, version = _keyvault_parts(ref, what)
        try:
            secret = self._client(vault).get_secret(name, version)
        except HttpResponseError as exc:
            hint = {
                401: "the credential was refused; check the identity",
                403: "the identity may not read this secret; grant it the 'get' secret permission",
                404: "no such secret or version in the vault; check the name",
            }.get(exc.status_code, "check the vault and the identity")
            raise SecretRefError(f"{what}: {ref} could not be read (HTTP {exc.status_code}): {hint}") from None
        except AzureError as exc:
            # The SDK's messages quote requests, never the secret; redact anyway in case a future one does.
            reason = redact(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
            raise SecretRefError(
                f"{what}: {ref} could not be read: {reason}; check the vault name and the network"
            ) from None
        if not secret.value:
            raise SecretRefError(f"{what}: {ref} is empty")
        return register_secret(secret.value)

    def _client(self, vault: str):
        if vault not in self._clients:
            from azure.keyvault.secrets import SecretClient

            if self._credential is None:
                from azure.identity import DefaultAzureCredential

                self._credential = DefaultAzureCredential()
            host = vault if ("." in vault or ":" in vault) else f"{vault}.vault.azure.net"
            self._clients[vault] = SecretClient(f"https://{host}", self._credential, **self._keyvault_options)
        return self._clients[vault]


def _no_controls(value: str, what: str) -> str:
    """``value``, refused when it holds a control character (a line break, a tab): no key, token or password
    does, and one sent in a header or a connection string fails far from here with a message about the network."""
    at = next((i for i, c in enumerate(value) if ord(c) < 32 or ord(c) == 127), None)
    if at is not None:
        raise SecretRefError(
            f"{what}: the secret holds a control character (a line break or tab) at position {at + 1}; store it "
            "without (one line, as issued)"
        )
    return value
