"""A batch read as a DataFrame (a table read a column at a time for a ``dataframe`` transform),
whose rows are made as tuples only when something asks for one (a dead letter, a diagnosis).

::

    reader  --one array per column-->  FrameRows(frame, make_rows)
    frames.frame_in(rows, unit)        frame.iloc[unit] (a copy): no tuple is made
    rows[i], len(rows)                 as the rows a row reader gives (made once, on first use)

pandas is not imported here: only the processes that run a dataframe transform make one.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, overload

__all__ = ["FrameRows"]

Row = tuple[Any, ...]


class FrameRows(Sequence[Row]):
    """A batch's rows held as a DataFrame indexed 0..n-1 in the reader's column order.

    :param frame: the rows as the dataframe kind's ``frame_in`` would make them from tuples.
    :param make_rows: makes the same rows as tuples of Python values (called once, if ever).
    """

    def __init__(self, frame: Any, make_rows: Callable[[], list[Row]]) -> None:
        self.frame = frame
        self._make_rows = make_rows
        self._rows: list[Row] | None = None

    def __len__(self) -> int:
        return len(self.frame)

    @overload
    def __getitem__(self, index: int) -> Row: ...

    @overload
    def __getitem__(self, index: slice) -> list[Row]: ...

    def __getitem__(self, index: int | slice) -> Row | list[Row]:
        if self._rows is None:
            self._rows = self._make_rows()
        return self._rows[index]

    def __repr__(self) -> str:
        return f"FrameRows({len(self)} rows, columns {list(self.frame.columns)})"
