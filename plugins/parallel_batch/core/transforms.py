"""A job's transform: which function, of which kind, how patient with failing rows.

Four kinds, one contract for the core (see :mod:`parallel_batch.core.apply` for how each runs)::

    rows       fn(row: dict) -> dict | list[dict] | None    None or [] filters the row; a list
                                                           fans out; keys are target columns
    batch      fn(rows: list[tuple]) -> list[tuple]         one output per input, in the
                                                           target's column order (the fast path);
                                                           an exception in a row's place refuses
                                                           that row alone (a dead letter); the
                                                           names, if it asks: ``columns``
                                                           (input), ``target_columns`` (output)
    dataframe  fn(df: pandas.DataFrame) -> DataFrame        any number of output rows; columns
                                                           are target columns
    async      async fn(row: dict) -> dict | list | None    at most ``concurrency`` calls in
                                                           flight per task, each row retried
                                                           with backoff on ``retry``'s errors
    arrow      fn(table: pyarrow.Table) -> Table            one output per input, in order, but
               | (Table, {index: Exception})               the rows refused (by input index:
                                                           each a dead letter); columns are
                                                           target columns (one left out: NULL);
                                                           a CSV's batches go in and out as
                                                           columns (no Python object a value)

No transform (``path=None``) writes each row's columns into the target columns of the same names.

The function is named ``"package.module:function"`` (or given as a module-level callable, whose
path is taken): worker processes import it by name, and the job stores the name so that every
chunk task, retry and replay runs the same function.
"""

from __future__ import annotations

import functools
import importlib
import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from inspect import Parameter
from typing import Any, Literal, get_args

from parallel_batch.engine.policy import RetryPolicy
from parallel_batch.exceptions import ConfigurationError

__all__ = [
    "DEFAULT_CONCURRENCY",
    "DEFAULT_RETRY",
    "TRANSFORM_KINDS",
    "TransformKind",
    "TransformSpec",
    "callable_path",
    "load_callable",
    "with_columns",
]

TransformKind = Literal["rows", "batch", "dataframe", "async", "arrow"]
TRANSFORM_KINDS: tuple[TransformKind, ...] = get_args(TransformKind)

# The retries a failing row gets by default: 3 tries in all, waits of at most 2 ms then 4 ms
# (full jitter), once per round for all the failing rows of a batch. Rows fail mostly for good
# (bad data), so waits only slow the batch: with a poison row every 997 rows, 10 ms / 20 ms
# ceilings cost 5-10% of the rows/s against these. A transform that calls a flaky service
# should pass its own policy.
DEFAULT_RETRY = RetryPolicy(max_attempts=3, base_delay=0.002, max_delay=1.0)
# The async kind's retries when none are given: I/O is worth waiting for.
DEFAULT_ASYNC_RETRY = RetryPolicy(max_attempts=4, base_delay=0.2, max_delay=5.0)
# Calls of an async transform in flight per chunk task. Larger: more throughput from a slow
# service (until it pushes back); smaller: gentler on it.
DEFAULT_CONCURRENCY = 16


def load_callable(path: str) -> Callable[..., Any]:
    """Import a module-level function given as ``"package.module:function"``.

    :raises ConfigurationError: when it cannot be imported or is not a module-level callable.
    """
    if not isinstance(path, str) or path.count(":") != 1:
        raise ConfigurationError(f"transform must be 'package.module:function', got {path!r}")
    module_name, _, attribute = path.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigurationError(f"transform {path!r}: cannot import {module_name}: {exc}") from exc
    fn = getattr(module, attribute, None)
    if not callable(fn) or "." in attribute or getattr(fn, "__module__", None) != module_name:
        raise ConfigurationError(
            f"transform {path!r} is not a function defined in module {module_name}"
        )
    return fn


def callable_path(transform: str | Callable[..., Any] | None) -> str | None:
    """Return the ``"module:function"`` of a transform given as a path or a module-level callable.

    :raises ConfigurationError: for a lambda, a nested function, a method or a ``__main__`` one
        (worker processes could not import it).
    """
    if transform is None or isinstance(transform, str):
        return transform
    module = getattr(transform, "__module__", None)
    name = getattr(transform, "__qualname__", None)
    if not module or not name or "<" in name or "." in name or module == "__main__":
        raise ConfigurationError(
            f"transform {transform!r} must be a function defined at the top level of an "
            "importable module (worker processes import it by name)"
        )
    return f"{module}:{name}"


def with_columns(
    fn: Callable[..., Any], columns: tuple[str, ...], target_columns: tuple[str, ...]
) -> Callable[..., Any]:
    """A ``batch`` (or ``arrow``) function given the column names it asks for by parameter name: ``columns``
    (the names of each input row's values) and ``target_columns`` (the order of its output
    rows' values), unless its ``transform_kwargs`` give them already."""
    try:
        parameters = inspect.signature(fn).parameters
    except (TypeError, ValueError):  # a builtin without a signature: it asks for nothing
        return fn
    given = fn.keywords if isinstance(fn, functools.partial) else {}
    rows = next(iter(parameters), None)  # the first parameter takes the rows, whatever its name
    names = {"columns": columns, "target_columns": target_columns}
    wanted = {
        name: value
        for name, value in names.items()
        if name in parameters
        and name != rows
        and name not in given
        and parameters[name].kind not in (Parameter.POSITIONAL_ONLY, Parameter.VAR_POSITIONAL)
    }
    return functools.partial(fn, **wanted) if wanted else fn


def _class_path(cls: type) -> str:
    return f"{cls.__module__}:{cls.__qualname__}"


def _load_class(path: str) -> type[BaseException]:
    module_name, _, name = path.partition(":")
    try:
        cls = getattr(importlib.import_module(module_name), name)
    except (ImportError, AttributeError) as exc:
        raise ConfigurationError(f"retry: cannot import exception class {path!r}: {exc}") from exc
    if not (isinstance(cls, type) and issubclass(cls, BaseException)):
        raise ConfigurationError(f"retry: {path!r} is not an exception class")
    return cls


def retry_policy(
    value: RetryPolicy | Sequence[type[BaseException] | str] | None, kind: str
) -> RetryPolicy:
    """A retry policy from what a user passes: a policy, exception classes (or their
    ``"module:Class"`` names) to retry with the kind's default waits, or None for the default."""
    default = DEFAULT_ASYNC_RETRY if kind == "async" else DEFAULT_RETRY
    if value is None:
        return default
    if isinstance(value, RetryPolicy):
        return value
    if isinstance(value, type) and issubclass(value, BaseException):
        value = (value,)
    classes = tuple(_load_class(c) if isinstance(c, str) else c for c in value)
    return RetryPolicy(
        max_attempts=default.max_attempts,
        base_delay=default.base_delay,
        max_delay=default.max_delay,
        retry_on=classes,
    )


@dataclass(frozen=True)
class TransformSpec:
    """Which transform a job runs, and how.

    :param path: ``"package.module:function"``; None: no transform (columns by name).
    :param kind: ``"rows"``, ``"batch"``, ``"dataframe"``, ``"async"`` or ``"arrow"``.
    :param concurrency: calls in flight per task (``async`` only).
    :param retry: tries per failing row in all, and which errors are worth another try.
    :param kwargs: keyword arguments every call gets (JSON values: a service's URL, a timeout).
    """

    path: str | None = None
    kind: TransformKind = "rows"
    concurrency: int = DEFAULT_CONCURRENCY
    retry: RetryPolicy = field(default=DEFAULT_RETRY)
    kwargs: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in TRANSFORM_KINDS:
            raise ConfigurationError(
                f"transform_kind must be one of {list(TRANSFORM_KINDS)}, got {self.kind!r}"
            )
        if (
            not isinstance(self.concurrency, int)
            or isinstance(self.concurrency, bool)
            or self.concurrency < 1
        ):
            raise ConfigurationError("concurrency must be an integer greater than 0")
        if self.path is None and self.kind not in ("rows", "batch"):
            raise ConfigurationError(f"transform_kind {self.kind!r} needs a transform")
        if not isinstance(self.kwargs, dict) or not all(isinstance(k, str) for k in self.kwargs):
            raise ConfigurationError("transform_kwargs must be a dict with str keys")
        if self.path is None and self.kwargs:
            raise ConfigurationError("transform_kwargs needs a transform")

    def load(self) -> Callable[..., Any] | None:
        """Import the function and check that it fits its kind.

        :raises ConfigurationError: when it cannot be imported, or an ``async`` transform is not
            a coroutine function (or another kind is one).
        """
        if self.path is None:
            return None
        fn = load_callable(self.path)
        if self.kwargs:
            fn = functools.partial(fn, **self.kwargs)
        is_async = inspect.iscoroutinefunction(fn)
        if self.kind == "async" and not is_async:
            raise ConfigurationError(
                f"transform {self.path!r} is not an 'async def' function: use another "
                "transform_kind, or make it async"
            )
        if self.kind != "async" and is_async:
            raise ConfigurationError(
                f"transform {self.path!r} is an 'async def' function: use transform_kind='async'"
            )
        return fn

    def to_dict(self) -> dict[str, Any]:
        """Return the spec as JSON-ready data (exception classes by ``"module:Class"`` name)."""
        retry = self.retry
        return {
            "path": self.path,
            "kind": self.kind,
            "concurrency": self.concurrency,
            "kwargs": dict(self.kwargs),
            "retry": {
                "max_attempts": retry.max_attempts,
                "base_delay": retry.base_delay,
                "max_delay": retry.max_delay,
                "multiplier": retry.multiplier,
                "retry_on": [_class_path(c) for c in retry.retry_on],
                "give_up_on": [_class_path(c) for c in retry.give_up_on],
            },
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TransformSpec:
        """Rebuild a spec from :meth:`to_dict`'s output."""
        retry = dict(data.get("retry") or {})
        for name in ("retry_on", "give_up_on"):
            if name in retry:
                retry[name] = tuple(_load_class(path) for path in retry[name])
        return cls(
            path=data.get("path"),
            kind=data.get("kind", "rows"),
            concurrency=int(data.get("concurrency", DEFAULT_CONCURRENCY)),
            kwargs=dict(data.get("kwargs") or {}),
            retry=RetryPolicy(**retry) if retry else DEFAULT_RETRY,
        )
