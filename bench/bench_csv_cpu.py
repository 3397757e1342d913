"""Where a CSV chunk's CPU goes, per record of the demo file (issue 9's diagnostic; no goals).

RECORDS demo records (every BAD_EVERY-th malformed), each measured program in a child process::

    bench (this process)      writes the file, plans the jobs, checks every outcome
      |-- child: loader       bench_csv_load's hand-written loader: its CPU, and the server's
      |-- child: chunk        run_chunk over the file as ONE chunk with a WorkerPool(1), as a
      |                       chunk task runs it (parallel_batch_csv's job: typed from the
      |                       target, check_arrow, duplicate-id claims): the chunk process's
      |                       CPU, its worker's (start included), the server's; then the same
      |                       job without the claims
      '-- child: prepare      prepare_in_worker() over the chunk's batches in one process, the
                              best of ROUNDS per transform (none, check_batch, check_arrow: the
                              columnar path, the rows check) and the read alone (as rows, as
                              columns), the variants taking turns

CPU is the processes' own (``time.process_time``, the children's rusage; a worker's start, its
imports before any batch, measured on a pool of its own and taken off); the server's is read
from /proc (the postmaster, its backends and the ones that ended): on a server of this machine
only (the embedded one), else left out. On 2 shared cores a run differs from the next by 10-15 %:
compare rows of one run. Sizes scale with PB_BENCH_SCALE.
"""

from __future__ import annotations

import os
import resource
import tempfile
import time
from pathlib import Path
from typing import Any

import psycopg

from bench import bench_csv_load as csv_load
from bench.common import Result, child_main, load_average, run_child, scaled, scratch_database
from parallel_batch.demo.csv_file import write_customers_csv

SUITE = "csv_cpu"
MODULE = "bench.bench_csv_cpu"
RECORDS = scaled(200_000, 2_000)
BAD_EVERY = csv_load.BAD_EVERY
ROUNDS = 3
ARROW_CHECK = "include.transforms.customers:check_arrow"
# name -> (transform, kind); " (rows)" in a name: the row path even where the columnar one could go
TRANSFORMS = {
    "none (columns)": (None, "rows"),
    "none (rows)": (None, "rows"),
    "check_batch": ("include.transforms.customers:check_batch", "batch"),
    "check_arrow (columns)": ("include.transforms.customers:check_arrow", "arrow"),
    "check (rows)": ("include.transforms.customers:check", "rows"),
}


def server_cpu(url: str) -> float | None:
    """CPU seconds the server of ``url`` has used (its processes, live and ended), or None when
    it is not a server of this machine that /proc shows."""
    with psycopg.connect(url) as conn:
        backend = conn.info.backend_pid
    try:
        postmaster = _stat(backend)[1]
        ticks = sum(_stat(postmaster)[2:6])  # its own CPU and its ended children's
    except (OSError, ValueError, IndexError):
        return None
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            stat = _stat(int(pid))
        except (OSError, ValueError, IndexError):
            continue  # ended meanwhile
        if stat[1] == postmaster:
            ticks += stat[2] + stat[3]
    return ticks / os.sysconf("SC_CLK_TCK")


def _stat(pid: int) -> list[int]:
    """(state, ppid, utime, stime, cutime, cstime) of a process, as numbers (state: 0)."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return [0, int(fields[1]), *map(int, fields[11:15])]


def _spent(url: str, before: float | None) -> float | None:
    after = server_cpu(url)
    return None if before is None or after is None else after - before


# ---------------------------------------------------------------- children


def _child_loader(url: str, path: str) -> dict[str, Any]:
    server = server_cpu(url)
    cpu = time.process_time()
    found = csv_load._child_baseline(url, path)
    return {"rows": found["rows"], "client": time.process_time() - cpu,
            "server": _spent(url, server)}  # fmt: skip


def _child_chunk(url: str, job_key: str) -> dict[str, Any]:
    import parallel_batch.core.planning
    import parallel_batch.core.runner
    import parallel_batch.sources  # noqa: F401  (imported before the clock starts)
    from parallel_batch.core.prepare import BatchWork
    from parallel_batch.engine.pool import WorkerPool

    with WorkerPool(1) as pool:  # what a worker's start costs: its imports, before any batch
        pool.submit(bool, BatchWork).result()  # unpickling the class imports its module
    start = _children_cpu()
    server = server_cpu(url)
    cpu = time.process_time()
    found = csv_load._child_chunks(url, job_key)
    return {**found, "chunk": time.process_time() - cpu, "worker": _children_cpu() - 2 * start,
            "worker_start": start, "server": _spent(url, server)}  # fmt: skip


def _children_cpu() -> float:
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return children.ru_utime + children.ru_stime


def _child_prepare(url: str, path: str) -> dict[str, Any]:
    from parallel_batch.core.prepare import BatchWork, prepare_in_worker
    from parallel_batch.core.transforms import TransformSpec, retry_policy

    works: dict[str, tuple[BatchWork, list[Any]]] = {}
    for name, (fn, kind) in TRANSFORMS.items():
        transform = TransformSpec(fn, kind, retry=retry_policy(csv_load.RETRY_ON, kind))
        with psycopg.connect(url) as conn:
            spec = csv_load._spec(url, path, transform)
            target = spec.resolve_target(conn)
        entry = spec.source.plan(None, _one_chunk())[0]
        reader = spec.source.chunk_reader(None, entry)
        work = BatchWork(reader, spec.transform, target, spec.dedup_key)
        if name.endswith(" (rows)"):
            object.__setattr__(work, "columnar", False)  # BatchWork.columnar, decided here
        works[name] = (work, list(reader.batches(None, spec.batch_rows)))
    best: dict[str, float] = {}
    for _ in range(ROUNDS):
        for name, (work, refs) in works.items():
            cpu = time.process_time()
            records = sum(prepare_in_worker(work, ref).read for ref in refs)
            best[name] = min(best.get(name, float("inf")), time.process_time() - cpu)
        work, refs = works["none (rows)"]
        for name, read in (
            ("read alone", work.reader.read),
            ("read alone (columns)", work.reader.read_columns),
        ):
            cpu = time.process_time()
            for ref in refs:
                read(ref)
            best[name] = min(best.get(name, float("inf")), time.process_time() - cpu)
    return {"records": records, "seconds": best}


def _one_chunk() -> Any:
    from parallel_batch.core.source import Sizing

    return Sizing(chunks=1, chunk_size=None, max_chunks=1)


def _child(args: list[str]) -> dict[str, Any]:
    mode, url, arg = args
    children = {"loader": _child_loader, "chunk": _child_chunk, "prepare": _child_prepare}
    if mode not in children:
        raise SystemExit(f"unknown child mode {mode!r}")
    return children[mode](url, arg)


# ---------------------------------------------------------------- the run


def _chunk(url: str, path: str, dedup: bool, expected: tuple[int, int]) -> dict[str, Any]:
    from parallel_batch.core.transforms import TransformSpec, retry_policy

    csv_load._reset(url)
    # the DAG's check: over columns (the columnar path)
    check = TransformSpec(ARROW_CHECK, "arrow", retry=retry_policy(csv_load.RETRY_ON, "arrow"))
    job_key = csv_load._plan(url, path, 1, check, dedup)
    found = run_child(MODULE, "chunk", url, job_key)
    if csv_load._outcome(url, job_key) != expected or not found["reconciled"]:
        raise RuntimeError(f"job {job_key}: {csv_load._outcome(url, job_key)}, expected {expected}")
    return found


def _per_record(seconds: float | None) -> float | None:
    return None if seconds is None else seconds / RECORDS * 1e6


def run() -> list[Result]:
    with tempfile.TemporaryDirectory() as tmp, scratch_database("pb_bench_csv_cpu") as (url, _):
        path = str(Path(tmp) / "customers.csv")
        good = write_customers_csv(path, RECORDS, bad_every=BAD_EVERY).good_rows
        expected = (good, RECORDS - good)
        csv_load._reset(url)
        loader = run_child(MODULE, "loader", url, path)
        if loader["rows"] != good:
            raise RuntimeError(f"the loader loaded {loader['rows']} rows, expected {good}")
        claims = _chunk(url, path, True, expected)
        no_claims = _chunk(url, path, False, expected)
        prepared = run_child(MODULE, "prepare", url, path)
    extra = {"records": RECORDS, "bad_every": BAD_EVERY, "load_average": load_average(),
             "worker_start_seconds": round(claims["worker_start"], 3)}  # fmt: skip
    rows: list[tuple[str, float | None]] = [
        ("hand-written loader: its process", loader["client"]),
        ("hand-written loader: the server", loader["server"]),
        ("job, 1 chunk: the chunk process", claims["chunk"]),
        ("job, 1 chunk: its worker (less a worker's start)", claims["worker"]),
        ("job, 1 chunk: the server", claims["server"]),
        ("the same without claims: the chunk process", no_claims["chunk"]),
        ("the same without claims: the server", no_claims["server"]),
        *((f"prepare in one process: {name}", s) for name, s in prepared["seconds"].items()),
    ]
    results = []
    for name, seconds in rows:
        value = _per_record(seconds)
        if value is None:
            print(f"   {name}: not measured (the server is not on this machine)")
            continue
        print(f"   {name:<48} {value:6.2f} us a record", flush=True)
        results.append(Result(SUITE, name, round(value, 2), "CPU us/record", extra=extra))
    return results


if __name__ == "__main__":
    child_main(MODULE, _child)
