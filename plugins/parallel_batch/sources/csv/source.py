"""A CSV file as a job's source: byte-range chunks and batches on record boundaries, typed records.

::

    CsvSource(path, schema, header, dialect)      stored with the job as JSON (with the file's
        plan()        -> byte ranges on record     size and mtime: a file changed after planning
                         boundaries (planner)      is refused, never read at stale offsets)
        chunk_reader() -> CsvChunkReader
            batches(after)   the chunk cut into ranges of about batch_rows records (plan_ranges,
                             one scan of the chunk; each range knows its first line)
            read(ref)        the range's records, typed, each error at its true starting line
            split(ref, k)    a range cut into k ranges on record boundaries

A checkpoint is ``{"offset": o, "line": l}``: the next record starts at byte ``o`` on line ``l``,
so a resumed attempt seeks there directly.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from itertools import pairwise
from typing import Any, NamedTuple

from parallel_batch.core.source import ColumnsBatch, ReadBatch, Row, Sizing
from parallel_batch.exceptions import ConfigurationError
from parallel_batch.sources.csv.convert import ColumnKind, convert_field
from parallel_batch.sources.csv.dialect import DEFAULT_DIALECT, CsvDialect
from parallel_batch.sources.csv.files import FileIdentity, StorageOptions, open_binary
from parallel_batch.sources.csv.planner import FileChunk, plan_csv_chunks, plan_ranges
from parallel_batch.sources.csv.reader import read_csv_chunk, read_csv_header
from parallel_batch.sources.csv.records import RecordError
from parallel_batch.sources.csv.scan import iter_blocks
from parallel_batch.sources.csv.schema import CsvColumn, CsvSchema
from parallel_batch.store.deadletters import DeadLetter, StoredDeadLetter

__all__ = ["READER_ERRORS", "CsvBatchRef", "CsvChunkReader", "CsvSource", "line_key"]

# error_type of a dead letter, by what is wrong with the record (the status view groups by it).
READER_ERRORS = {
    "encoding": "CsvEncodingError",
    "quoting": "CsvQuotingError",
    "field_count": "CsvFieldCountError",
    "value": "CsvValueError",
    "too_long": "CsvRecordTooLongError",
}
# Records read from the first chunk to estimate records per line and bytes per record. Larger:
# a closer estimate; smaller: a faster plan. It sizes batches and feeds progress and ETAs.
SAMPLE_RECORDS = 2_000
_COUNT_BLOCK_BYTES = 4 << 20
# The smallest batch range in bytes (a batch of a few records costs a commit each).
MIN_BATCH_BYTES = 16 << 10


def line_key(line: int) -> str:
    """The dead-letter item key of the record starting on ``line``."""
    return f"line:{line}"


def _no_nul(value: str) -> str:
    # jsonb cannot hold NUL: a record with one must still become a dead letter
    return value.replace("\x00", "\\u0000")


def record_letter(error: RecordError) -> DeadLetter:
    """The dead letter of a record that could not be read."""
    return DeadLetter(
        item_key=line_key(error.line),
        line_number=error.line,
        payload={"raw": _no_nul(error.raw)},
        error_type=READER_ERRORS.get(error.kind, READER_ERRORS["value"]),
        message=error.reason,
    )


def _again(kind: ColumnKind, required: bool, value: Any) -> Any:
    """A payload value (JSON) back to its column's type."""
    if value is None:
        return None
    if kind == "json":
        return value
    text = str(value).lower() if isinstance(value, bool) else str(value)
    return convert_field(kind, required, text)


class CsvBatchRef(NamedTuple):
    """A batch of a CSV chunk: the records in bytes ``[start, end)``.

    :param first_line: the line its first record starts on.
    :param next_line: the line the record after it starts on.
    """

    start: int
    end: int
    first_line: int
    next_line: int


@dataclass(frozen=True)
class CsvSource:
    """A CSV file read as typed records.

    :param path: the file, as every chunk task sees it: a local path or a URL (``s3://``...).
    :param schema: the CSV's columns in file order (header names), with their kinds.
    :param names: the name each column's values go by (the target column it loads into);
        default: its header name.
    :param header: whether the first record is a header.
    :param identity: the file's size and mtime when the job was planned (set by :meth:`plan`).
    :param record_bytes: bytes per record in the plan's sample (sizes the batches).
    :param dialect: delimiter, quoting, encoding and NULL spellings.
    :param storage_conn_id: the Airflow connection that holds the URL's credentials (a name,
        stored with the job; the Airflow layer turns it into ``storage_options``).
    :param storage_options: the filesystem's options for a URL (credentials, endpoint): held in
        memory only, never stored with the job (the Airflow layer fills them from a connection
        in every task that reads the file).
    """

    path: str
    schema: CsvSchema
    names: tuple[str, ...] = ()
    header: bool = True
    identity: FileIdentity | None = None
    record_bytes: float = 100.0
    dialect: CsvDialect = DEFAULT_DIALECT
    storage_conn_id: str | None = None
    storage_options: StorageOptions | None = field(default=None, compare=False, repr=False)

    kind = "csv"

    def __post_init__(self) -> None:
        if not isinstance(self.path, str) or not self.path:
            raise ValueError("path must not be empty")
        names = tuple(self.names) or self.schema.names
        if len(names) != len(self.schema.columns):
            raise ValueError("names must give one name per CSV column")
        object.__setattr__(self, "names", names)

    @property
    def name(self) -> str:
        return self.path

    @property
    def columns(self) -> tuple[str, ...]:
        return self.names

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "schema": [
                {"name": c.name, "kind": c.kind, "required": c.required}
                for c in self.schema.columns
            ],
            "names": list(self.names),
            "header": self.header,
            "identity": None if self.identity is None else self.identity.to_dict(),
            "record_bytes": self.record_bytes,
            "dialect": self.dialect.to_dict(),
            "storage_conn_id": self.storage_conn_id,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CsvSource:
        identity = data.get("identity")
        return cls(
            path=data["path"],
            schema=CsvSchema([CsvColumn(**column) for column in data["schema"]]),
            names=tuple(data.get("names") or ()),
            header=bool(data.get("header", True)),
            identity=None if identity is None else FileIdentity.from_dict(identity),
            record_bytes=float(data.get("record_bytes", 100.0)),
            dialect=CsvDialect.from_dict(data.get("dialect")),
            storage_conn_id=data.get("storage_conn_id"),
        )

    def with_storage(self, storage_options: StorageOptions | None) -> CsvSource:
        """This source reading its file with these filesystem options."""
        return replace(self, storage_options=storage_options)

    def check_file(self) -> FileIdentity:
        """Check that the file is there and readable, with the expected header.

        :raises ConfigurationError: saying what is wrong (CsvHeaderError for the header).
        """
        identity = FileIdentity.of(self.path, self.storage_options)
        if self.header:
            header = read_csv_header(self.path, self.dialect, self.storage_options)
            self.schema.check_header(header)
        return identity

    def plan(self, conninfo: str | None, sizing: Sizing) -> list[dict[str, Any]]:
        """Plan byte ranges; the entries carry the records each holds (estimated)."""
        self.check_file()
        planned = plan_csv_chunks(
            self.path,
            chunks=sizing.chunks,
            chunk_bytes=None if sizing.chunks is not None else sizing.chunk_size,
            max_chunks=sizing.max_chunks,
            has_header=self.header,
            dialect=self.dialect,
            storage_options=self.storage_options,
        )
        estimates, _ = self.estimate(planned)
        return [
            {**chunk.to_dict(), "rows": rows}
            for chunk, rows in zip(planned, estimates, strict=True)
        ]

    def planned(self) -> CsvSource:
        """This source with the file's identity and the bytes per record of a sample: what a job
        stores so its chunks read the file it planned on, in batches of the right size."""
        identity = self.check_file()
        sample = plan_csv_chunks(
            self.path,
            chunks=1,
            has_header=self.header,
            dialect=self.dialect,
            storage_options=self.storage_options,
        )
        # plan_csv_chunks(chunks=1) stops after the header: the sample is the only other read
        _, record_bytes = self._sample(sample[0]) if sample else (1.0, None)
        return replace(self, identity=identity, record_bytes=record_bytes or 100.0)

    def estimate(self, chunks: list[FileChunk]) -> tuple[list[int], float | None]:
        """Estimate each chunk's records (its lines times the records per line of a sample from
        the first chunk) and the bytes per record; progress, ETAs and batch sizes only."""
        if not chunks:
            return [], None
        lines = [b.first_line - a.first_line for a, b in pairwise(chunks)]
        last = chunks[-1]
        with open_binary(self.path, self.storage_options) as stream:
            newlines = 0
            ends_with_newline = True
            for _, block in iter_blocks(stream, last.start, last.end, _COUNT_BLOCK_BYTES):
                newlines += block.count(b"\n")
                ends_with_newline = block.endswith(b"\n")
        lines.append(newlines + (0 if ends_with_newline else 1))
        ratio, record_bytes = self._sample(chunks[0])
        return [max(1, round(n * ratio)) for n in lines], record_bytes

    def _sample(self, first: FileChunk) -> tuple[float, float | None]:
        """Records per line and bytes per record of about SAMPLE_RECORDS records at the start of
        ``first``, reading only them (and one step more to find where they end)."""
        options = self.storage_options
        step = max(int(SAMPLE_RECORDS * self.record_bytes), 1)
        window = FileChunk(first.start, min(first.end, first.start + 2 * step), first.first_line)
        ranges, _ = plan_ranges(
            self.path, window, step_bytes=step, dialect=self.dialect, storage_options=options
        )
        if len(ranges) < 2 and window.end < first.end:  # a record longer than the window
            ranges, _ = plan_ranges(
                self.path, first, step_bytes=step, dialect=self.dialect, storage_options=options
            )
        batches = read_csv_chunk(
            self.path,
            ranges[0],
            self.schema,
            batch_rows=1 << 30,
            dialect=self.dialect,
            storage_options=options,
        )
        sample = next(iter(batches), None)
        if sample is None or not len(sample) or sample.end_line < first.first_line:
            return 1.0, None
        return len(sample) / (sample.end_line - first.first_line + 1), ranges[0].size / len(sample)

    def replay_rows(
        self, conninfo: str | None, letters: Sequence[StoredDeadLetter], from_payload: bool
    ) -> dict[str, Row]:
        """See :meth:`parallel_batch.core.source.Source.replay_rows`. From the stored payloads: a file
        is not re-read (fix it and load it again for bad records)."""
        names = self.names
        kinds = {
            name: (c.kind, c.required) for name, c in zip(names, self.schema.columns, strict=True)
        }
        rows: dict[str, Row] = {}
        for letter in letters:
            payload = letter.payload
            if not payload or set(payload) != set(names):
                continue
            try:
                rows[letter.item_key] = tuple(
                    _again(kinds[name][0], kinds[name][1], payload[name]) for name in names
                )
            except ValueError:
                continue
        return rows

    def chunk_reader(
        self, conninfo: str | None, entry: dict[str, Any], *, frames: bool = False
    ) -> CsvChunkReader:
        if self.identity is not None:
            self.identity.check(self.path, self.storage_options)
        return CsvChunkReader(
            self.path,
            FileChunk.from_dict(entry),
            self.schema,
            self.names,
            self.record_bytes,
            self.dialect,
            self.storage_options,
        )


@dataclass(frozen=True)
class CsvChunkReader:
    """Reads one chunk of a CSV file; plain data, so it pickles to the pool's workers."""

    path: str
    chunk: FileChunk
    schema: CsvSchema
    names: tuple[str, ...]
    record_bytes: float
    dialect: CsvDialect = DEFAULT_DIALECT
    storage_options: StorageOptions | None = field(default=None, repr=False)

    @property
    def columns(self) -> tuple[str, ...]:
        return self.names

    def batches(self, after: Any, batch_rows: int) -> Iterator[CsvBatchRef]:
        start = self.chunk
        if after is not None:
            if not isinstance(after, dict) or "offset" not in after or "line" not in after:
                raise ConfigurationError(
                    f"chunk {self.chunk.chunk_id} has a checkpoint this version cannot resume "
                    f"({after!r}); start the job over with full_refresh=true"
                )
            if int(after["offset"]) >= self.chunk.end:
                return iter(())
            start = FileChunk(int(after["offset"]), self.chunk.end, int(after["line"]))
        step = max(int(batch_rows * self.record_bytes), MIN_BATCH_BYTES)
        return self._refs(start, step)

    def _refs(self, chunk: FileChunk, step: int) -> Iterator[CsvBatchRef]:
        ranges, next_line = plan_ranges(
            self.path,
            chunk,
            step_bytes=step,
            dialect=self.dialect,
            storage_options=self.storage_options,
        )
        lines = [r.first_line for r in ranges[1:]] + [next_line]
        for part, after in zip(ranges, lines, strict=True):
            yield CsvBatchRef(part.start, part.end, part.first_line, after)

    def read(self, ref: CsvBatchRef) -> ReadBatch:
        chunk = FileChunk(ref.start, ref.end, ref.first_line)
        rows: list[tuple[Any, ...]] = []
        lines: list[int] = []
        errors: list[DeadLetter] = []
        batches = read_csv_chunk(
            self.path,
            chunk,
            self.schema,
            batch_rows=1 << 30,
            dialect=self.dialect,
            storage_options=self.storage_options,
        )
        for batch in batches:
            rows.extend(batch.values)
            lines.extend(batch.lines)
            errors.extend(map(record_letter, batch.errors))
        return ReadBatch(rows, lines, errors)

    def columns_ready(self) -> bool:
        """Whether batches can be read as columns (:meth:`read_columns`) at all."""
        from parallel_batch.sources.csv.columns import columnar_ready  # pyarrow: when used

        return columnar_ready(self.schema, self.dialect) is None

    def read_columns(self, ref: CsvBatchRef) -> ColumnsBatch | None:
        """The batch read as columns: what :meth:`read` reads, or None when only it can."""
        from parallel_batch.sources.csv.columns import read_columns

        with open_binary(self.path, self.storage_options) as stream:
            stream.seek(ref.start)
            data = stream.read(ref.end - ref.start)
        found = read_columns(data, ref.first_line, self.schema, self.dialect)
        return None if found is None else found.batch(self.names, self.dialect, record_letter)

    def split(self, ref: CsvBatchRef, parts: int) -> Sequence[CsvBatchRef] | None:
        chunk = FileChunk(ref.start, ref.end, ref.first_line)
        # Ceiling division: a step of at least size/parts leaves at most ``parts`` ranges.
        refs = list(self._refs(chunk, -(-(ref.end - ref.start) // max(parts, 1))))
        return refs if len(refs) > 1 else None

    def position(self, ref: CsvBatchRef) -> dict[str, int]:
        return {"offset": ref.end, "line": ref.next_line}

    def item_key(self, batch: ReadBatch, index: int) -> str:
        assert batch.lines is not None
        return line_key(batch.lines[index])

    def close(self) -> None:
        pass

    def owned(self) -> None:
        return None  # a refresh upserts over the rows an earlier load wrote
