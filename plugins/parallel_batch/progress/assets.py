"""The progress page's static files: files of the package under ``progress/static/``.

::

    style.css            the page's look (light and dark)
    page.js              auto-refresh and links into the Airflow UI
    icon.svg, icon-dark.svg   the nav icon of the Airflow UI, and the page's

Served by the app under ``static/`` (the network may be closed: no CDN, no build step). The page
works without the script: it then refreshes itself with a ``<meta http-equiv="refresh">`` in
``<noscript>``. With it, every few seconds the script fetches the same URL and swaps the
``#pb-content`` element, so the scroll position stays, a text selection (a command being
copied) pauses it, and a hidden tab does not poll. It also lets links to DAGs and runs open in
the Airflow UI from inside the UI's sandboxed frame.
"""

from __future__ import annotations

import functools
from importlib import resources
from typing import NamedTuple

__all__ = ["STATIC_FILES", "Asset", "load_asset"]

# The files served, and their media types: only these names are ever read.
STATIC_FILES: dict[str, str] = {
    "style.css": "text/css; charset=utf-8",
    "page.js": "text/javascript; charset=utf-8",
    "icon.svg": "image/svg+xml",
    "icon-dark.svg": "image/svg+xml",
}


class Asset(NamedTuple):
    """One static file: its content and media type."""

    content: bytes
    media_type: str


@functools.cache
def load_asset(name: str) -> Asset | None:
    """Return the static file ``name`` (read once per process), None when there is none."""
    media_type = STATIC_FILES.get(name)
    if media_type is None:
        return None
    content = resources.files("parallel_batch.progress").joinpath("static", name).read_bytes()
    return Asset(content, media_type)
