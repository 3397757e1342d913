"""The process the kill test SIGKILLs: it runs every chunk of a stored job, in plan order.

::

    python -m tests.reliability.chunk_worker --url URL --job-key KEY

It prints ``started`` once its imports are done, then one summary per chunk and ``done``. Each
chunk runs with the job's stored spec (as each mapped Airflow task does), so a restarted worker
runs exactly the job that was planned.
"""

from __future__ import annotations

import argparse
import logging
import sys

from tests.helpers.events_job import run_job


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", required=True)
    parser.add_argument("--job-key", required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(message)s")
    print("started", flush=True)
    for summary in run_job(args.url, args.job_key):
        print(summary.to_dict(), flush=True)
    print("done", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
