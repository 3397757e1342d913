"""Which file a job planned on: its size and modification time, checked before every chunk.

A file changed after planning is refused instead of being read at byte offsets that no longer
fall on record boundaries.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from parallel_batch.exceptions import ConfigurationError

__all__ = ["FileIdentity"]


@dataclass(frozen=True)
class FileIdentity:
    """A file's size and modification time: what must not change between planning and loading.

    :param size: bytes.
    :param mtime_ns: modification time, ns since the epoch.
    """

    size: int
    mtime_ns: int

    @classmethod
    def of(cls, path: str | os.PathLike[str]) -> FileIdentity:
        """Return the identity of the file at ``path``.

        :raises ConfigurationError: when it does not exist, is not a regular file or cannot be
            read.
        """
        name = os.fspath(path)
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

    def check(self, path: str | os.PathLike[str]) -> None:
        """Raise ConfigurationError unless the file at ``path`` still has this identity."""
        now = FileIdentity.of(path)
        if now != self:
            raise ConfigurationError(
                f"CSV file {os.fspath(path)!r} changed after its chunks were planned "
                f"(size {self.size} -> {now.size} bytes, mtime {self.mtime_ns} -> "
                f"{now.mtime_ns}): its byte ranges no longer fit it; load it again with "
                "full_refresh=true or under a new job_key"
            )

    def to_dict(self) -> dict[str, int]:
        """Return the identity as a JSON-able dict."""
        return {"size": self.size, "mtime_ns": self.mtime_ns}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FileIdentity:
        """Rebuild an identity from :meth:`to_dict`'s output."""
        return cls(int(data["size"]), int(data["mtime_ns"]))
