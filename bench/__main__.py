"""Run every benchmark module (or those named on the command line), print a table, write JSON.

python -m bench                 # all of them
python -m bench engine pool     # bench/bench_engine.py and bench/bench_pool.py
"""

from __future__ import annotations

import importlib
import json
import pkgutil
import sys
import time
from pathlib import Path

from bench.common import Result

RESULTS_DIR = Path(__file__).parent / "results"


def _modules(selected: list[str]) -> list[str]:
    names = sorted(
        m.name[len("bench_") :]
        for m in pkgutil.iter_modules([str(Path(__file__).parent)])
        if m.name.startswith("bench_")
    )
    unknown = [s for s in selected if s not in names]
    if unknown:
        raise SystemExit(f"unknown benchmark(s) {unknown}; choose from {names}")
    return selected or names


def _fmt(v: float | None) -> str:
    if v is None:
        return "-"
    return f"{v:,.0f}" if abs(v) >= 100 else f"{v:,.3g}"


def main(argv: list[str]) -> int:
    results: list[Result] = []
    for name in _modules(argv):
        started = time.perf_counter()
        module = importlib.import_module(f"bench.bench_{name}")
        print(f"== {name}", flush=True)
        results.extend(module.run())
        print(f"   ({time.perf_counter() - started:.1f} s)", flush=True)
    header = f"{'suite':<12} {'benchmark':<48} {'value':>14} {'unit':<10} {'baseline':>14} {'goal':<12} ok"
    print("\n" + header + "\n" + "-" * len(header))
    for r in results:
        ok = {True: "yes", False: "NO", None: ""}[r.passed]
        print(
            f"{r.suite:<12} {r.name:<48} {_fmt(r.value):>14} {r.unit:<10} "
            f"{_fmt(r.baseline):>14} {r.goal:<12} {ok}"
        )
    RESULTS_DIR.mkdir(exist_ok=True)
    out = RESULTS_DIR / f"bench-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps([r.as_dict() for r in results], indent=2, default=str))
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
