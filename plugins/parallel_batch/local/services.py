"""A real local Airflow: its services as supervised child processes, stopped without orphans.

``make airflow`` (``parallel-batch airflow``, :mod:`parallel_batch.local.serve`) and the
end-to-end tests run Airflow through :class:`LocalAirflow`::

    LocalAirflow(env)
      |-- airflow api-server     UI, REST API v2, task execution API  (logs/services/*.log)
      |-- airflow scheduler      LocalExecutor: task processes are its grandchildren
      |-- airflow dag-processor  parses the DAGs folder
      `-- airflow triggerer      deferred tasks

Each service starts in a session of its own, so a Ctrl-C in the terminal reaches only the
supervisor, which then stops the services: SIGTERM to each service, a grace period, then SIGKILL
to whatever is left. "Whatever is left" is every descendant of the services, snapshotted before
the SIGTERM (task processes run in process groups of their own, so signalling a process group is
not enough), plus every process that inherited a marker variable, plus (for ``make airflow``,
a child subreaper) every orphan re-parented to the supervisor. If the supervisor itself is
killed, Linux sends each service SIGTERM (``PR_SET_PDEATHSIG``).

No ``import airflow`` here: the services are ``python -m airflow`` subprocesses.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import psutil

from parallel_batch.exceptions import AirflowServiceError, ConfigurationError
from parallel_batch.local.env import subprocess_env
from parallel_batch.local.topology import BASE_COMMANDS

log = logging.getLogger(__name__)

ALL_SERVICES = ("api-server", "scheduler", "dag-processor", "triggerer")
MARKER_ENV = "PARALLEL_BATCH_LOCAL_AIRFLOW"
# Seconds for all services to report healthy. Four Airflow processes importing at once on two
# cores take 30-60 s; a first start also builds the UI's caches.
STARTUP_TIMEOUT = 240.0
# Seconds the services get to stop after SIGTERM (the scheduler waits for its executor) before
# SIGKILL. Longer: running tasks may finish; shorter: Ctrl-C returns sooner.
STOP_GRACE = 20.0
# Seconds between health probes while starting.
POLL_INTERVAL = 1.0
_HEALTH_KEYS = {
    "scheduler": "scheduler",
    "dag-processor": "dag_processor",
    "triggerer": "triggerer",
}
_PR_SET_PDEATHSIG = 1
_PR_SET_CHILD_SUBREAPER = 36


def _argv(service: str) -> list[str]:
    # Logs are files on this machine that the api-server reads directly: no log-serving ports.
    # The same commands as docker-compose.yaml's (parallel_batch.local.topology).
    return [sys.executable, "-m", "airflow", *BASE_COMMANDS[service]]


def _pdeathsig_setter() -> Callable[[], None] | None:
    """Return a pre-exec hook that makes the child get SIGTERM when its parent dies (Linux)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl  # resolved here, not in the forked child
    except (OSError, AttributeError):
        return None

    def set_pdeathsig() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)

    return set_pdeathsig


def port_is_free(host: str, port: int) -> bool:
    """Return True when nothing listens on ``host:port``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port that is free on ``host`` right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
    return port


def _alive(proc: psutil.Process) -> bool:
    """True for a running process (same pid and start time), false for a zombie."""
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _become_subreaper() -> bool:
    """Make orphaned descendants this process's children (Linux); return whether it worked."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        return (
            int(ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)) == 0
        )
    except (OSError, AttributeError):
        return False


@dataclass
class _Service:
    name: str
    process: subprocess.Popen[bytes]
    log_path: Path
    log_file: IO[bytes]


class LocalAirflow:
    """Airflow's services for one environment, as child processes of this one.

    :param env: the Airflow environment (:func:`parallel_batch.local.env.airflow_environment`),
        laid over this process's environment for every service.
    :param services: which services to run; the api-server is needed for tasks to run.
    :param log_dir: where each service's output goes (``<service>.log``). Default:
        ``$AIRFLOW_HOME/logs/services``.
    :param subreaper: make this process a child subreaper (Linux), so that orphaned task
        processes become its children and are stopped too. Only for a process that runs
        nothing else (``make airflow``): every orphan of its descendants becomes its child.
    """

    def __init__(
        self,
        env: Mapping[str, str],
        *,
        services: Sequence[str] = ALL_SERVICES,
        log_dir: Path | None = None,
        subreaper: bool = False,
    ) -> None:
        unknown = sorted(set(services) - set(ALL_SERVICES))
        if unknown:
            raise ValueError(f"unknown Airflow services: {', '.join(unknown)}")
        if not services:
            raise ValueError("services must not be empty")
        if not env.get("AIRFLOW_HOME"):
            raise ValueError("env must set AIRFLOW_HOME")
        self.host = env.get("AIRFLOW__API__HOST", "127.0.0.1")
        self.port = int(env.get("AIRFLOW__API__PORT", "8080"))
        self.services = tuple(name for name in ALL_SERVICES if name in services)
        self.log_dir = log_dir or Path(env["AIRFLOW_HOME"]) / "logs" / "services"
        self._marker = uuid.uuid4().hex
        self._env = {**subprocess_env(env), MARKER_ENV: self._marker}
        self._running: list[_Service] = []
        self._subreaper = subreaper and _become_subreaper()

    @property
    def url(self) -> str:
        """The api-server's base URL (UI and REST API)."""
        return f"http://{self.host}:{self.port}"

    def start(self) -> None:
        """Start every service; return at once (see :meth:`wait_until_healthy`)."""
        if self._running:
            raise AirflowServiceError("Airflow services already started")
        if "api-server" in self.services and not port_is_free(self.host, self.port):
            raise ConfigurationError(
                f"Port {self.port} on {self.host} is in use: stop what listens there "
                "or choose another port (parallel-batch airflow --port N)"
            )
        for name in self.services:
            argv = _argv(name)
            if name == "api-server":
                argv += ["--host", self.host, "--port", str(self.port)]
            self._spawn(name, argv)

    def _spawn(
        self, name: str, argv: Sequence[str], env: Mapping[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        """Start one service ``argv`` in a session of its own, logging to ``<name>.log``.

        :param env: variables laid over this instance's environment for this service only
            (e.g. a Celery worker's name, :mod:`parallel_batch.local.cluster`).
        """
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log_path = self.log_dir / f"{name}.log"
        log_file = log_path.open("ab")
        log_file.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} start\n".encode())
        log_file.flush()
        process = subprocess.Popen(
            list(argv),
            env={**self._env, **(env or {})},
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C in the terminal reaches the supervisor only
            preexec_fn=_pdeathsig_setter(),  # only a prctl call between fork and exec
        )
        self._running.append(_Service(name, process, log_path, log_file))
        log.debug("Started airflow %s (pid %s), log %s", name, process.pid, log_path)
        return process

    def exited(self) -> list[str]:
        """Return the names of services whose process has ended."""
        return [svc.name for svc in self._running if svc.process.poll() is not None]

    def health(self) -> dict[str, Any] | None:
        """Return the api-server's ``/api/v2/monitor/health`` answer, None while it is down."""
        try:
            with urllib.request.urlopen(f"{self.url}/api/v2/monitor/health", timeout=5) as resp:
                body: dict[str, Any] = json.load(resp)
                return body
        except (urllib.error.URLError, OSError, ValueError):
            return None

    def _unhealthy(self) -> list[str]:
        health = self.health()
        if health is None:
            return ["api-server"] if "api-server" in self.services else []
        bad = []
        for name in self.services:
            key = _HEALTH_KEYS.get(name)
            if key and (health.get(key) or {}).get("status") != "healthy":
                bad.append(name)
        return bad

    def wait_until_healthy(self, timeout: float = STARTUP_TIMEOUT) -> None:
        """Wait until every service reports healthy.

        :raises AirflowServiceError: when a service exits or the timeout passes; the message
            names the service and ends with the tail of its log.
        """
        if timeout <= 0:
            raise ValueError("timeout must be greater than 0")
        if "api-server" not in self.services:
            raise AirflowServiceError("health is reported by the api-server, which is not running")
        deadline = time.monotonic() + timeout
        while True:
            self.check_alive()
            waiting = self._unhealthy()
            if not waiting:
                return
            if time.monotonic() > deadline:
                raise AirflowServiceError(
                    f"Airflow did not become healthy within {timeout:.0f} s "
                    f"(waiting for {', '.join(waiting)}){self._log_tail(waiting[0])}"
                )
            time.sleep(POLL_INTERVAL)

    def check_alive(self) -> None:
        """Raise :class:`AirflowServiceError` if a service has exited."""
        for svc in self._running:
            code = svc.process.poll()
            if code is not None:
                raise AirflowServiceError(
                    f"airflow {svc.name} exited with code {code}{self._log_tail(svc.name)}"
                )

    def _log_tail(self, name: str, lines: int = 30) -> str:
        path = self.log_dir / f"{name}.log"
        try:
            tail = path.read_text(errors="replace").splitlines()[-lines:]
        except OSError:
            return ""
        return f"; last lines of {path}:\n" + "\n".join(tail)

    def processes(self) -> list[psutil.Process]:
        """Every live process of this instance, task processes included.

        That is the services and their descendants, plus any process that inherited the marker
        variable (a re-parented orphan: Airflow's ``setproctitle`` overwrites the environment
        that ``/proc`` shows for the processes whose title it sets, so both ways are needed),
        plus, as a child subreaper, every descendant of this process.
        """
        found: dict[int, psutil.Process] = {}
        roots = [svc.process.pid for svc in self._running]
        if self._subreaper:
            roots.append(os.getpid())
        for pid in roots:
            with contextlib.suppress(psutil.Error):
                root = psutil.Process(pid)
                tree = root.children(recursive=True)
                if pid != os.getpid():
                    tree.append(root)
                found.update((proc.pid, proc) for proc in tree)
        for proc in psutil.process_iter():
            if proc.pid in found or proc.pid == os.getpid():
                continue
            with contextlib.suppress(psutil.Error):
                if proc.environ().get(MARKER_ENV) == self._marker:
                    found[proc.pid] = proc
        return [proc for proc in found.values() if _alive(proc)]

    def stop(self, grace: float = STOP_GRACE) -> None:
        """Stop every service and every process they started; safe to call twice."""
        if grace < 0:
            raise ValueError("grace must not be negative")
        tracked = self.processes()  # before SIGTERM: a dying parent re-parents its children
        for svc in self._running:
            if svc.process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    svc.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace
        for svc in self._running:
            with contextlib.suppress(subprocess.TimeoutExpired):
                svc.process.wait(timeout=max(0.0, deadline - time.monotonic()))
        leftovers = {proc.pid: proc for proc in tracked if _alive(proc)}
        leftovers.update((proc.pid, proc) for proc in self.processes())
        if leftovers:
            log.info("Killing %s leftover Airflow processes", len(leftovers))
            for proc in leftovers.values():
                with contextlib.suppress(psutil.Error):
                    proc.kill()
            psutil.wait_procs(list(leftovers.values()), timeout=10)
        for svc in self._running:
            with contextlib.suppress(subprocess.TimeoutExpired):
                svc.process.wait(timeout=5)
            svc.log_file.close()
        self._running.clear()

    def __enter__(self) -> LocalAirflow:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
