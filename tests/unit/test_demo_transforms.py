"""The demo's CSV transforms (include/transforms/customers.py) as a worker process loads them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

_PROBE = """
import sys
from parallel_batch.core.transforms import TransformSpec
check = TransformSpec("include.transforms.customers:check").load()
print("httpx" in sys.modules)
check({"email": "a@b.example"})
import include.transforms.customers as module
print([f"{c.__module__}:{c.__qualname__}" for c in module.RETRY_ON])
print("httpx" in sys.modules)
"""


def test_check_alone_never_imports_httpx_and_retry_on_still_names_the_retried_errors() -> None:
    """A worker that loads ``check`` (every plain CSV chunk) does not pay httpx's import; the
    enrichment's RETRY_ON, asked for, imports it and names the same classes as before."""
    out = subprocess.run(
        [sys.executable, "-c", _PROBE],
        cwd=ROOT,
        env={"PYTHONPATH": f"{ROOT}:{ROOT / 'plugins'}", "PATH": ""},
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    assert out == [
        "False",
        "['include.transforms.customers:EnrichmentServerError', 'httpx:TimeoutException', "
        "'httpx:NetworkError', 'httpx:RemoteProtocolError']",
        "True",
    ]
