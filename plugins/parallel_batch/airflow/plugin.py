"""The Airflow plugin: the progress view of parallel_batch jobs, inside the Airflow UI.

::

    api-server   mounts /parallel-batch      (fastapi_apps)    the progress view's app
    Airflow UI   nav item "Batches"          (external_views)  that page in the UI's frame,
                                                               at /plugin/parallel-batch

Registered through the ``airflow.plugins`` entry point. Airflow loads plugins in every process,
task processes included (for macros), so importing this module stays cheap: FastAPI, the page
templates and Airflow's authentication are imported when the api-server serves its first page
(:class:`LazyApp`), never in a task.

In the api-server, every page resolves the ``parallel_batch_default`` connection (an edit in
Admin -> Connections applies at the next refresh) and is open to the users Airflow has
authenticated, like the rest of the UI.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import TYPE_CHECKING, Any

from airflow.plugins_manager import AirflowPlugin

from parallel_batch.airflow.connection import DEFAULT_CONN_ID, resolve_conninfo
from parallel_batch.exceptions import ConfigurationError

if TYPE_CHECKING:
    from fastapi import FastAPI

__all__ = ["URL_PREFIX", "LazyApp", "ParallelBatchPlugin", "airflow_conninfo", "build_app"]

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


def airflow_conninfo(conn_id: str = DEFAULT_CONN_ID) -> str:
    """Return the conninfo of the Airflow connection ``conn_id``; it must exist.

    Unlike :func:`~parallel_batch.airflow.connection.resolve_conninfo`, which tasks use, this never
    falls back to another database (nor starts the embedded one from a web request): the page
    says that the connection is missing instead.

    :raises ConfigurationError: the connection is not defined, or not a Postgres connection.
    """
    from airflow.sdk import BaseHook
    from airflow.sdk.exceptions import AirflowNotFoundException

    try:
        BaseHook.get_connection(conn_id)
    except AirflowNotFoundException as exc:
        raise ConfigurationError(
            f"The Airflow connection {conn_id!r} is not defined in the api-server."
        ) from exc
    return resolve_conninfo(conn_id)


def build_app() -> FastAPI:
    """Return the progress view's app as the api-server mounts it: Airflow's authentication,
    the ``parallel_batch_default`` connection, links to the Airflow UI."""
    from airflow.api_fastapi.app import API_ROOT_PATH
    from airflow.api_fastapi.core_api.security import requires_authenticated
    from fastapi import Depends

    from parallel_batch.progress.app import create_app

    return create_app(
        airflow_conninfo,
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
