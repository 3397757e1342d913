"""Run a transform over a unit of a batch's rows and encode its output for the target.

One attempt per unit (a range ``[a, b)`` of the batch's rows), for :func:`engine.isolation.isolate`::

    batch, dataframe,  fn(the unit's rows) whole (arrow: as a pyarrow.Table); check and encode
    arrow              every output row
                       any error (the function's, a value the target refuses) -> the unit fails
                       and is split, down to the rows at fault; a batch function's exception
                       returned in a row's place refuses that row alone (an item error)
    rows, async        fn(row) per row; a row's error fails that row alone (an item error), the
                       others' outputs are kept
    none               each row's columns by name

Encoding here (in the worker) means only bytes cross back to the parent. An output row that does
not fit its target column fails like an exception of the transform, so it is isolated to its
source row and dead-lettered with the column named.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import operator
from collections import Counter
from collections.abc import Callable, Collection, Sequence
from typing import Any, NamedTuple

from parallel_batch.core.dict_outputs import DictOutputs
from parallel_batch.core.target import Target, TargetValueError
from parallel_batch.core.transforms import TransformSpec, with_columns
from parallel_batch.engine.isolation import Attempted
from parallel_batch.engine.limiter import ConcurrencyLimiter
from parallel_batch.engine.policy import RetryPolicy
from parallel_batch.engine.retry import FailedItem, acall_with_retries
from parallel_batch.exceptions import TransformOutputError
from parallel_batch.store.copy_data import CopyData, CopyEncoder

__all__ = ["Applier", "RetriedError", "UnitOutput"]

Row = tuple[Any, ...]
Unit = tuple[int, int]

# An async transform's rows were retried concurrently already: isolate gives up at once.
_NO_RETRY = RetryPolicy(max_attempts=1)


class UnitOutput(NamedTuple):
    """What a unit of rows became.

    :param data: the output rows, encoded for the target's COPY.
    :param written: output rows in ``data``.
    :param filtered: source rows that produced no output.
    :param fanout: output rows beyond one per source row.
    :param counts: output rows per source row index, when the kind tells (claims need it).
    :param rows: the output rows themselves (``keep_rows`` only: a refused write's diagnosis).
    :param owners: the source row index of each output row (``keep_rows`` only; None: unknown).
    """

    data: bytes
    written: int
    filtered: int
    fanout: int
    counts: dict[int, int] | None = None
    rows: list[Row] | None = None
    owners: list[int] | None = None


class RetriedError(Exception):
    """An async transform's row that still failed after its retries (its last error's type
    and message, and how many tries it took)."""

    def __init__(self, failure: FailedItem) -> None:
        super().__init__(failure.message)
        self.failure = failure


class Applier:
    """Applies one job's transform in this process.

    :param spec: the transform.
    :param columns: the names of a source row's values.
    :param target: where the output goes.
    :param keep_rows: also return the output rows and their owners (diagnosis of a refused write).
    """

    def __init__(
        self,
        spec: TransformSpec,
        columns: tuple[str, ...],
        target: Target,
        *,
        keep_rows: bool = False,
    ) -> None:
        self.spec = spec
        self.columns = columns
        self.target = target
        self.keep_rows = keep_rows
        self.fn = spec.load()
        self._encoder = CopyEncoder(target.copy)
        self._outputs = DictOutputs(target.columns)
        self._loop: asyncio.AbstractEventLoop | None = None
        if self.fn is None:
            missing = [c for c in target.columns if c not in columns]
            if missing:
                raise TransformOutputError(
                    f"with no transform, every column written must be read: {missing} are not"
                )
            index = [columns.index(c) for c in target.columns]
            pick = operator.itemgetter(*index)
            self._pick: Callable[[Row], Row] | None = (
                None  # the rows read are the rows written, as they are
                if index == list(range(len(columns)))
                else pick
                if len(index) > 1
                else (lambda row: (pick(row),))
            )
        if spec.kind in ("batch", "arrow") and self.fn is not None:
            self.fn = with_columns(self.fn, columns, target.columns)
        attempts = {"rows": self._rows, "batch": self._batch, "dataframe": self._dataframe}
        attempts["arrow"] = self._arrow
        self.attempt: Callable[[Sequence[Row], Unit], Attempted[Unit, UnitOutput]] = (
            self._identity
            if self.fn is None
            else self._async
            if spec.kind == "async"
            else attempts[spec.kind]
        )

    @property
    def policy(self) -> RetryPolicy:
        """The retries ``isolate`` gives a single failing row (never for an output the target
        cannot take: another try gives the same output)."""
        if self.spec.kind == "async":
            return _NO_RETRY
        retry = self.spec.retry
        return dataclasses.replace(
            retry, give_up_on=(*retry.give_up_on, TargetValueError, TransformOutputError)
        )

    def close(self) -> None:
        """Close the event loop of an async transform."""
        if self._loop is not None:
            self._loop.close()
            self._loop = None

    # ---- whole units ----------------------------------------------------------------------

    def _whole(
        self,
        outputs: list[Row] | CopyData,
        unit: Unit,
        owners: Sequence[int] | None,
        *,
        one_to_one: bool = True,
        refused: Collection[int] = (),
    ) -> UnitOutput:
        """Check and encode a unit's outputs (or take them encoded: not with ``keep_rows``).
        ``owners``: each output's source row index, for a kind that may filter or fan out
        (None: one output per source row when ``one_to_one``, else unknown; ``range(*unit)``:
        one output per source row). ``refused``: source rows that are item errors (neither
        written nor filtered)."""
        if owners == range(*unit):
            owners, one_to_one = None, True
        if isinstance(outputs, CopyData):
            data = outputs
        else:
            self.target.check_rows(outputs)
            try:
                data = self._encoder.encode(outputs)
            except Exception as exc:
                if len(outputs) == 1:  # the row at fault, once isolated: say which column
                    raise self.target.explain(outputs[0], exc) from exc
                raise
        n_in, n_out = unit[1] - unit[0], len(outputs)
        counts = None  # claims take None as one output per source row
        filtered, fanout = max(n_in - n_out, 0), max(n_out - n_in, 0)  # net, sources unknown
        if owners is not None:
            counts = dict.fromkeys(
                itertools.filterfalse(set(refused).__contains__, range(*unit)), 0
            )
            counts.update(Counter(owners))
            filtered = sum(1 for n in counts.values() if n == 0)
            fanout = sum(n - 1 for n in counts.values() if n > 1)
        elif self.keep_rows and one_to_one:
            owners = list(range(*unit))
        return UnitOutput(
            data.body,
            n_out,
            filtered=filtered,
            fanout=fanout,
            counts=counts,
            rows=outputs if self.keep_rows and not isinstance(outputs, CopyData) else None,
            owners=list(owners) if self.keep_rows and owners is not None else None,
        )

    def _identity(self, rows: Sequence[Row], unit: Unit) -> Attempted[Unit, UnitOutput]:
        part = _part(rows, unit)
        outputs = part if self._pick is None else list(map(self._pick, part))
        return Attempted(self._whole(outputs, unit, None))

    def _batch(self, rows: Sequence[Row], unit: Unit) -> Attempted[Unit, UnitOutput]:
        assert self.fn is not None
        part = _part(rows, unit)
        outputs = self.fn(part)
        if not isinstance(outputs, list) or len(outputs) != len(part):
            got = len(outputs) if isinstance(outputs, list) else type(outputs).__name__
            raise TransformOutputError(
                f"the transform returned {got} rows for {len(part)} input rows; a 'batch' "
                "transform returns exactly one output row per input row (use transform_kind="
                "'rows' or 'dataframe' to filter or fan out)"
            )
        if not any(map(isinstance, outputs, itertools.repeat(Exception))):
            return Attempted(self._whole(outputs, unit, None))
        # rows refused in place: each an item error of its own, the others written
        errors: list[tuple[Unit, Exception]] = []
        kept: list[Row] = []
        owners: list[int] = []
        for i, output in enumerate(outputs, unit[0]):
            if isinstance(output, Exception):
                errors.append(((i, i + 1), output))
            else:
                kept.append(output)
                owners.append(i)
        return self._refusing(kept, owners, errors, unit)

    def _arrow(self, rows: Sequence[Row], unit: Unit) -> Attempted[Unit, UnitOutput]:
        """The ``arrow`` kind over rows (a source read as rows, a replay): a table of them."""
        from parallel_batch.core.arrow_kind import arrow_rows

        assert self.fn is not None
        outputs, kept, refused = arrow_rows(
            self.fn, self.columns, self.target, rows[unit[0] : unit[1]]
        )
        if not refused:
            return Attempted(self._whole(outputs, unit, None))
        errors = [((unit[0] + i, unit[0] + i + 1), exc) for i, exc in refused]
        return self._refusing(outputs, [unit[0] + i for i in kept], errors, unit)

    def _refusing(
        self, kept: list[Row], owners: list[int], errors: list[tuple[Unit, Exception]], unit: Unit
    ) -> Attempted[Unit, UnitOutput]:
        """The outputs of a unit some of whose rows were refused in place (item errors)."""
        refused = [error_unit[0] for error_unit, _ in errors]
        return Attempted(self._whole(kept, unit, owners, refused=refused), errors)

    def _dataframe(self, rows: Sequence[Row], unit: Unit) -> Attempted[Unit, UnitOutput]:
        from parallel_batch.core.frames import frame_copy, frame_in, frame_out

        assert self.fn is not None
        result = self.fn(frame_in(rows, unit, self.columns))
        if not self.keep_rows:  # a diagnosis needs the rows as Python values
            encoded = frame_copy(result, unit, self.target)
            if encoded is not None:
                return Attempted(self._whole(encoded[0], unit, encoded[1], one_to_one=False))
        outputs, owners = frame_out(result, unit, self.target)
        return Attempted(self._whole(outputs, unit, owners, one_to_one=False))

    # ---- row by row -----------------------------------------------------------------------

    def _rows(self, rows: Sequence[Row], unit: Unit) -> Attempted[Unit, UnitOutput]:
        fn, columns = self.fn, self.columns
        assert fn is not None
        start, stop = unit
        results: list[Any] = []  # the unit's rows' results in order; a row's exception inline
        named = itertools.repeat(columns)
        while len(results) < stop - start:
            try:  # extend keeps the results before a row that raises
                part = itertools.islice(rows, start + len(results), stop)
                results.extend(map(fn, map(dict, map(zip, named, part))))
            except Exception as exc:  # collected: that row alone fails, the next ones go on
                results.append(exc)
        return self._collect(unit, results)

    def _async(self, rows: Sequence[Row], unit: Unit) -> Attempted[Unit, UnitOutput]:
        if self._loop is None:
            self._loop = asyncio.new_event_loop()
        return self._collect(unit, self._loop.run_until_complete(self._gather(rows, unit)))

    async def _gather(self, rows: Sequence[Row], unit: Unit) -> list[Any]:
        fn, columns, policy = self.fn, self.columns, self.spec.retry
        assert fn is not None
        limiter = ConcurrencyLimiter(self.spec.concurrency)

        async def one(row: Row) -> Any:
            async with limiter:
                result = await acall_with_retries(fn, dict(zip(columns, row, strict=True)), policy)
            return RetriedError(result.failure) if result.failure is not None else result.value

        return await asyncio.gather(*(one(rows[i]) for i in range(*unit)))

    def _collect(self, unit: Unit, results: list[Any]) -> Attempted[Unit, UnitOutput]:
        """Check and encode the rows' outputs together (a column at a time, one encoding pass);
        when that fails, row by row, so that a row whose call raised or whose outputs do not fit
        becomes an item error of its own. ``results``: each row's, in the unit's order."""
        indices: Sequence[int] = range(*unit)
        errors: list[tuple[Unit, Exception]] = []
        if any(map(isinstance, results, itertools.repeat(Exception))):  # rows that raised
            kept_indices: list[int] = []
            kept: list[Any] = []
            for i, result in zip(indices, results, strict=True):
                if isinstance(result, Exception):
                    errors.append(((i, i + 1), result))
                else:
                    kept_indices.append(i)
                    kept.append(result)
            indices, results = kept_indices, kept
        dict_rows = self._outputs.rows(results)
        if dict_rows is not None:  # the common case: checked and encoded in one pass
            data = self._encode_all(dict_rows)
            if data is not None:
                return Attempted(self._one_each(indices, dict_rows, data), errors)
            done = [(i, [row]) for i, row in zip(indices, dict_rows, strict=True)]
        else:
            done = []
            for i, result in zip(indices, results, strict=True):
                try:
                    done.append(
                        (i, self._outputs.as_rows(result, self.spec.kind, self.target.table))
                    )
                except Exception as exc:
                    errors.append(((i, i + 1), exc))
            data = self._encode_all([output for _, outputs in done for output in outputs])
        if data is None:  # some output does not fit: row by row
            data, done = self._encode_each(done, errors)
        rows = [output for _, outputs in done for output in outputs]
        counts = {i: len(outputs) for i, outputs in done}
        output = UnitOutput(
            data,
            len(rows),
            filtered=sum(1 for n in counts.values() if not n),
            fanout=sum(n - 1 for n in counts.values() if n > 1),
            counts=counts,
            rows=rows if self.keep_rows else None,
            owners=[i for i, outputs in done for _ in outputs] if self.keep_rows else None,
        )
        return Attempted(output, sorted(errors, key=lambda error: error[0]))

    def _encode_all(self, rows: list[Row]) -> bytes | None:
        """The rows checked and encoded in one pass; None when some row does not fit."""
        try:
            self.target.check_rows(rows)
            return self._encoder.encode(rows).body
        except Exception:
            return None

    def _one_each(self, indices: Sequence[int], outputs: list[Row], data: bytes) -> UnitOutput:
        """A unit's output of one row per row that did not raise."""
        return UnitOutput(
            data,
            len(outputs),
            filtered=0,
            fanout=0,
            # None (claims' "one each") only when no row of the unit failed
            counts=None if isinstance(indices, range) else dict.fromkeys(indices, 1),
            rows=outputs if self.keep_rows else None,
            owners=list(indices) if self.keep_rows else None,
        )

    def _encode_each(
        self, done: list[tuple[int, list[Row]]], errors: list[tuple[Unit, Exception]]
    ) -> tuple[bytes, list[tuple[int, list[Row]]]]:
        """Encode row by row; a row whose outputs do not fit joins ``errors``."""
        out = bytearray()
        kept: list[tuple[int, list[Row]]] = []
        append, check = self._encoder.append, self.target.check_row
        for i, outputs in done:
            mark = len(out)
            try:
                for output in outputs:
                    check(output)
                    try:
                        append(output, out)
                    except Exception as exc:
                        raise self.target.explain(output, exc) from exc
            except Exception as exc:
                del out[mark:]
                errors.append(((i, i + 1), exc))
                continue
            kept.append((i, outputs))
        return bytes(out), kept


def _part(rows: Sequence[Row], unit: Unit) -> list[Row]:
    """The unit's rows as a list (a list's slice is one already)."""
    part = rows[unit[0] : unit[1]]
    return part if isinstance(part, list) else list(part)
