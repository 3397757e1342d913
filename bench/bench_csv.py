"""The CSV planner and reader on the demo customers file, against what they replace.

(a) Generator: ``write_customers_csv`` for ROWS records (every BAD_EVERY-th malformed).
    Goal: at most GENERATE_GOAL_S seconds.
(b) Planner: ``plan_csv_chunks`` (16 and 1024 chunks), MB/s. Baseline: the exact alternative, a
    pass of the ``csv`` module over the whole file (it knows record boundaries; a byte split does
    not). Goal: at least PLANNER_GOAL x its MB/s. Beside it: ``bytes.count`` over the file (the
    read floor).
(c) Reader: what chunk tasks do, over all chunks: the CSV source's chunk reader cuts each
    chunk into batch ranges of about BATCH_ROWS records (``plan_ranges``) and reads each
    (``read_csv_chunk`` of the range, errors as dead letters), records and errors per second;
    beside it ``read_csv_chunk`` over each whole chunk (what the reader builds on). Baseline: the hand-written single pass a user would write: ``csv.reader`` over the
    file and the same conversions per row in a try/except (no line numbers, a bad byte would fail
    the whole file: it decodes with surrogateescape and lets such rows through). Goal: at least
    READER_GOAL x its rate: ours also finds each record's starting line, decodes each record
    apart (one bad byte costs one record), checks emails, digits, ranges and finiteness, gives
    reasons, and builds the records' tuples and dead letters. Beside it, the alternatives the reader was
    chosen from: pandas' C parser (dtype=str, no line numbers; alone, then with the same
    conversion to tuples as ours) and one record at a time (scanner + ``parse_record``).
(d) Peak memory: plan + read everything through the chunk reader, ROWS and 10 x ROWS records
    (the first file's records ten times over), each in a subprocess of its own, peak RSS from
    VmHWM. Goal: the larger's within MEMORY_SLACK_MIB of the smaller's.

Rates are the best of REPEATS runs, compared ones run in turns (the 2 cores are shared). Sizes
scale with PB_BENCH_SCALE.
"""

from __future__ import annotations

import csv
import tempfile
import time
from collections.abc import Callable
from datetime import datetime
from decimal import Decimal
from pathlib import Path

from bench.common import Result, child_main, run_child, scaled, vm_hwm_mib
from parallel_batch.demo.csv_file import write_customers_csv
from parallel_batch.sources.csv.planner import plan_csv_chunks
from parallel_batch.sources.csv.reader import read_csv_chunk
from parallel_batch.sources.csv.records import parse_record
from parallel_batch.sources.csv.scan import QuoteScanner
from parallel_batch.sources.csv.schema import CUSTOMERS_SCHEMA
from parallel_batch.sources.csv.source import CsvSource

SUITE = "csv"
MODULE = "bench.bench_csv"
ROWS = scaled(200_000, 10_000)
BIG_ROWS = 10 * ROWS
BAD_EVERY = 100
BATCH_ROWS = 5_000
CHUNKS = 16
REPEATS = 3
GENERATE_GOAL_S = 5.0 * ROWS / 200_000  # 5 s for 200,000 records
PLANNER_GOAL = 5.0
READER_GOAL = 0.4  # it does more than the baseline: see (c)
MEMORY_SLACK_MIB = 16.0
ROOT = Path(__file__).resolve().parents[1]


def _best(*works: Callable[[], object], repeats: int = REPEATS) -> list[float]:
    """The best time of each of ``works``, run in turns (A B A B ...) so load hits all alike."""
    best = [float("inf")] * len(works)
    for _ in range(repeats):
        for i, work in enumerate(works):
            started = time.perf_counter()
            work()
            best[i] = min(best[i], time.perf_counter() - started)
    return best


def _source(path: Path) -> CsvSource:
    """The demo file as a job's source, with the bytes per record its plan measures."""
    return CsvSource(str(path), CUSTOMERS_SCHEMA).planned()


def _read_all(source: CsvSource, chunks: int = CHUNKS) -> int:
    """Plan the chunks, then read each as a chunk task does: batch ranges, each read."""
    done = 0
    for chunk in plan_csv_chunks(source.path, chunks=chunks):
        reader = source.chunk_reader(None, chunk.to_dict())
        for ref in reader.batches(None, BATCH_ROWS):
            done += reader.read(ref).read
    return done


def _read_chunks(path: Path, chunks: int = CHUNKS) -> int:
    """``read_csv_chunk`` over each whole chunk, BATCH_ROWS records a batch."""
    done = 0
    for chunk in plan_csv_chunks(path, chunks=chunks):
        for batch in read_csv_chunk(path, chunk, CUSTOMERS_SCHEMA, batch_rows=BATCH_ROWS):
            done += len(batch)
    return done


def _csv_module_pass(path: Path) -> int:
    with open(path, newline="", encoding="utf-8", errors="surrogateescape") as stream:
        return sum(1 for _ in csv.reader(stream))


def _count_newlines(path: Path) -> int:
    total = 0
    with open(path, "rb") as stream:
        while block := stream.read(4 << 20):
            total += block.count(b"\n")
    return total


def _hand_written(path: Path) -> int:
    """The baseline: one csv.reader pass, converting each row, skipping the ones that fail."""
    done = 0
    batch: list[tuple[object, ...]] = []
    with open(path, newline="", encoding="utf-8", errors="surrogateescape") as stream:
        rows = csv.reader(stream)
        next(rows)
        for row in rows:
            done += 1
            try:
                record_id, name, email, amount, note, created_at = row
                if "@" not in email:
                    raise ValueError("email")
                batch.append(
                    (
                        int(record_id),
                        name or None,
                        email,
                        Decimal(amount) if amount else None,
                        note or None,
                        datetime.fromisoformat(created_at),
                    )
                )
            except (ValueError, ArithmeticError):
                continue
            if len(batch) >= BATCH_ROWS:
                batch = []
    return done


def _pandas(path: Path, convert: bool) -> int:
    import pandas as pd

    done = 0
    reader = pd.read_csv(
        path,
        dtype=str,
        keep_default_na=False,
        encoding_errors="surrogateescape",
        on_bad_lines="skip",
        chunksize=BATCH_ROWS,
        engine="c",
    )
    for frame in reader:
        done += len(frame)
        if convert:
            rows = frame.itertuples(index=False, name=None)
            CUSTOMERS_SCHEMA.convert_rows([list(row) for row in rows])
    return done


def _one_by_one(path: Path) -> int:
    data = path.read_bytes()
    scanner = QuoteScanner()
    pos = scanner.next_record_end(data, 0) or 0  # after the header
    done, line = 0, 2
    while (end := scanner.next_record_end(data, pos)) is not None:
        record = data[pos:end]
        parse_record(record, line, CUSTOMERS_SCHEMA)
        line += record.count(b"\n")
        pos = end
        done += 1
    return done


def _memory_child(path: str) -> dict[str, float]:
    """Runs in a subprocess of its own: plan and read the whole file, report peak RSS."""
    baseline = vm_hwm_mib()
    started = time.perf_counter()
    records = _read_all(_source(Path(path)))
    seconds = time.perf_counter() - started
    return {
        "records": records,
        "seconds": seconds,
        "records_per_s": records / seconds,
        "peak_rss_mib": vm_hwm_mib(),
        "peak_rss_before_reading_mib": baseline,
    }


def _repeat_body(source: Path, target: Path, times: int) -> None:
    """Write ``source``'s header and then its records ``times`` over (ids repeat; lines go on)."""
    data = source.read_bytes()
    header_end = data.index(b"\n") + 1
    with open(target, "wb") as out:
        out.write(data[:header_end])
        for _ in range(times):
            out.write(data[header_end:])


def _memory(path: Path) -> dict[str, float]:
    return run_child(MODULE, str(path))


def run() -> list[Result]:
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="bench_csv_") as tmp:
        path = Path(tmp) / "customers.csv"
        started = time.perf_counter()
        stats = write_customers_csv(path, ROWS, bad_every=BAD_EVERY)
        seconds = time.perf_counter() - started
        mb = stats.size / 1e6
        print(f"   wrote {ROWS:,} records, {mb:.1f} MB, in {seconds:.1f} s", flush=True)
        results.append(
            Result(
                SUITE,
                f"generate {ROWS:,} records",
                seconds,
                "s",
                goal=f"<= {GENERATE_GOAL_S:g} s",
                passed=seconds <= GENERATE_GOAL_S,
                extra={"records_per_s": ROWS / seconds, "mb": mb},
            )
        )

        csv_seconds, floor_seconds, *plan_seconds = _best(
            lambda: _csv_module_pass(path),
            lambda: _count_newlines(path),
            lambda: plan_csv_chunks(path, chunks=CHUNKS),
            lambda: plan_csv_chunks(path, chunks=1024),
        )
        csv_pass = mb / csv_seconds
        for chunks, seconds in zip((CHUNKS, 1024), plan_seconds, strict=True):
            rate = mb / seconds
            results.append(
                Result(
                    SUITE,
                    f"planner, {chunks} chunks",
                    rate,
                    "MB/s",
                    baseline=csv_pass,
                    goal=f">= {PLANNER_GOAL:g}x",
                    passed=rate >= PLANNER_GOAL * csv_pass,
                    extra={"ratio": rate / csv_pass, "bytes_count_floor_mb_s": mb / floor_seconds},
                )
            )
        print(f"   planner measured (csv module pass {csv_pass:.0f} MB/s)", flush=True)

        total = ROWS  # records and errors: one per record
        source = _source(path)
        assert _read_all(source) == total
        ours_seconds, hand_seconds = _best(lambda: _read_all(source), lambda: _hand_written(path))
        ours, hand = total / ours_seconds, total / hand_seconds
        others = {
            f"{name}_per_s": total / _best(work, repeats=1)[0]
            for name, work in [
                ("read_csv_chunk_whole_chunks", lambda: _read_chunks(path)),
                ("pandas_parse_only", lambda: _pandas(path, False)),
                ("pandas_with_conversion", lambda: _pandas(path, True)),
                ("one_record_at_a_time", lambda: _one_by_one(path)),
            ]
        }
        results.append(
            Result(
                SUITE,
                f"chunk reader, {CHUNKS} chunks, batches of {BATCH_ROWS:,}",
                ours,
                "records/s",
                baseline=hand,
                goal=f">= {READER_GOAL:g}x",
                passed=ours >= READER_GOAL * hand,
                extra={"ratio": ours / hand, **others},
            )
        )
        print("   reader measured", flush=True)

        small = _memory(path)
        big_path = Path(tmp) / "big.csv"
        _repeat_body(path, big_path, BIG_ROWS // ROWS)
        path.unlink()
        big = _memory(big_path)
        results.append(
            Result(
                SUITE,
                f"peak RSS, plan + read {BIG_ROWS:,} records",
                big["peak_rss_mib"],
                "MiB",
                baseline=small["peak_rss_mib"],
                goal=f"<= +{MEMORY_SLACK_MIB:g} MiB",
                passed=big["peak_rss_mib"] <= small["peak_rss_mib"] + MEMORY_SLACK_MIB,
                extra={"small": small, "big": big},
            )
        )
    return results


if __name__ == "__main__":
    child_main(MODULE, lambda args: _memory_child(args[0]))
