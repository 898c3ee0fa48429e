"""publish --to s3:// and verify s3:// against a real S3 API (moto's server on loopback)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from test_report import write_build_output
from typer.testing import CliRunner

from videonet_curate.cli import app
from videonet_curate.publish import (
    CHECKSUMS_FILENAME,
    PublishedDatasetError,
    PublishError,
    publish,
    verify_published,
)
from videonet_curate.uri import upload_file


@pytest.fixture(scope="module")
def build_output(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_build_output(tmp_path_factory.mktemp("publish_s3") / "out")


def test_publish_to_s3_then_verify_with_the_cli(build_output: Path, s3_bucket) -> None:
    to = s3_bucket.uri("datasets", "v1")
    runner = CliRunner()
    result = runner.invoke(
        app, ["publish", str(build_output), "--to", to, "--with-embeddings", *s3_bucket.option_args]
    )
    assert result.exit_code == 0, result.output
    keys = s3_bucket.keys("datasets/v1/")
    names = {k.removeprefix("datasets/v1/") for k in keys}
    assert {"manifest.parquet", "embeddings.parquet", "README.md", CHECKSUMS_FILENAME} <= names
    assert "plots/class_histogram.png" in names and not any(n.endswith(".tmp") for n in names)
    ok = runner.invoke(app, ["verify", to, *s3_bucket.option_args])
    assert ok.exit_code == 0 and "verifies" in ok.output, ok.output
    # a changed object fails verification, naming its key
    s3_bucket.client().put_object(Bucket=s3_bucket.name, Key="datasets/v1/README.md", Body=b"changed")
    bad = runner.invoke(app, ["verify", to, *s3_bucket.option_args])
    assert bad.exit_code == 1 and f"{to}/README.md" in bad.output, bad.output
    assert os.environ["AWS_SECRET_ACCESS_KEY"] not in bad.output + ok.output + result.output


def test_publish_refuses_a_non_empty_prefix_and_overwrite_leaves_only_the_new_dataset(
    build_output: Path, s3_bucket
) -> None:
    options, to = s3_bucket.options(), s3_bucket.uri("ds")
    s3_bucket.client().put_object(Bucket=s3_bucket.name, Key="ds/stale.txt", Body=b"old")
    with pytest.raises(PublishError, match="not empty"):
        publish(build_output, to, options=options)
    result = publish(build_output, to, overwrite=True, options=options)
    assert "ds/stale.txt" not in s3_bucket.keys()
    assert sorted(f"ds/{n}" for n in result.files) == s3_bucket.keys()
    verify_published(to, options)


def test_a_build_on_s3_publishes_to_s3_and_an_unlisted_object_fails_verification(
    build_output: Path, s3_bucket
) -> None:
    options = s3_bucket.options()
    for path in build_output.rglob("*"):
        if path.is_file():
            upload_file(path, s3_bucket.uri("run", path.relative_to(build_output).as_posix()), options)
    with pytest.raises(PublishError, match="lies inside"):
        publish(s3_bucket.uri("run"), s3_bucket.uri("run", "published"), options=options)
    result = publish(s3_bucket.uri("run"), s3_bucket.uri("published"), options=options)
    assert result.kept == 55 and result.rows == 60
    s3_bucket.client().put_object(Bucket=s3_bucket.name, Key="published/extra.bin", Body=b"x")
    with pytest.raises(PublishedDatasetError, match="not listed") as error:
        verify_published(s3_bucket.uri("published"), options)
    assert error.value.path == s3_bucket.uri("published", "extra.bin")
    with pytest.raises(PublishedDatasetError, match="no such dataset"):
        verify_published(s3_bucket.uri("nothing"), options)
