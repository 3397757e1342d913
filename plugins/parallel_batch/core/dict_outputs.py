"""A ``rows`` transform's output dicts as the target's rows, at C speed where they allow it.

A result is one dict of written columns (the others are NULL). Three paths, fastest first::

    every dict holds every written column    itemgetter per dict
    every dict holds the same subset          itemgetter of that subset, NULLs appended (and the
                                              columns put in the target's order): a transform
                                              passing its source row on into a wider target
    anything else                             each dict merged over all-NULL, or None (the caller
                                              goes row by row and names what is wrong)
"""

from __future__ import annotations

import itertools
import operator
from collections.abc import Callable, Sequence
from typing import Any

from parallel_batch.core.target import TargetValueError
from parallel_batch.exceptions import TransformOutputError

__all__ = ["DictOutputs"]

Row = tuple[Any, ...]
_Picker = Callable[[list[Any]], list[Row]]


class DictOutputs:
    """Reads output dicts as rows of the written columns ``names``, in their order."""

    def __init__(self, names: Sequence[str]) -> None:
        self._names = tuple(names)
        self.columns = frozenset(names)
        self._all_null: dict[str, Any] = dict.fromkeys(names)  # columns left out: NULL
        self._width = len(names)
        self._dict_type = itertools.repeat(dict)
        getter = operator.itemgetter(*names)
        self.pick_one: Callable[[dict[str, Any]], Row] = (
            getter if len(names) > 1 else (lambda values: (getter(values),))
        )
        self._pickers: dict[frozenset[str], tuple[int, _Picker | None]] = {}

    def rows(self, results: list[Any]) -> list[Row] | None:
        """The outputs at C speed when every result is one dict of written columns (the others
        NULL); None otherwise."""
        width, pick = self._width, None
        if results and type(results[0]) is dict and len(results[0]) != width:
            # the results may all leave out the same columns (a transform that passes the
            # source row on, into a target with more columns): picked without a dict each
            width, pick = self._partial_picker(results[0].keys())
        try:  # the common case: dicts of the same written columns (as many keys as columns)
            picked = list(map(self.pick_one, results)) if pick is None else pick(results)
            if all(map(width.__eq__, map(len, results))) and all(
                map(isinstance, results, self._dict_type)
            ):
                return picked
        except (KeyError, TypeError):  # a column left out; not all dicts
            pass
        try:
            if not all(map(self.columns.issuperset, map(dict.keys, results))):
                return None
            return list(map(self.pick_one, map(self._all_null.__or__, results)))
        except TypeError:  # not all dicts
            return None

    def _partial_picker(self, keys: Any) -> tuple[int, _Picker | None]:
        """``(len(keys), pick)``: ``pick(results)`` the rows of results that hold exactly the
        written columns ``keys`` (NULL for the others), in the target's order, a C call per row
        and column set; ``(width, None)`` when ``keys`` are not such a set."""
        key_set = frozenset(keys)
        cached = self._pickers.get(key_set)
        if cached is None:
            cached = self._pickers[key_set] = self._make_picker(key_set)
        return cached

    def _make_picker(self, keys: frozenset[str]) -> tuple[int, _Picker | None]:
        present = [c for c in self._names if c in keys]
        if not present or len(present) != len(keys):  # none written, or a column not written
            return self._width, None
        missing = [c for c in self._names if c not in keys]
        nones = (None,) * len(missing)
        getter = operator.itemgetter(*present)
        get: Callable[[dict[str, Any]], Row] = (
            getter if len(present) > 1 else (lambda values: (getter(values),))
        )
        order = [
            present.index(c) if c in keys else len(present) + missing.index(c) for c in self._names
        ]
        reorder = operator.itemgetter(*order)
        in_order = order == sorted(order)  # the columns left out are the last ones

        def pick(results: list[dict[str, Any]]) -> list[Row]:
            extended = map(tuple.__add__, map(get, results), itertools.repeat(nones))
            return list(extended) if in_order else list(map(reorder, extended))

        return len(present), pick

    def as_rows(self, result: Any, kind: str, table: str) -> list[Row]:
        """One call's result (a dict, a list of dicts, or None) as rows; ``kind`` and
        ``table`` (the target) name what is wrong with one that is neither.

        :raises TransformOutputError: for a result of another type.
        :raises TargetValueError: for a column the target does not have.
        """
        if type(result) is dict:  # the common case first
            return [self.row(result, table)]
        if result is None:
            return []
        if isinstance(result, dict):
            return [self.row(result, table)]
        if isinstance(result, list):
            return [self.row(item, table) for item in result]
        raise TransformOutputError(
            f"the transform returned a {type(result).__name__}; a '{kind}' transform "
            "returns a dict (one output row), a list of dicts, or None (filter the row out)"
        )

    def row(self, values: Any, table: str) -> Row:
        """One output dict as a row (a column it leaves out: NULL)."""
        if not isinstance(values, dict):
            raise TransformOutputError(
                f"the transform returned a list holding a {type(values).__name__}; "
                "each output row is a dict of target columns"
            )
        if not self.columns.issuperset(values):
            unknown = values.keys() - self.columns
            raise TargetValueError(
                f"{sorted(unknown)[0]!r} is not a column written to {table} "
                f"(columns: {', '.join(self._names)})"
            )
        try:
            return self.pick_one(values)
        except KeyError:  # a column the dict leaves out is NULL
            return tuple(map(values.get, self._names))
