"""The errors this package raises: one base class, one subclass per failure."""

from __future__ import annotations


class ParallelBatchError(Exception):
    """Base class of every error raised by parallel_batch."""


class ConfigurationError(ParallelBatchError):
    """Raised when a setting or argument is invalid; retrying cannot help."""


class InvalidIdentifierError(ConfigurationError):
    """Raised when a table or column name is not a safe SQL identifier."""


class DatabaseUnavailableError(ParallelBatchError):
    """Raised when no database is configured and the embedded server cannot start."""


class LeaseLostError(ParallelBatchError):
    """Raised when a chunk's lease was taken over by another attempt; nothing was written."""


class ChunkBusyError(ParallelBatchError):
    """Raised when a live attempt already holds the chunk (a duplicate run of the same job)."""


class WorkerCrashedError(ParallelBatchError):
    """Raised when a worker process died abruptly while processing an item."""


class TaskTimeoutError(ParallelBatchError):
    """Raised when a task in the worker pool ran longer than its timeout."""
