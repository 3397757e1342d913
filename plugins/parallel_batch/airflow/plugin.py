"""The Airflow plugin: the progress view of parallel_batch jobs, inside the Airflow UI.

::

    api-server   mounts /parallel-batch      (fastapi_apps)    the progress view's app
    Airflow UI   nav item "Batches"          (external_views)  that page in the UI's frame,
                                                               at /plugin/parallel-batch

Registered through the ``airflow.plugins`` entry point. Airflow loads plugins in every process,
task processes included (for macros), so importing this module stays cheap: FastAPI, the page
templates and Airflow's authentication are imported when the api-server serves its first page
(:class:`LazyApp`), never in a task.

In the api-server, every page resolves the ``parallel_batch_default`` connection through
:func:`~parallel_batch.airflow.connection.resolve_conninfo` (an edit in Admin -> Connections
applies at the next refresh) and is open to the users Airflow has authenticated, like the rest of
the UI. It never reads another database: when the connection is missing, the page says so and
how to define it.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, MutableMapping
from typing import TYPE_CHECKING, Any

from airflow.plugins_manager import AirflowPlugin

from parallel_batch.airflow.connection import DEFAULT_CONN_ID, resolve_conninfo

if TYPE_CHECKING:
    from fastapi import FastAPI

__all__ = ["URL_PREFIX", "LazyApp", "ParallelBatchPlugin", "build_app"]

URL_PREFIX = "/parallel-batch"
# The page's path in the UI (/plugin/<url_route>). Links are relative: the UI's <base href> is
# the api-server's base URL, so they also work when Airflow is served under a path.
URL_ROUTE = "parallel-batch"

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class LazyApp:
    """An ASGI app that builds the real one (``factory()``) on its first request.

    :param factory: returns the app; called once, in the process that serves requests.
    """

    def __init__(self, factory: Callable[[], ASGIApp]) -> None:
        self._factory = factory
        self._app: ASGIApp | None = None

    @property
    def app(self) -> ASGIApp:
        """The real app, built now if it was not yet."""
        if self._app is None:
            self._app = self._factory()
        return self._app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(scope, receive, send)

    def __repr__(self) -> str:
        return f"LazyApp({self._factory.__module__}.{self._factory.__qualname__})"


def build_app() -> FastAPI:
    """Return the progress view's app as the api-server mounts it: Airflow's authentication,
    the ``parallel_batch_default`` connection, links to the Airflow UI."""
    from airflow.api_fastapi.app import API_ROOT_PATH
    from airflow.api_fastapi.core_api.security import requires_authenticated
    from fastapi import Depends

    from parallel_batch.progress.app import create_app

    return create_app(
        functools.partial(resolve_conninfo, DEFAULT_CONN_ID),
        dependencies=[Depends(requires_authenticated())],
        ui_base=API_ROOT_PATH.rstrip("/"),
    )


class ParallelBatchPlugin(AirflowPlugin):
    """The ``parallel_batch`` Airflow plugin: the progress view of parallel batch jobs."""

    name = "parallel_batch"
    fastapi_apps = [
        {"app": LazyApp(build_app), "url_prefix": URL_PREFIX, "name": "Parallel Batch progress"}
    ]
    external_views = [
        {
            "name": "Batches",  # the nav shows about 9 characters under the icon
            "href": f"{URL_PREFIX.lstrip('/')}/",
            "icon": f"{URL_PREFIX.lstrip('/')}/static/icon.svg",
            "icon_dark_mode": f"{URL_PREFIX.lstrip('/')}/static/icon-dark.svg",
            "destination": "nav",
            "url_route": URL_ROUTE,
            "nav_top_level": True,
        }
    ]
