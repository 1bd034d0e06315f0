"""Reading source files where they live: a local path or an Azure URL, through the lake's filesystems."""

from __future__ import annotations

import posixpath
from dataclasses import dataclass
from typing import Any

from ci_pipeline.errors import StorageError, UserError
from ci_pipeline.redact import first_line


@dataclass(frozen=True)
class SourceLocation:
    """One file or folder of a source, with the filesystem that reads it.

    ``url`` is what messages show (the configured form); ``path`` is the filesystem's own path.
    """

    fs: Any
    path: str
    url: str

    @classmethod
    def open(cls, lake, location: str) -> SourceLocation:
        """The location as seen through ``lake.filesystem_for`` (local paths and abfs:// alike)."""
        fs, path = lake.filesystem_for(location)
        return cls(fs=fs, path=path, url=location)

    def child(self, relative: str) -> SourceLocation:
        """A location below (or next to, with ``..``) this one."""
        path = posixpath.normpath(posixpath.join(self.path, relative))
        url = (
            posixpath.normpath(posixpath.join(self.url, relative))
            if "://" not in self.url
            else _join_url(self.url, relative)
        )
        return SourceLocation(self.fs, path, url)

    def sibling(self, relative: str) -> SourceLocation:
        """A location relative to this file's folder."""
        return self.parent().child(relative)

    def parent(self) -> SourceLocation:
        return SourceLocation(self.fs, posixpath.dirname(self.path), _dirname(self.url))

    def with_path(self, path: str) -> SourceLocation:
        """Another path on the same filesystem (from a listing), shown relative to this location's URL."""
        base = self.path.rstrip("/") + "/"
        if path.startswith(base):
            return self.child(path[len(base) :])
        return SourceLocation(self.fs, path, path)

    # -- calls with clear errors -------------------------------------------------------------------------------
    def exists(self) -> bool:
        return self._call("check", lambda: self.fs.exists(self.path))

    def isdir(self) -> bool:
        return self._call("check", lambda: self.fs.isdir(self.path))

    def read_bytes(self) -> bytes:
        return self._call("read", lambda: self.fs.cat_file(self.path))

    def find(self) -> list[str]:
        """Every file below this folder (filesystem paths, sorted)."""
        return sorted(self._call("list", lambda: self.fs.find(self.path)))

    def glob(self, pattern: str) -> list[str]:
        return sorted(self._call("list", lambda: self.fs.glob(posixpath.join(self.path, pattern))))

    def ls_dirs(self) -> list[str]:
        """The names of the sub-folders (not their paths), sorted."""
        entries = self._call("list", lambda: self.fs.ls(self.path, detail=True))
        return sorted(posixpath.basename(e["name"].rstrip("/")) for e in entries if e.get("type") == "directory")

    def require(self, what: str, key: str) -> None:
        """Fail clearly when the location does not exist."""
        if not self.exists():
            raise UserError(f"{self.url}: {what} not found ({key}); check the path or create the {what}")

    def _call(self, action: str, fn):
        try:
            return fn()
        except FileNotFoundError:
            raise UserError(f"{self.url}: not found; check the path in the configuration") from None
        except (UserError, IsADirectoryError, NotADirectoryError):
            raise
        except Exception as exc:  # network, auth and SDK errors all surface as one clear message
            first = first_line(exc)
            raise StorageError(
                f"{self.url}: cannot {action} ({type(exc).__name__}: {first}); check the URL, the lake credentials "
                "and that the storage account is reachable"
            ) from exc


def _dirname(url: str) -> str:
    return url.rstrip("/").rsplit("/", 1)[0] if "/" in url.rstrip("/") else "."


def _join_url(url: str, relative: str) -> str:
    scheme, _, rest = url.partition("://")
    return f"{scheme}://{posixpath.normpath(posixpath.join(rest, relative))}"
