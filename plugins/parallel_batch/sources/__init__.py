"""The sources a job can read: table key ranges and CSV byte ranges. Plan and read only."""

from __future__ import annotations

from typing import Any

from parallel_batch.core.source import Source
from parallel_batch.exceptions import ConfigurationError
from parallel_batch.sources.csv.source import CsvSource
from parallel_batch.sources.table.source import TableSource

__all__ = ["CsvSource", "TableSource", "source_from_dict"]

_KINDS: dict[str, Any] = {TableSource.kind: TableSource, CsvSource.kind: CsvSource}


def source_from_dict(data: dict[str, Any]) -> Source:
    """Rebuild a source from ``{"kind": ..., **source.to_dict()}`` (a job's stored spec)."""
    values = dict(data)
    kind = values.pop("kind", None)
    cls = _KINDS.get(str(kind))
    if cls is None:
        raise ConfigurationError(f"unknown source kind {kind!r}; known: {sorted(_KINDS)}")
    source: Source = cls.from_dict(values)
    return source
