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


class AirflowServiceError(ParallelBatchError):
    """Raised when a local Airflow service (scheduler, api-server, ...) fails to start or dies."""


class WorkerStartError(ParallelBatchError):
    """Raised when a worker process cannot start: its initializer raised, it died or hung."""


class PoolClosedError(ParallelBatchError):
    """Raised when a batch is submitted to a closed worker pool, or cancelled by its close."""


class WorkerTaskError(ParallelBatchError):
    """Raised in place of a worker's exception that could not be pickled back to the parent."""


class StageOutputError(ParallelBatchError):
    """Raised when a pipeline batch stage returns neither None nor one result per input item."""


class CsvHeaderError(ConfigurationError):
    """Raised when a CSV file's header is missing, unreadable or not the expected columns."""


class TransformOutputError(ParallelBatchError):
    """Raised when a transform returns something its kind does not allow (a batch transform
    another number of rows than it was given, a dict with a key that is no target column)."""
