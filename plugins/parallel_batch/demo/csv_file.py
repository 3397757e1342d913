"""Write the demo's customers CSV: RFC 4180, UTF-8, awkward on purpose, every K-th record bad.

The file (``parallel-batch seed csv``) has the header ``id,name,email,amount,note,created_at``;
ids run 1..N in order. Names are often non-ASCII and sometimes hold a comma; notes are often
empty and often hold commas, quotes and newlines (so records span lines); created_at is
ISO-8601 with an offset. Lines end with CRLF, as RFC 4180 says. With ``bad_every=K`` every
K-th record is malformed, the kinds taking turns::

    field_count   a field missing or one too many
    amount        not a decimal number
    created_at    not a timestamp
    email         no "@"
    encoding      a byte that is not UTF-8 in the name

:class:`CsvStats` says which lines and ids are bad, so tests can check a reader exactly.
The output depends only on ``rows``, ``bad_every`` and ``seed``.
"""

from __future__ import annotations

import csv
import io
import os
import random
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from itertools import repeat
from pathlib import Path

from parallel_batch.sources.csv.schema import CUSTOMERS_SCHEMA

BAD_KINDS = ("field_count", "amount", "created_at", "email", "encoding")
# Records formatted per write. Larger: fewer write calls; smaller: less memory.
_WRITE_ROWS = 5000
_NOT_UTF8 = "\ue000"  # a placeholder written as the byte 0xFF (never valid in UTF-8)
_START = datetime(2024, 1, 1, tzinfo=UTC)
_SPREAD_SECONDS = 30 * 24 * 3600
_OFFSETS = (UTC, UTC, UTC, timezone(timedelta(hours=2)), timezone(timedelta(hours=-5)))
_FIRST = (
    "Ann",
    "Bob",
    "Zoë",
    "José",
    "Åsa",
    "Łukasz",
    "Ngozi",
    "Søren",
    "Chloé",
    "Mia",
    "李",
    "Олег",
)
_LAST = (
    "Smith",
    "Müller",
    "Ångström",
    "Núñez",
    "O'Brien",
    "Dvořák",
    "Okafor",
    "Björk",
    "雷",
    "Ivanova",
)
_NOTES = (
    "",
    "",
    "",
    "prefers email",
    "VIP since 2019",
    "called twice, no answer",
    'says "hi" to everyone',
    "line one\nline two",
    'asked for a "discount", twice\nfollow up on Monday',
    "address:\n1 Main St, Springfield\nUSA",
    "naïve café owner (5 stores)",
    '"quoted" at the start, and a comma',
)
_BAD_AMOUNTS = ("12.34.56", "1O0.00", "abc", "1,000.00")
_BAD_TIMESTAMPS = ("2024-02-30T10:00:00+00:00", "yesterday", "2024-13-01T00:00:00Z")


@dataclass(frozen=True)
class CsvStats:
    """What :func:`write_customers_csv` wrote.

    :param path: the file.
    :param rows: records written, good and bad (the header not counted).
    :param size: bytes written.
    :param lines: physical lines, the header's included.
    :param bad_lines: the starting line of each malformed record, with its kind.
    :param bad_ids: the id of each malformed record, with its kind.
    """

    path: str
    rows: int
    size: int
    lines: int
    bad_lines: dict[int, str] = field(default_factory=dict)
    bad_ids: dict[int, str] = field(default_factory=dict)

    @property
    def good_rows(self) -> int:
        """Records that a reader should load."""
        return self.rows - len(self.bad_ids)


def write_customers_csv(
    path: str | os.PathLike[str], rows: int, *, bad_every: int | None = None, seed: int = 0
) -> CsvStats:
    """Write the demo customers CSV to ``path`` (replacing it).

    :param path: the file to write.
    :param rows: how many records to write after the header.
    :param bad_every: make every K-th record malformed (None: none are).
    :param seed: the seed of the random content.
    """
    if rows < 0:
        raise ValueError("rows must not be negative")
    if bad_every is not None and bad_every < 1:
        raise ValueError("bad_every must be greater than 0")
    getrandbits = random.Random(seed).getrandbits
    start = _START.timestamp()
    bad_lines: dict[int, str] = {}
    bad_ids: dict[int, str] = {}
    line = 2  # the header is line 1
    size = 0
    with open(path, "wb") as out:
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\r\n")
        writer.writerow(CUSTOMERS_SCHEMA.names)
        for record_id in range(1, rows + 1):
            # One draw per record, cut into its choices: random's Python-level helpers
            # (randrange, choice) would cost more than everything else here together.
            draw = getrandbits(96)
            draw, note = divmod(draw, len(_NOTES))
            draw, first = divmod(draw, len(_FIRST))
            draw, last = divmod(draw, len(_LAST))
            draw, offset = divmod(draw, len(_OFFSETS))
            draw, cents = divmod(draw, 10_000_000)
            draw, seconds = divmod(draw, _SPREAD_SECONDS)
            name = (
                f"{_LAST[last]}, {_FIRST[first]}"
                if draw % 10 == 0
                else f"{_FIRST[first]} {_LAST[last]}"
            )
            row = [
                str(record_id),
                name,
                f"customer{record_id}@example.com",
                f"{cents // 100}.{cents % 100:02d}",
                _NOTES[note],
                datetime.fromtimestamp(start + seconds, _OFFSETS[offset]).isoformat(),
            ]
            if bad_every is not None and record_id % bad_every == 0:
                turn = record_id // bad_every - 1
                kind = BAD_KINDS[turn % len(BAD_KINDS)]
                _spoil(row, kind, turn // len(BAD_KINDS))
                bad_lines[line] = bad_ids[record_id] = kind
            writer.writerow(row)
            line += 1 + sum(map(str.count, row, repeat("\n")))
            if record_id % _WRITE_ROWS == 0:
                size += _flush(buffer, out)
        size += _flush(buffer, out)
    return CsvStats(os.fspath(path), rows, size, line - 1, bad_lines, bad_ids)


def _spoil(row: list[str], kind: str, nth: int) -> None:
    """Make one record malformed in the way ``kind`` says (``nth`` picks a variant)."""
    if kind == "field_count":
        if nth % 2:
            row.append("extra")
        else:
            del row[4]  # the note
    elif kind == "amount":
        row[3] = _BAD_AMOUNTS[nth % len(_BAD_AMOUNTS)]
    elif kind == "created_at":
        row[5] = _BAD_TIMESTAMPS[nth % len(_BAD_TIMESTAMPS)]
    elif kind == "email":
        row[2] = row[2].replace("@", ".")
    else:
        row[1] = f"{row[1][:2]}{_NOT_UTF8}{row[1][2:]}"


def _flush(buffer: io.StringIO, out: io.BufferedWriter) -> int:
    data = buffer.getvalue().encode("utf-8").replace(_NOT_UTF8.encode("utf-8"), b"\xff")
    buffer.seek(0)
    buffer.truncate()
    out.write(data)
    return len(data)


def default_csv_path() -> Path:
    """Where ``make demo`` writes the demo customers CSV: ``.parallel_batch/demo/customers.csv``
    (computed only: nothing is created)."""
    from parallel_batch.local.paths import state_dir

    return state_dir() / "demo" / "customers.csv"
