"""A run's text decoded once, with the offsets of its undecodable bytes noted."""

from __future__ import annotations

import threading

import pytest

from parallel_batch.sources.csv.rows import _decode, _noted


@pytest.mark.parametrize("encoding", ["utf-8", "cp1252"])
def test_that_a_run_decodes_as_surrogateescape_would_with_each_bad_byte_found(
    encoding: str,
) -> None:
    """Test that the text is surrogateescape's, that the offset of every undecodable sequence
    is noted in order (two in one record, one at the very end), and that a clean run notes
    none."""
    bad = b"\xff" if encoding == "utf-8" else b"\x81"  # 0x81 has no cp1252 character
    data = b"1,a" + bad + b"b" + bad + b"\r\n2,ok\n3,z" + bad
    text, starts = _decode(data, encoding)
    assert text == data.decode(encoding, "surrogateescape")
    assert starts == [3, 5, len(data) - 1]
    assert [data[i : i + 1] for i in starts] == [bad] * 3
    assert _decode(b"1,clean\n", encoding) == ("1,clean\n", [])
    assert not hasattr(_noted, "starts")  # nothing left behind for the next decode


def test_that_threads_decoding_at_once_note_only_their_own_bad_bytes() -> None:
    found: dict[int, list[int]] = {}

    def decode(n: int) -> None:
        data = (b"a" * n + b"\xff\n") * 2000
        for _ in range(20):
            found[n] = _decode(data, "utf-8")[1]

    threads = [threading.Thread(target=decode, args=(n,)) for n in (1, 5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert found[1] == [1 + 3 * i for i in range(2000)]
    assert found[5] == [5 + 7 * i for i in range(2000)]
