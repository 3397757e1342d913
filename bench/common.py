"""What every benchmark module shares: a result row, memory probes, a database of its own.

scratch_database(prefix)   CREATE DATABASE <prefix>_<random> on the configured server
    |                      (the embedded one, or PARALLEL_BATCH_DATABASE_URL); yields its URL
    v                      and the server's; DROP ... WITH (FORCE) at the end
run_child(module, *args)   python -m <module> --child <args> in the project root: each
                           measured program in a process of its own (its peak RSS its own);
                           the child prints one JSON object as its last line
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
# Sizes of the modules that read it are multiplied by this (env PB_BENCH_SCALE): a quick check
# of a module runs it at, say, 0.05; the figures to compare come from the default, 1.
SCALE = float(os.environ.get("PB_BENCH_SCALE", "1"))


@dataclass
class Result:
    """One line of the benchmark table: a measured value beside its baseline and goal."""

    suite: str
    name: str
    value: float
    unit: str
    baseline: float | None = None  # the thing we compare against, measured in the same run
    goal: str = ""  # e.g. ">= 1.8x", "<= 3%"
    passed: bool | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def scaled(n: int, smallest: int = 1) -> int:
    """``n`` times PB_BENCH_SCALE, at least ``smallest``."""
    return max(int(n * SCALE), smallest)


def peak_rss_mib(children: bool = False) -> float:
    who = resource.RUSAGE_CHILDREN if children else resource.RUSAGE_SELF
    return resource.getrusage(who).ru_maxrss / 1024


def vm_hwm_mib(pid: int | str = "self") -> float:
    """A process's peak RSS (VmHWM). Not ru_maxrss: Linux carries the RSS a child had when it was
    forked (its parent's) over the exec into it. 0.0 when the process is gone."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def load_average() -> float:
    """The 1-minute load average (2 shared cores: above 2, the figures beside it are slowed)."""
    return os.getloadavg()[0]


@contextmanager
def scratch_database(prefix: str) -> Iterator[tuple[str, str]]:
    """A database of this run on the configured server: yields (its URL, the server's URL)."""
    import psycopg
    from psycopg import sql
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    from parallel_batch.local.config import database_url

    server = database_url()
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    params = conninfo_to_dict(server)
    params["dbname"] = name
    try:
        yield make_conninfo("", **params), server
    finally:
        with psycopg.connect(server, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


def spawn_child(module: str, *args: str) -> subprocess.Popen[str]:
    """Start ``python -m <module> --child <args>`` in the project root."""
    return subprocess.Popen(
        [sys.executable, "-m", module, "--child", *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )


def child_result(process: subprocess.Popen[str]) -> dict[str, Any]:
    """Wait for a child; return the JSON object of its last line of output."""
    out, _ = process.communicate()
    if process.returncode != 0:
        raise RuntimeError(f"benchmark child {process.args!r} failed: exit {process.returncode}")
    found: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return found


def run_child(module: str, *args: str) -> dict[str, Any]:
    """Run one child to its end; return its result."""
    return child_result(spawn_child(module, *args))


def child_main(module: str, dispatch: Any) -> None:
    """A module's ``__main__``: ``--child <args>`` prints ``dispatch(args)`` as JSON."""
    if len(sys.argv) >= 3 and sys.argv[1] == "--child":
        print(json.dumps(dispatch(sys.argv[2:])), flush=True)
    else:
        raise SystemExit(f"usage: python -m bench {module.removeprefix('bench.bench_')}")
