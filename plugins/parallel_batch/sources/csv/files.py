"""Where a CSV file is read from, and which file a job planned on.

A path is a local file or a URL (``s3://``, ``gs://``, ``file://``...) that fsspec can open:
``open_binary`` returns a seekable binary stream either way, and the readers only ever seek to a
byte range and read it, so a file on object storage is read by ranges (one ranged GET per read
block, of exactly the bytes asked for: no read-ahead past a chunk's end), never downloaded whole
to one worker. Credentials come from ``storage_options`` (the Airflow layer fills them from a
connection, in memory only) or from the filesystem's usual sources (AWS_* variables, instance
profiles, GOOGLE_APPLICATION_CREDENTIALS).

A file changed after planning is refused instead of being read at byte offsets that no longer
fall on record boundaries: :class:`FileIdentity` is its size and modification time (and ETag on
object storage), checked before every chunk.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, BinaryIO, cast

from parallel_batch.exceptions import ConfigurationError

__all__ = ["FileIdentity", "StorageOptions", "is_url", "open_binary", "stream_size"]

StorageOptions = Mapping[str, Any]


def is_url(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` names a file by URL (``scheme://...``) rather than a local path."""
    return "://" in os.fspath(path)


def _local(path: str | os.PathLike[str]) -> str | None:
    name = os.fspath(path)
    if not is_url(name):
        return name
    if name.startswith("file://"):
        return name[len("file://") :]
    return None


def _filesystem(url: str, options: StorageOptions | None) -> tuple[Any, str]:
    try:
        from fsspec.core import url_to_fs
    except ImportError:  # pragma: no cover - fsspec comes with Airflow
        raise ConfigurationError(f"reading {url!r} needs fsspec (pip install fsspec)") from None
    try:
        fs, inner = url_to_fs(url, **dict(options or {}))
    except (ImportError, ValueError) as exc:
        scheme = url.split("://", 1)[0]
        raise ConfigurationError(
            f"cannot open {url!r}: {exc} (the {scheme}:// filesystem needs its fsspec package, "
            "e.g. s3fs for s3://, gcsfs for gs://, adlfs for abfs://)"
        ) from exc
    return fs, inner


def open_binary(
    path: str | os.PathLike[str], storage_options: StorageOptions | None = None
) -> BinaryIO:
    """Open a local file or a URL for reading bytes; the stream seeks (ranged reads remotely).

    :raises ConfigurationError: when the URL's filesystem is not installed.
    :raises OSError: when the file cannot be opened.
    """
    local = _local(path)
    if local is not None:
        return open(local, "rb")
    fs, inner = _filesystem(os.fspath(path), storage_options)
    # No cache: the readers read blocks within their range (256 KiB reading a chunk, 4 MiB
    # planning), each one ranged GET of exactly its bytes.
    return cast(BinaryIO, fs.open(inner, "rb", cache_type="none"))


def stream_size(stream: BinaryIO) -> int:
    """The size in bytes of an open stream (local or remote); leaves it at its end."""
    return stream.seek(0, os.SEEK_END)


def _mtime_ns(value: Any) -> int:
    if isinstance(value, datetime):
        return int(value.timestamp() * 1_000_000_000)
    if isinstance(value, int | float):
        return int(value * 1_000_000_000)
    return 0


@dataclass(frozen=True)
class FileIdentity:
    """A file's size and modification time: what must not change between planning and loading.

    :param size: bytes.
    :param mtime_ns: modification time, ns since the epoch (0 when the storage has none).
    :param etag: the object's ETag or generation on object storage, "" for a local file.
    """

    size: int
    mtime_ns: int
    etag: str = ""

    @classmethod
    def of(
        cls, path: str | os.PathLike[str], storage_options: StorageOptions | None = None
    ) -> FileIdentity:
        """Return the identity of the file at ``path``.

        :raises ConfigurationError: when it does not exist, is not a regular file or cannot be
            read.
        """
        local = _local(path)
        if local is None:
            return cls._remote(os.fspath(path), storage_options)
        name = local
        try:
            info = os.stat(name)
        except FileNotFoundError:
            raise ConfigurationError(
                f"CSV file {name!r} does not exist (every chunk task must see it at this path)"
            ) from None
        except OSError as exc:
            raise ConfigurationError(f"cannot read CSV file {name!r}: {exc}") from exc
        if not os.path.isfile(name):
            raise ConfigurationError(f"{name!r} is not a regular file")
        if not os.access(name, os.R_OK):
            raise ConfigurationError(f"CSV file {name!r} is not readable")
        return cls(info.st_size, info.st_mtime_ns)

    @classmethod
    def _remote(cls, url: str, storage_options: StorageOptions | None) -> FileIdentity:
        fs, inner = _filesystem(url, storage_options)
        try:
            info = fs.info(inner)
        except FileNotFoundError:
            raise ConfigurationError(f"CSV file {url!r} does not exist") from None
        except OSError as exc:
            raise ConfigurationError(f"cannot read CSV file {url!r}: {exc}") from exc
        if info.get("type") != "file":
            raise ConfigurationError(f"{url!r} is not a file")
        etag = info.get("ETag") or info.get("etag") or info.get("generation") or ""
        mtime = info.get("LastModified") or info.get("mtime") or info.get("updated")
        return cls(int(info["size"]), _mtime_ns(mtime), str(etag).strip('"'))

    def check(
        self, path: str | os.PathLike[str], storage_options: StorageOptions | None = None
    ) -> None:
        """Raise ConfigurationError unless the file at ``path`` still has this identity."""
        now = FileIdentity.of(path, storage_options)
        if now != self:
            raise ConfigurationError(
                f"CSV file {os.fspath(path)!r} changed after its chunks were planned "
                f"(size {self.size} -> {now.size} bytes, mtime {self.mtime_ns} -> "
                f"{now.mtime_ns}{self._etags(now)}): its byte ranges no longer fit it; load it "
                "again with full_refresh=true or under a new job_key"
            )

    def _etags(self, now: FileIdentity) -> str:
        return f", etag {self.etag!r} -> {now.etag!r}" if self.etag or now.etag else ""

    def to_dict(self) -> dict[str, Any]:
        """Return the identity as a JSON-able dict."""
        data: dict[str, Any] = {"size": self.size, "mtime_ns": self.mtime_ns}
        if self.etag:
            data["etag"] = self.etag
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FileIdentity:
        """Rebuild an identity from :meth:`to_dict`'s output."""
        return cls(int(data["size"]), int(data["mtime_ns"]), str(data.get("etag", "")))
