"""A real S3 API on loopback for the tests: moto's server mode, one per test session, a bucket per test.

The server speaks the S3 REST protocol over HTTP on 127.0.0.1, so everything under test reaches it the
way it reaches AWS: s3fs/botocore in this process, in subprocesses (the CLIs), in Ray actors and in
DataLoader workers. Credentials are fake and come from the standard AWS_* variables, as in production.
"""

from __future__ import annotations

import os
import secrets
import socket
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

FAKE_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing-access-key",
    "AWS_SECRET_ACCESS_KEY": "testing-secret-key-never-printed",
    "AWS_DEFAULT_REGION": "us-east-1",
}
# what `videonet-curate build` writes beside its shards/
BUILD_OUTPUT_NAMES = {"manifest.parquet", "embeddings.parquet", "class_histogram.png", "summary.json"}


@dataclass(frozen=True)
class S3Bucket:
    """A fresh bucket on the loopback server: ``uri("run")`` is ``s3://bucket/run``."""

    name: str
    endpoint_url: str

    def uri(self, *parts: str) -> str:
        return "/".join([f"s3://{self.name}", *parts])

    @property
    def option_args(self) -> list[str]:
        """The CLI arguments that point a command at this server."""
        return ["--storage-option", f"endpoint_url={self.endpoint_url}"]

    def options(self):
        from videonet_curate.uri import StorageOptions

        return StorageOptions(endpoint_url=self.endpoint_url)

    def client(self):
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint_url, region_name="us-east-1")

    def read_manifest(self, out: str):
        """The manifest under the URI ``out`` of this bucket, read with this server's options."""
        from videonet_curate import manifest as mf
        from videonet_curate.uri import using_options

        with using_options(self.options()):
            return mf.read_manifest(out)

    def keys(self, prefix: str = "") -> list[str]:
        """Every key in the bucket (under ``prefix``), sorted: what a user would see in the console."""
        pages = self.client().get_paginator("list_objects_v2").paginate(Bucket=self.name, Prefix=prefix)
        return sorted(obj["Key"] for page in pages for obj in page.get("Contents", []))

    def assert_build_outputs_only(self, prefix: str) -> None:
        """Under ``prefix`` a finished build left its outputs and complete shards and nothing else: no
        temporary key, no lock, no clip copied out of a mirror (``clips/``)."""
        names = [k.removeprefix(prefix + "/") for k in self.keys(prefix + "/")]
        shards = [n for n in names if n.startswith("shards/")]
        assert set(names) - set(shards) == BUILD_OUTPUT_NAMES, names
        stems = {n.split(".")[0] for n in shards}
        assert sorted(shards) == sorted(
            f"{s}.{ext}" for s in stems for ext in ("done", "emb.parquet", "rows.parquet")
        )
        assert not any(n.endswith(".tmp") or "/." in f"/{n}" for n in names)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """Start moto's ThreadedMotoServer on a free loopback port with fake credentials in the environment
    (inherited by subprocesses and Ray workers); stop it at the end of the session."""
    from moto.server import ThreadedMotoServer

    saved = {k: os.environ.get(k) for k in FAKE_CREDENTIALS}
    os.environ.update(FAKE_CREDENTIALS)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=_free_port(), verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _new_bucket(endpoint: str) -> Iterator[S3Bucket]:
    bucket = S3Bucket(f"test-{secrets.token_hex(6)}", endpoint)
    client = bucket.client()
    client.create_bucket(Bucket=bucket.name)
    try:
        yield bucket
    finally:
        for key in bucket.keys():
            client.delete_object(Bucket=bucket.name, Key=key)
        client.delete_bucket(Bucket=bucket.name)
        import fsspec

        fsspec.filesystem("s3").clear_instance_cache()  # no listing cache carried into the next test


@pytest.fixture
def s3_bucket(s3_endpoint: str) -> Iterator[S3Bucket]:
    """A new, empty bucket for this test (deleted with its keys afterwards)."""
    yield from _new_bucket(s3_endpoint)


@pytest.fixture(scope="module")
def s3_module_bucket(s3_endpoint: str) -> Iterator[S3Bucket]:
    """A bucket shared by the tests of one module (for an expensive object several tests read)."""
    yield from _new_bucket(s3_endpoint)
