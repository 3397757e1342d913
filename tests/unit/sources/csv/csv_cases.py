"""Shared helpers of the CSV tests: awkward CSV bytes, and the csv module's reading as the oracle."""

from __future__ import annotations

import csv
import io

from hypothesis import strategies as st

# Characters that make CSV hard, plus a few ordinary and non-ASCII ones (``;`` and ``'``: the
# delimiter and quote of the swapped dialect, see ``SWAP``).
FIELD_CHARS = st.sampled_from(
    ["a", "b", " ", ",", '"', ";", "'", "\n", "\r\n", "é", "李", "\udcff"]
)
# Swaps , with ; and " with ': a file in the default dialect becomes the same file in
# CsvDialect(";", "'"), byte for byte the same structure (and back again).
SWAP = bytes.maketrans(b",;\"'", b";,'\"")
SWAP_TEXT = str.maketrans(",;\"'", ";,'\"")


@st.composite
def raw_field(draw: st.DrawFn) -> str:
    """A field as written in a file: quoted (with "" escapes) or bare (maybe a literal quote)."""
    text = "".join(draw(st.lists(FIELD_CHARS, max_size=6)))
    quoted: bool = draw(st.booleans())
    if quoted:
        return '"' + text.replace('"', '""') + '"'
    # A bare field: no separator or line break; a quote only where it is literal (not first).
    bare = "".join(c for c in text if c not in ",\r\n")
    return "x" + bare if bare.startswith('"') else bare


@st.composite
def csv_bytes(draw: st.DrawFn, *, max_records: int = 12) -> tuple[bytes, bool]:
    """A CSV file's bytes (maybe with a BOM, CRLF, blank lines, undecodable bytes) and has_header."""
    newline = draw(st.sampled_from(["\n", "\r\n"]))
    records = []
    for _ in range(draw(st.integers(0, max_records))):
        if draw(st.integers(0, 15)) == 0:
            records.append("")  # a blank line
        else:
            records.append(",".join(draw(st.lists(raw_field(), min_size=1, max_size=4))))
    has_header = draw(st.booleans())
    if has_header:
        records.insert(0, draw(st.sampled_from(["a,b,c", '"a\nb",c', "x"])))
    text = newline.join(records)
    final_newline: bool = draw(st.booleans())
    if records and final_newline:
        text += newline  # a final line ending, or not
    data = text.encode("utf-8", "surrogateescape")  # \udcff is written as the byte 0xff
    if draw(st.booleans()):
        data = b"\xef\xbb\xbf" + data
    return data, has_header


def oracle_records(data: bytes, first_line: int = 1) -> list[tuple[int, int, bytes]]:
    """Read CSV bytes with the csv module: (first line, next record's line, bytes) per record.

    Lines are split on ``\\n`` only, which is what "physical line" means in this package.
    """
    lines = io.BytesIO(data).readlines()
    texts = [line.decode("utf-8", "surrogateescape") for line in lines]
    reader = csv.reader(texts)
    out = []
    consumed = 0
    for _ in reader:
        start, consumed = consumed, reader.line_num
        out.append((first_line + start, first_line + consumed, b"".join(lines[start:consumed])))
    return out


def oracle_rows(data: bytes) -> list[list[str]]:
    """The csv module's rows of CSV bytes (blank lines give [])."""
    lines = io.BytesIO(data).readlines()
    return list(csv.reader(line.decode("utf-8", "surrogateescape") for line in lines))
