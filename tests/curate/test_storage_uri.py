"""uri.py and storage.py on s3:// (a real S3 API: moto's server on loopback): options, atomic writes,
hashes, listings, and that no secret reaches an error message."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from videonet_curate.storage import atomic_path, atomic_write_json, atomic_write_text, file_sha256
from videonet_curate.uri import (
    StorageError,
    StorageOptionError,
    StorageOptions,
    exists,
    is_uri,
    join,
    list_files,
    mask_secrets,
    read_bytes,
    read_text,
    remove,
    resolve,
)


def test_storage_options_parse_once_into_typed_fields_and_hide_secrets() -> None:
    options = StorageOptions.parse(
        ["endpoint_url=http://127.0.0.1:9000", "region=eu-west-1", "anon=true", "session_token=abcd1234"]
    )
    assert (options.endpoint_url, options.region, options.anon) == (
        "http://127.0.0.1:9000",
        "eu-west-1",
        True,
    )
    assert "abcd1234" not in repr(options) and options.shown()["session_token"] == "***"
    assert StorageOptions.parse(options.as_args()) == options  # travels to subprocesses and actors
    kwargs = options.fsspec_kwargs("s3")
    assert kwargs["endpoint_url"] == "http://127.0.0.1:9000" and kwargs["anon"] is True
    assert kwargs["client_kwargs"] == {"region_name": "eu-west-1"}
    for bad, match in (
        ("endpoint_url", "not key=value"),
        ("anon=maybe", "true or false"),
        ("endpoint_url=127.0.0.1:9000", "not an http"),
    ):
        with pytest.raises(StorageOptionError, match=match):
            StorageOptions.parse([bad])


def test_local_paths_are_not_uris_and_join_keeps_their_separator(tmp_path: Path) -> None:
    assert not is_uri(tmp_path) and not is_uri(str(tmp_path)) and not is_uri("file:///tmp/x")
    assert is_uri("s3://b/k") and is_uri("gs://b/k") and is_uri("memory://x")
    assert join("s3://b/run/", "shards", "x.done") == "s3://b/run/shards/x.done"
    assert join(tmp_path, "a") == str(tmp_path / "a")
    fs, path = resolve(str(tmp_path / "a"))
    assert fs.protocol[0] == "file" and path == str(tmp_path / "a")


def test_mask_secrets_removes_environment_secrets_and_url_passwords(monkeypatch) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wJalrXUtnFEMI/K7MDENG")
    text = mask_secrets("denied for wJalrXUtnFEMI/K7MDENG at https://user:hunter22@host/x")
    assert "wJalrXUtnFEMI" not in text and "hunter22" not in text and "https://user:***@host/x" in text


def test_atomic_writes_hashes_and_listings_on_s3(s3_bucket, tmp_path: Path) -> None:
    options = s3_bucket.options()
    run = s3_bucket.uri("run")
    atomic_write_json(join(run, "a", "summary.json"), {"b": float("nan")}, options=options)
    assert read_text(join(run, "a", "summary.json"), options) == '{\n  "b": null\n}\n'
    with atomic_path(join(run, "table.parquet"), options) as tmp:
        pq.write_table(pa.table({"x": [1, 2, 3]}), tmp)
        assert s3_bucket.keys() == ["run/a/summary.json"]  # invisible until the block ends
    local = tmp_path / "table.parquet"
    local.write_bytes(read_bytes(join(run, "table.parquet"), options))
    assert pq.read_table(local).column("x").to_pylist() == [1, 2, 3]
    assert file_sha256(join(run, "table.parquet"), options=options) == file_sha256(local)
    assert list_files(run, options) == ["a/summary.json", "table.parquet"]
    assert list_files(s3_bucket.uri("nothing-here"), options) == []
    remove(join(run, "table.parquet"), options)
    remove(join(run, "table.parquet"), options)  # absent is fine
    assert not exists(join(run, "table.parquet"), options) and exists(join(run, "a", "summary.json"), options)


def test_a_writer_that_fails_leaves_no_key_behind(s3_bucket) -> None:
    options = s3_bucket.options()
    with pytest.raises(RuntimeError, match="half-way"):
        with atomic_path(s3_bucket.uri("out.parquet"), options) as tmp:
            tmp.write_bytes(b"PAR1 half")
            raise RuntimeError("writer failed half-way")
    assert s3_bucket.keys() == []


def test_an_unreachable_bucket_is_a_storage_error_naming_the_uri_without_secrets(s3_bucket) -> None:
    import os

    with pytest.raises(StorageError) as error:
        atomic_write_text("s3://no-such-bucket-here/x.txt", "data", s3_bucket.options())
    message = str(error.value)
    assert message.startswith("s3://no-such-bucket-here/x.txt:")
    assert os.environ["AWS_SECRET_ACCESS_KEY"] not in message
