"""publish -> verify round trip, and that any one-byte change, added or removed file fails verification."""

from __future__ import annotations

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


@pytest.fixture(scope="module")
def published(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("publish")
    out = write_build_output(root / "out")
    result = publish(out, root / "dataset", with_embeddings=True)
    assert result.kept == 55 and result.rows == 60
    return result.directory


def _copy(src: Path, dst: Path) -> Path:
    import shutil

    shutil.copytree(src, dst)
    return dst


def test_publish_writes_card_checksums_and_verifies(published: Path) -> None:
    names = {p.relative_to(published).as_posix() for p in published.rglob("*") if p.is_file()}
    assert {"manifest.parquet", "embeddings.parquet", "README.md", CHECKSUMS_FILENAME} <= names
    assert {"plots/class_histogram.png", "plots/status_breakdown.png"} <= names
    card = (published / "README.md").read_text()
    assert card.startswith("---\n") and "\n---\n" in card[4:]
    assert 'model_id: "efficientnet-lite0"' in card and 'prototype_set: "imagenet-1k-classifier"' in card
    assert "CC BY 4.0" in card and "| local |" in card  # sources and their licences
    assert "| `clip_id` | `string` |" in card
    assert "![class histogram](plots/class_histogram.png)" in card
    lines = (published / CHECKSUMS_FILENAME).read_text().splitlines()
    assert len(lines) == len(names) - 1 and all(len(line.split("  ")[0]) == 64 for line in lines)
    verify_published(published)
    assert not list(published.parent.glob(".dataset.*"))  # the staging directory is gone


def test_every_one_byte_change_fails_verification(published: Path, tmp_path: Path) -> None:
    files = sorted(p.relative_to(published) for p in published.rglob("*") if p.is_file())
    for index, relative in enumerate(files):
        copy = _copy(published, tmp_path / f"copy{index}")
        target = copy / relative
        data = bytearray(target.read_bytes())
        position = len(data) // 2
        data[position] ^= 0x01
        target.write_bytes(bytes(data))
        with pytest.raises(PublishedDatasetError) as error:
            verify_published(copy)
        assert error.value.path.name == relative.name or relative.name == CHECKSUMS_FILENAME, error.value


def test_added_or_removed_file_fails(published: Path, tmp_path: Path) -> None:
    added = _copy(published, tmp_path / "added")
    (added / "plots" / "extra.png").write_bytes(b"x")
    with pytest.raises(PublishedDatasetError, match="not listed"):
        verify_published(added)
    removed = _copy(published, tmp_path / "removed")
    (removed / "embeddings.parquet").unlink()
    with pytest.raises(PublishedDatasetError, match="missing"):
        verify_published(removed)
    with pytest.raises(PublishedDatasetError, match="checksums.sha256"):
        verify_published(tmp_path)  # not a published dataset


def test_verify_command_exit_codes(published: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    assert runner.invoke(app, ["verify", str(published)]).exit_code == 0
    copy = _copy(published, tmp_path / "tampered")
    with (copy / "manifest.parquet").open("r+b") as handle:
        handle.seek(100)
        byte = handle.read(1)
        handle.seek(100)
        handle.write(bytes([byte[0] ^ 0xFF]))
    result = runner.invoke(app, ["verify", str(copy)])
    assert result.exit_code == 1
    assert "manifest.parquet" in result.output


def test_publish_refuses_non_empty_destination(tmp_path: Path) -> None:
    out = write_build_output(tmp_path / "out", with_embeddings=False)
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "file").write_text("x")
    with pytest.raises(PublishError, match="not empty"):
        publish(out, tmp_path / "taken")
    with pytest.raises(PublishError, match="with-embeddings"):
        publish(out, tmp_path / "new", with_embeddings=True)
    result = CliRunner().invoke(app, ["publish", str(out), "--to", str(tmp_path / "taken"), "--overwrite"])
    assert result.exit_code == 0, result.output
    verify_published(tmp_path / "taken")


def test_publish_with_no_kept_clips(tmp_path: Path) -> None:
    from videonet_curate.manifest import empty_row, rows_to_table, write_manifest

    out = tmp_path / "out"
    rows = [
        empty_row(
            clip_id="a",
            source="urls",
            source_id="http://x/a.mp4",
            path=None,
            start_s=0.0,
            end_s=1.0,
            status="failed",
            reason="network",
        )
    ]
    write_manifest(rows_to_table(rows), out / "manifest.parquet")
    result = publish(out, tmp_path / "dataset")
    assert result.kept == 0
    assert "n/a (no kept clips)" in (result.directory / "README.md").read_text()
    verify_published(result.directory)


def test_published_datasets_carry_no_absolute_paths(tmp_path: Path) -> None:
    from videonet_curate.manifest import read_manifest, read_metadata, write_manifest

    out = write_build_output(tmp_path / "out", with_embeddings=False)
    config = {
        "input": "/home/alice/secret-project/videos",
        "source_options": {
            "annotations": "/home/alice/k600.csv",
            "cookies": "/home/alice/.c.txt",
            "limit": 5,
        },
    }
    write_manifest(
        read_manifest(out), out / "manifest.parquet", model_id="m", prototype_set="p", config=config
    )
    result = publish(out, tmp_path / "dataset")
    published = read_metadata(result.directory / "manifest.parquet")["config"]
    assert published == {
        "input": "videos",
        "source_options": {"annotations": "k600.csv", "cookies": "(given)", "limit": 5},
    }
    for path in result.directory.rglob("*"):
        if path.is_file():
            assert b"/home/alice" not in path.read_bytes(), path
    assert read_metadata(out / "manifest.parquet")["config"] == config  # the build itself is untouched


def test_published_files_follow_the_umask(tmp_path: Path) -> None:
    import os

    out = write_build_output(tmp_path / "out", with_embeddings=False)
    previous = os.umask(0o002)  # a group-shared project directory
    try:
        result = publish(out, tmp_path / "dataset")
    finally:
        os.umask(previous)
    assert result.directory.stat().st_mode & 0o777 == 0o775
    for path in result.directory.rglob("*"):
        assert path.stat().st_mode & 0o777 == (0o775 if path.is_dir() else 0o664), path


def test_publish_and_verify_take_file_uris(published: Path, tmp_path: Path, monkeypatch) -> None:
    """file:///abs/dir is the local directory: never a relative directory named "file:"."""
    monkeypatch.chdir(tmp_path)  # where a URI folded into a relative path would land
    runner = CliRunner()
    build_dir = write_build_output(tmp_path / "out")
    to = tmp_path / "dataset"
    done = runner.invoke(app, ["publish", f"file://{build_dir}", "--to", f"file://{to}"])
    assert done.exit_code == 0, done.output
    assert (to / CHECKSUMS_FILENAME).is_file() and not (tmp_path / "file:").exists()
    verify_published(to)
    ok = runner.invoke(app, ["verify", f"file://{published}"])
    assert ok.exit_code == 0 and "verifies" in ok.output, ok.output
    (to / "manifest.parquet").write_bytes(b"tampered")
    bad = runner.invoke(app, ["verify", f"file://{to}"])
    assert bad.exit_code == 1 and "manifest.parquet" in bad.output, bad.output
    missing = runner.invoke(app, ["verify", f"file://{tmp_path}/absent"])
    assert missing.exit_code == 2 and "is not a directory" in missing.output, missing.output
