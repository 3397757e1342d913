"""The embedded PostgreSQL server: a real server under ``.parallel_batch/pgdata``, no Docker.

It uses pgserver (PostgreSQL 16 shipped in a wheel, CPython <= 3.12). Where pgserver is not
installable, it falls back to PostgreSQL binaries on PATH (``initdb``/``pg_ctl``, or Debian's
``/usr/lib/postgresql/*/bin``). The server keeps running after the process exits, so the next
command reuses it; ``parallel-batch db stop`` stops it.
"""

from __future__ import annotations

import glob
import logging
import os
import shutil
import subprocess
from pathlib import Path

from parallel_batch.exceptions import DatabaseUnavailableError
from parallel_batch.local.paths import state_dir

log = logging.getLogger(__name__)

# Settings applied once to a new cluster: enough connections for Airflow (scheduler, api-server,
# dag-processor, one per running task) plus the data plane's reader and writer per task.
_SERVER_SETTINGS = {"max_connections": "300", "shared_buffers": "256MB", "max_wal_size": "4GB"}


def pgdata_dir() -> Path:
    return state_dir() / "pgdata"


def _find_pg_bin() -> Path | None:
    pg_ctl = shutil.which("pg_ctl")
    if pg_ctl:
        return Path(pg_ctl).parent
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), reverse=True)
    return Path(candidates[0]).parent if candidates else None


def _configure(url: str) -> None:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        current: dict[str, str] = dict(
            conn.execute(
                "SELECT name, setting FROM pg_settings WHERE name = ANY(%s)",
                (list(_SERVER_SETTINGS),),
            ).fetchall()
        )
        if current.get("max_connections") == _SERVER_SETTINGS["max_connections"]:
            return
        for name, value in _SERVER_SETTINGS.items():
            conn.execute(f"ALTER SYSTEM SET {name} = '{value}'")  # constants, not user input
    log.info("Configured the embedded PostgreSQL; restarting it to apply the settings")
    stop()


def _start_pgserver() -> str:
    # pgserver asks platformdirs for a runtime dir, which warns when XDG_RUNTIME_DIR is unset
    runtime = state_dir() / "run"
    runtime.mkdir(mode=0o700, exist_ok=True)
    os.environ.setdefault("XDG_RUNTIME_DIR", str(runtime))
    logging.getLogger("pgserver").setLevel(logging.WARNING)  # it logs every step at INFO
    import pgserver

    server = pgserver.get_server(pgdata_dir(), cleanup_mode=None)
    if not is_running():  # a handle cached in this process outlives `stop()`
        with server._lock:
            server.ensure_postgres_running()
    return str(server.get_uri())


def _start_system_binaries() -> str:
    bindir = _find_pg_bin()
    if bindir is None:
        raise DatabaseUnavailableError(
            "No database configured and no embedded PostgreSQL available: pgserver has no wheel for "
            "this Python and no PostgreSQL binaries (pg_ctl, initdb) are on PATH. Set "
            "PARALLEL_BATCH_DATABASE_URL, install PostgreSQL (e.g. apt-get install postgresql), "
            "or use Python 3.11/3.12."
        )
    if os.geteuid() == 0:
        raise DatabaseUnavailableError(
            "PostgreSQL refuses to run as root and pgserver (which handles that) is not installed "
            "for this Python; set PARALLEL_BATCH_DATABASE_URL or run as a normal user."
        )
    pgdata = pgdata_dir()
    if not (pgdata / "PG_VERSION").exists():
        subprocess.run(
            [str(bindir / "initdb"), "-D", str(pgdata), "-U", "postgres", "--auth=trust"],
            check=True,
            capture_output=True,
        )
    status = subprocess.run([str(bindir / "pg_ctl"), "status", "-D", str(pgdata)], check=False)
    if status.returncode != 0:
        subprocess.run(
            [
                str(bindir / "pg_ctl"),
                "start",
                "-w",
                "-D",
                str(pgdata),
                "-l",
                str(pgdata / "server.log"),
                "-o",
                f"-h '' -k {pgdata}",
            ],
            check=True,
        )
    return f"postgresql://postgres:@/postgres?host={pgdata}"


def start() -> str:
    """Start the embedded server if it is not running and return its URL (database ``postgres``)."""
    import importlib.util

    has_pgserver = importlib.util.find_spec("pgserver") is not None
    starter = _start_pgserver if has_pgserver else _start_system_binaries
    url = starter()
    _configure(url)
    return starter()


def is_running() -> bool:
    pid_file = pgdata_dir() / "postmaster.pid"
    if not pid_file.exists():
        return False
    try:
        pid = int(pid_file.read_text().splitlines()[0])
        os.kill(pid, 0)
    except (ValueError, IndexError, ProcessLookupError):
        return False
    except PermissionError:
        return True
    return True


def stop() -> bool:
    """Stop the embedded server; return False when it was not running."""
    if not is_running():
        return False
    pid = int((pgdata_dir() / "postmaster.pid").read_text().splitlines()[0])
    import signal
    import time

    os.kill(pid, signal.SIGINT)  # "fast" shutdown: roll back open transactions, then exit
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.1)
    raise DatabaseUnavailableError(f"The embedded PostgreSQL (pid {pid}) did not stop within 30 s")
