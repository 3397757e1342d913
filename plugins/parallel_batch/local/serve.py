"""``parallel-batch airflow``: the local Airflow in the foreground until Ctrl-C.

::

    serve(env, demo_data=[...])
      LocalAirflow.start()              the four services, supervised
      wait_until_healthy()              then the banner: URL, login, DAGs, logs, demo data
      check_alive() every POLL_INTERVAL a service that exits ends the run (exit code 1)
      Ctrl-C / SIGTERM / SIGHUP         LocalAirflow.stop(): nothing left running

The signal handler only raises :class:`_Stop`; the services are stopped in ``finally``, with a
second Ctrl-C ignored meanwhile, so an impatient user cannot orphan them.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from types import FrameType
from typing import IO

from parallel_batch.exceptions import AirflowServiceError
from parallel_batch.local.services import POLL_INTERVAL, LocalAirflow

__all__ = ["banner", "serve"]


class _Stop(Exception):
    """Raised by the signal handler to leave the serve loop."""


@contextlib.contextmanager
def _signals_stop() -> Iterator[None]:
    """Turn SIGINT, SIGTERM and SIGHUP into :class:`_Stop` while inside."""

    def handler(signum: int, frame: FrameType | None) -> None:
        raise _Stop(signal.Signals(signum).name)

    caught = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    previous = {sig: signal.signal(sig, handler) for sig in caught}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def serve(
    env: Mapping[str, str],
    *,
    demo_data: Sequence[str] = (),
    out: IO[str] = sys.stdout,
    airflow: LocalAirflow | None = None,
    notes: Sequence[str] = (),
) -> int:
    """Run all services until Ctrl-C (or SIGTERM), then stop them; return an exit code.

    :param env: the Airflow environment, already prepared
        (:func:`parallel_batch.local.env.prepare_airflow`).
    :param demo_data: what was done to the demo data before, one line each, for the banner.
    :param out: where the banner goes.
    :param airflow: the services to run (default: the four of ``make airflow``; ``make
        cluster`` passes a :class:`~parallel_batch.local.cluster.LocalCluster`).
    :param notes: more lines for the banner.
    """
    airflow = airflow or LocalAirflow(env, subreaper=True)
    url = env.get("AIRFLOW__API__BASE_URL", airflow.url).rstrip("/")
    code = 0
    try:
        with _signals_stop():
            airflow.start()
            print(f"Starting Airflow at {url} (logs in {airflow.log_dir}) ...", file=out)
            out.flush()
            airflow.wait_until_healthy()
            print(banner(env, url, airflow.log_dir, demo_data, notes), file=out)
            out.flush()
            while True:
                airflow.check_alive()
                time.sleep(POLL_INTERVAL)
    except _Stop as why:
        print(f"\nStopping Airflow ({why}) ...", file=out)
    except AirflowServiceError as exc:
        print(f"parallel-batch: error: {exc}", file=sys.stderr)
        code = 1
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not orphan anything
        try:
            airflow.stop()
        finally:
            signal.signal(signal.SIGINT, signal.default_int_handler)
    print("Airflow stopped.", file=out)
    return code


def banner(
    env: Mapping[str, str],
    url: str,
    log_dir: Path,
    demo_data: Sequence[str] = (),
    notes: Sequence[str] = (),
) -> str:
    """Return what ``parallel-batch airflow`` prints once Airflow is healthy.

    :param env: the Airflow environment.
    :param url: the UI's address.
    :param log_dir: where the services' own logs are.
    :param demo_data: what was done to the demo data, one line each (none: no "Demo:" lines).
    :param notes: more lines, each shown as it is (indented), after the DAGs.
    """
    home = env["AIRFLOW_HOME"]
    demo = [f"  {'Demo:' if i == 0 else '':<7} {line}" for i, line in enumerate(demo_data)]
    return "\n".join(
        [
            "",
            f"Airflow is running: {url}",
            "  Login:  none needed - simple auth manager with every user an admin",
            f"          (local use only: the api-server listens on {env.get('AIRFLOW__API__HOST')})",
            f"  DAGs:   {env.get('AIRFLOW__CORE__DAGS_FOLDER')} (paused until you unpause them)",
            *demo,
            *(f"  {line}" for line in notes),
            f"  Logs:   {home}/logs (services: {log_dir})",
            '  CLI:    eval "$(parallel-batch env)"; airflow backfill create --dag-id ID '
            "--from-date 2024-01-01 --to-date 2024-01-03",
            "Press Ctrl-C to stop.",
        ]
    )
