"""Tests of a job's transform spec: checks with exact messages, loading by path, JSON round trip."""

from __future__ import annotations

import functools
from typing import Any

import pytest

from parallel_batch.core.transforms import (
    DEFAULT_ASYNC_RETRY,
    DEFAULT_RETRY,
    TransformSpec,
    callable_path,
    load_callable,
    retry_policy,
)
from parallel_batch.engine.policy import RetryPolicy
from parallel_batch.exceptions import ConfigurationError

HERE = __name__


class FlakyServiceError(Exception):
    """Stands for a transient error of a service."""


def upper(row: dict[str, Any], *, suffix: str = "") -> dict[str, Any]:
    return {k: f"{v}{suffix}".upper() for k, v in row.items()}


async def aupper(row: dict[str, Any]) -> dict[str, Any]:
    return upper(row)


NOT_CALLABLE = 42
borrowed = functools.reduce  # defined in another module


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (
            {"kind": "stream"},
            r"transform_kind must be one of \['rows', 'batch', 'dataframe', 'async', 'arrow'\]",
        ),
        (
            {"path": f"{HERE}:upper", "concurrency": 0},
            "concurrency must be an integer greater than 0",
        ),
        ({"path": f"{HERE}:upper", "concurrency": True}, "concurrency must be an integer"),
        ({"kind": "dataframe"}, "transform_kind 'dataframe' needs a transform"),
        ({"kind": "async"}, "transform_kind 'async' needs a transform"),
        (
            {"path": f"{HERE}:upper", "kwargs": {1: 2}},
            "transform_kwargs must be a dict with str keys",
        ),
        ({"kwargs": {"url": "x"}}, "transform_kwargs needs a transform"),
    ],
)
def test_that_a_bad_spec_is_refused(values: dict[str, Any], message: str) -> None:
    """Test that TransformSpec checks its arguments up front with exact messages."""
    with pytest.raises(ConfigurationError, match=message):
        TransformSpec(**values)


def test_that_no_transform_is_allowed_for_rows_and_batch() -> None:
    """Test that path=None (columns by name) is a valid spec of the sync row kinds and loads as
    None."""
    assert TransformSpec().load() is None
    assert TransformSpec(None, "batch").load() is None


def test_that_a_transform_loads_with_its_kwargs() -> None:
    """Test that load imports the function and binds the spec's kwargs."""
    fn = TransformSpec(f"{HERE}:upper", kwargs={"suffix": "!"}).load()
    assert fn is not None and fn({"a": "x"}) == {"a": "X!"}


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (
            TransformSpec(f"{HERE}:upper", "async"),
            r"is not an 'async def' function: use another transform_kind, or make it async",
        ),
        (
            TransformSpec(f"{HERE}:aupper", "rows"),
            r"is an 'async def' function: use transform_kind='async'",
        ),
        (TransformSpec("no_such_module_pb:fn"), "cannot import no_such_module_pb"),
        (TransformSpec(f"{HERE}:missing"), f"is not a function defined in module {HERE}"),
        (TransformSpec(f"{HERE}:NOT_CALLABLE"), "is not a function defined in module"),
        (TransformSpec(f"{HERE}:borrowed"), "is not a function defined in module"),
        (TransformSpec(f"{HERE}.upper"), "transform must be 'package.module:function'"),
    ],
)
def test_that_a_transform_that_does_not_fit_fails_to_load(
    spec: TransformSpec, message: str
) -> None:
    """Test that load refuses what workers could not import, or what does not fit the kind."""
    with pytest.raises(ConfigurationError, match=message):
        spec.load()


def test_that_load_callable_refuses_a_path_with_two_colons() -> None:
    """Test that a path is exactly one 'module:function'."""
    with pytest.raises(ConfigurationError, match=r"transform must be 'package\.module:function'"):
        load_callable("a:b:c")


def test_that_a_callable_gives_its_path() -> None:
    """Test that a module-level function is named by 'module:function', and a path or None
    passes as it is."""
    assert callable_path(upper) == f"{HERE}:upper"
    assert callable_path("pkg.mod:fn") == "pkg.mod:fn"
    assert callable_path(None) is None


@pytest.mark.parametrize(
    "fn",
    [lambda row: row, functools.partial(upper), FlakyServiceError.__init__],
    ids=["lambda", "partial", "method"],
)
def test_that_a_callable_workers_cannot_import_is_refused(fn: Any) -> None:
    """Test that lambdas, partials and methods are refused with the reason."""

    def nested(row: Any) -> Any:
        return row

    for candidate in (fn, nested):
        with pytest.raises(ConfigurationError, match="must be a function defined at the top level"):
            callable_path(candidate)


def test_that_a_spec_survives_a_round_trip_through_a_dict() -> None:
    """Test that to_dict/from_dict rebuild an equal spec, retry classes included by name."""
    spec = TransformSpec(
        f"{HERE}:aupper",
        "async",
        concurrency=4,
        retry=RetryPolicy(
            max_attempts=5,
            base_delay=0.5,
            max_delay=2.0,
            multiplier=3.0,
            retry_on=(FlakyServiceError, TimeoutError),
            give_up_on=(KeyError,),
        ),
        kwargs={"url": "http://127.0.0.1:1/x", "timeout": 2.5},
    )
    data = spec.to_dict()
    assert data["retry"]["retry_on"] == [f"{HERE}:FlakyServiceError", "builtins:TimeoutError"]
    assert TransformSpec.from_dict(data) == spec
    assert TransformSpec.from_dict({}) == TransformSpec()


@pytest.mark.parametrize(
    ("retry_on", "message"),
    [
        (
            ["no_such_module_pb:Error"],
            "retry: cannot import exception class 'no_such_module_pb:Error'",
        ),
        ([f"{HERE}:upper"], f"retry: '{HERE}:upper' is not an exception class"),
    ],
)
def test_that_a_stored_retry_class_must_load(retry_on: list[str], message: str) -> None:
    """Test that from_dict names a retry class it cannot import."""
    with pytest.raises(ConfigurationError, match=message):
        TransformSpec.from_dict({"path": None, "retry": {"retry_on": retry_on}})


def test_that_a_retry_policy_comes_from_classes_names_or_a_policy() -> None:
    """Test that retry_policy takes the kind's default, a policy as is, or exception classes
    (objects or names) with the kind's default waits."""
    assert retry_policy(None, "rows") == DEFAULT_RETRY
    assert retry_policy(None, "async") == DEFAULT_ASYNC_RETRY
    own = RetryPolicy(max_attempts=2)
    assert retry_policy(own, "async") is own
    by_name = retry_policy([f"{HERE}:FlakyServiceError", TimeoutError], "async")
    assert by_name.retry_on == (FlakyServiceError, TimeoutError)
    assert (by_name.max_attempts, by_name.base_delay) == (
        DEFAULT_ASYNC_RETRY.max_attempts,
        DEFAULT_ASYNC_RETRY.base_delay,
    )
    assert retry_policy(FlakyServiceError, "rows").retry_on == (FlakyServiceError,)
