"""Credentials for a CSV file on object storage, from an Airflow connection.

``ParallelCsvJob(path="s3://bucket/key.csv", storage_conn_id="aws_default")`` reads the file with
the filesystem Airflow's ``ObjectStoragePath`` builds for that connection (the provider of its
scheme makes it: key and secret, region, ``endpoint_url`` from the extras...). Its fsspec
``storage_options`` are handed to the source in memory in each task that reads the file (the
plan task, every chunk task and their worker processes), and never stored with the job.
Without a ``storage_conn_id`` the filesystem finds credentials the usual way (AWS_* variables,
an instance profile, GOOGLE_APPLICATION_CREDENTIALS).
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
from typing import Any

from parallel_batch.core.job import JobSpec
from parallel_batch.exceptions import ConfigurationError
from parallel_batch.sources.csv.files import is_url
from parallel_batch.sources.csv.source import CsvSource

__all__ = ["storage_options", "with_storage"]


def storage_options(path: str, conn_id: str | None) -> dict[str, Any] | None:
    """The fsspec options of ``conn_id``'s filesystem for ``path``; None without a conn id.

    :raises ConfigurationError: when ``path`` is not a URL or the connection cannot make a
        filesystem for it (undefined, or its provider is not installed).
    """
    if not conn_id:
        return None
    if not is_url(path):
        raise ConfigurationError(
            f"storage_conn_id {conn_id!r} is for a URL path (s3://, gs://...), not {path!r}"
        )
    from airflow.sdk import BaseHook, ObjectStoragePath
    from airflow.sdk.exceptions import AirflowNotFoundException

    try:  # the providers fall back to ambient credentials for an unknown conn id: refuse that
        BaseHook.get_connection(conn_id)
    except AirflowNotFoundException:
        raise ConfigurationError(
            f"The Airflow connection {conn_id!r} (storage_conn_id) is not defined: define the "
            f"connection of {path.split('://', 1)[0]}:// storage (UI, `airflow connections add`, "
            f"AIRFLOW_CONN_{conn_id.upper()} or a secrets backend), or leave storage_conn_id "
            "unset to use the filesystem's own credentials"
        ) from None
    try:
        fs = ObjectStoragePath(path, conn_id=conn_id).fs
    except Exception as exc:  # the providers raise anything from ImportError to their own
        raise ConfigurationError(
            f"cannot open {path!r} with the Airflow connection {conn_id!r}: {exc} (define the "
            "connection, and install the provider of the URL's scheme: "
            "apache-airflow-providers-amazon for s3://, -google for gs://)"
        ) from exc
    return _portable(dict(fs.storage_options))


def _settle(value: Any) -> Any:
    return asyncio.run(value) if inspect.iscoroutine(value) else value


def _portable(options: dict[str, Any]) -> dict[str, Any]:
    """Options that pickle to the chunk task's worker processes: the amazon provider hands s3fs
    a live botocore session, which becomes the session's current key, secret and token (and
    its region)."""
    session = options.pop("session", None)
    if session is None:
        return options
    credentials = _settle(session.get_credentials())
    if credentials is not None:
        frozen = _settle(credentials.get_frozen_credentials())
        options.update(key=frozen.access_key, secret=frozen.secret_key, token=frozen.token)
    region = session.get_config_variable("region")
    if region:
        client_kwargs = dict(options.get("client_kwargs") or {})
        client_kwargs.setdefault("region_name", region)
        options["client_kwargs"] = client_kwargs
    return options


def with_storage(spec: JobSpec) -> JobSpec:
    """The job with its CSV source's storage options filled in from its connection."""
    source = spec.source
    if not isinstance(source, CsvSource) or not source.storage_conn_id:
        return spec
    options = storage_options(source.path, source.storage_conn_id)
    return dataclasses.replace(spec, source=source.with_storage(options))
