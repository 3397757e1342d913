"""Test helper: a real S3-compatible server on this machine (moto's server, in a thread).

::

    with s3_server() as s3:           ThreadedMotoServer on 127.0.0.1, a free port, bucket BUCKET
        s3.put(key, data)             upload an object (boto3 against the server)
        s3.url(key)                   s3://BUCKET/key
        s3.options                    fsspec storage options (key, secret, endpoint)
        s3.connection_json            the same as an Airflow ``aws`` connection (AIRFLOW_CONN_...)

moto is a dev dependency: it speaks the S3 REST protocol over HTTP (ranged GETs included), so
s3fs, botocore and the Airflow amazon provider run unchanged against it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

BUCKET = "pb-data"
REGION = "us-east-1"
KEY = SECRET = "testing"


@dataclass
class S3:
    """A running server and the credentials that reach it."""

    endpoint: str

    @property
    def options(self) -> dict[str, Any]:
        return {
            "key": KEY,
            "secret": SECRET,
            "endpoint_url": self.endpoint,
            "client_kwargs": {"region_name": REGION},
        }

    @property
    def connection_json(self) -> str:
        extra = {"endpoint_url": self.endpoint, "region_name": REGION}
        return json.dumps({"conn_type": "aws", "login": KEY, "password": SECRET, "extra": extra})

    def url(self, key: str) -> str:
        return f"s3://{BUCKET}/{key}"

    def client(self) -> Any:
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=KEY,
            aws_secret_access_key=SECRET,
            region_name=REGION,
        )

    def put(self, key: str, data: bytes) -> str:
        self.client().put_object(Bucket=BUCKET, Key=key, Body=data)
        return self.url(key)


def s3_missing() -> str | None:
    """What is missing to run the S3 tests (None: nothing)."""
    import importlib.util

    absent = [m for m in ("s3fs", "moto", "boto3") if importlib.util.find_spec(m) is None]
    return (
        f"{', '.join(absent)} not installed (dev dependencies: run `make setup`)"
        if absent
        else None
    )


@contextmanager
def s3_server() -> Iterator[S3]:
    """Start moto's S3 server with an empty bucket; stop it afterwards."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        s3 = S3(f"http://{host}:{port}")
        s3.client().create_bucket(Bucket=BUCKET)
        yield s3
    finally:
        server.stop()
