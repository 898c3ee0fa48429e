"""Paths or URIs: how ``s3://bucket/run`` (or ``gs://``, ``memory://``, a local path) becomes a filesystem.

fsspec is the one layer (s3fs for S3): ``resolve(uri, options)`` returns ``(filesystem, path)``. Local
paths keep going through ``os``/``pathlib`` in the callers (atomic rename, umask); everything else goes
through the filesystem object.

Credentials never pass through this module's arguments by design: s3fs/botocore read them from the
standard places (``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``/``AWS_SESSION_TOKEN``, ``AWS_PROFILE``,
``~/.aws/credentials``, instance roles). ``--storage-option key=value`` carries the rest (endpoint URL,
region, anonymous access, profile) and is parsed once into :class:`StorageOptions`. Error messages are
passed through :func:`mask_secrets` so no secret that happens to be in the environment is printed.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
# option names whose values are secrets: never shown (repr, errors, recorded configs)
_SECRET_WORDS = ("secret", "token", "password", "key", "credential")
_ENV_SECRETS = ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_ACCESS_KEY_ID")
# the options of this run, for code that gets a URI but no options (Ray actors, decoders): set by the CLI
# with set_default_options, and carried to Ray workers in this environment variable (pipeline.init_ray)
ENV_OPTIONS = "VIDEONET_STORAGE_OPTIONS"
_BOOL = {"1": True, "true": True, "yes": True, "0": False, "false": False, "no": False}


class StorageError(OSError):
    """A URI that cannot be read or written (no such bucket, no credentials, endpoint unreachable)."""


class StorageOptionError(ValueError):
    """A ``--storage-option`` that is not ``key=value`` or whose value does not fit its key."""


@dataclass(frozen=True)
class StorageOptions:
    """How to reach object storage, beyond what the standard AWS_*/GOOGLE_* environment says.

    ``extra`` carries other fsspec options verbatim (e.g. ``project`` for gs://); any of them whose
    name looks like a secret is masked wherever options are shown.
    """

    endpoint_url: str | None = None
    region: str | None = None
    anon: bool = False
    profile: str | None = None
    extra: tuple[tuple[str, str], ...] = field(default_factory=tuple)

    @classmethod
    def parse(cls, items: Sequence[str] | None) -> StorageOptions:
        """``["endpoint_url=http://127.0.0.1:9000", "anon=true"]`` -> options; raises StorageOptionError."""
        known: dict[str, Any] = {}
        extra: dict[str, str] = {}
        for item in items or ():
            key, sep, value = item.partition("=")
            key = key.strip().replace("-", "_")
            if not sep or not key:
                raise StorageOptionError(
                    f"--storage-option {_mask_item(item)!r} is not key=value (e.g. "
                    "--storage-option endpoint_url=http://127.0.0.1:9000)"
                )
            if key == "anon":
                if value.lower() not in _BOOL:
                    raise StorageOptionError(f"--storage-option anon={value!r}: use true or false")
                known["anon"] = _BOOL[value.lower()]
            elif key in ("endpoint_url", "region", "profile"):
                if key == "endpoint_url" and not re.match(r"^https?://", value):
                    raise StorageOptionError(
                        f"--storage-option endpoint_url={value!r} is not an http(s) URL "
                        "(e.g. http://127.0.0.1:9000)"
                    )
                known[key] = value
            else:
                extra[key] = value
        return cls(**known, extra=tuple(sorted(extra.items())))

    def as_args(self) -> list[str]:
        """The ``key=value`` strings that parse back to these options (for subprocesses, Ray actors)."""
        out = [f"{k}={v}" for k in ("endpoint_url", "region", "profile") if (v := getattr(self, k))]
        out += ["anon=true"] if self.anon else []
        return out + [f"{k}={v}" for k, v in self.extra]

    def shown(self) -> dict[str, Any]:
        """The options as a dict safe to log or record (secret-looking values masked)."""
        shown = {k: getattr(self, k) for k in ("endpoint_url", "region", "profile") if getattr(self, k)}
        if self.anon:
            shown["anon"] = True
        shown.update({k: ("***" if _is_secret_name(k) else v) for k, v in self.extra})
        return shown

    def __repr__(self) -> str:
        return f"StorageOptions({self.shown()})"

    def fsspec_kwargs(self, protocol: str) -> dict[str, Any]:
        """Keyword arguments for ``fsspec.filesystem(protocol, ...)``."""
        kwargs: dict[str, Any] = dict(self.extra)
        if protocol in ("s3", "s3a"):
            client: dict[str, Any] = {}
            if self.endpoint_url:
                kwargs["endpoint_url"] = self.endpoint_url
            if self.region:
                client["region_name"] = self.region
            if client:
                kwargs["client_kwargs"] = client
            if self.anon:
                kwargs["anon"] = True
            if self.profile:
                kwargs["profile"] = self.profile
        elif protocol in ("gs", "gcs"):
            if self.anon:
                kwargs["token"] = "anon"
            if self.endpoint_url:
                kwargs["endpoint_url"] = self.endpoint_url
        return kwargs


_default: StorageOptions | None = None


def set_default_options(options: StorageOptions | None) -> None:
    """Make ``options`` what every URI access without explicit options uses, in this process and (through
    :data:`ENV_OPTIONS`, see :func:`options_env`) in the Ray workers it starts."""
    global _default
    _default = options or StorageOptions()
    if options is not None and options.as_args():
        os.environ[ENV_OPTIONS] = json.dumps(options.as_args())
    else:
        os.environ.pop(ENV_OPTIONS, None)


def default_options() -> StorageOptions:
    """The options set by :func:`set_default_options`, here or in the process that started this worker."""
    global _default
    if _default is None:
        raw = os.environ.get(ENV_OPTIONS)
        _default = StorageOptions.parse(json.loads(raw)) if raw else StorageOptions()
    return _default


def options_env() -> dict[str, str]:
    """The environment variables that carry the default options to Ray workers ({} when there are none)."""
    raw = os.environ.get(ENV_OPTIONS)
    return {ENV_OPTIONS: raw} if raw else {}


def _is_secret_name(name: str) -> bool:
    return any(word in name.lower() for word in _SECRET_WORDS)


def _mask_item(item: str) -> str:
    key, sep, _value = item.partition("=")
    return f"{key}=***" if sep and _is_secret_name(key) else item


def mask_secrets(text: str, options: StorageOptions | None = None) -> str:
    """``text`` with every secret we know of (AWS_* secrets in the environment, secret-looking options,
    ``user:password@`` in URLs) replaced by ``***``."""
    secrets = [os.environ.get(name, "") for name in _ENV_SECRETS]
    if options is not None:
        secrets += [v for k, v in options.extra if _is_secret_name(k)]
    for secret in sorted({s for s in secrets if len(s) >= 4}, key=len, reverse=True):
        text = text.replace(secret, "***")
    return re.sub(r"(://[^/:@\s]+:)[^@/\s]+@", r"\1***@", text)


def is_uri(path: str | os.PathLike[str] | None) -> bool:
    """True for ``scheme://...`` other than ``file://`` (those go through fsspec); False for local paths."""
    if path is None or isinstance(path, os.PathLike):
        return False
    match = _SCHEME.match(str(path))
    return bool(match) and match.group(1).lower() != "file"


def looks_like_uri(path: str | os.PathLike[str]) -> bool:
    """A URI, also after ``pathlib`` folded its ``//`` (``Path("s3://b/k")`` is ``s3:/b/k``): for commands
    that take local paths only and must say so instead of creating a directory named ``s3:``."""
    return bool(re.match(r"^[A-Za-z][A-Za-z0-9+.-]+:/", os.fspath(path))) and not os.fspath(path).startswith(
        "file:"
    )


def local_path(path: str | os.PathLike[str]) -> str:
    """A local path, with a ``file://`` prefix removed."""
    text = os.fspath(path)
    return text[len("file://") :] if text.startswith("file://") else text


def protocol_of(uri: str) -> str:
    match = _SCHEME.match(uri)
    return match.group(1).lower() if match else "file"


def resolve(path: str | os.PathLike[str], options: StorageOptions | None = None) -> tuple[Any, str]:
    """``(fsspec filesystem, path within it)`` for a URI or a local path.

    fsspec caches filesystem instances per arguments, so resolving again is cheap; a filesystem
    pickles (to Ray actors, DataLoader workers) as its arguments, never as an open connection.
    """
    import fsspec

    if not is_uri(path):
        return fsspec.filesystem("file"), os.path.abspath(local_path(path))
    uri = str(path)
    protocol = protocol_of(uri)
    options = options or default_options()
    try:
        fs = fsspec.filesystem(protocol, **options.fsspec_kwargs(protocol))
    except (ImportError, ValueError) as exc:
        raise StorageError(
            f"{uri}: no filesystem for {protocol}:// ({mask_secrets(str(exc), options)}); "
            "install its fsspec package (s3fs for s3://, gcsfs for gs://)"
        ) from None
    return fs, fs._strip_protocol(uri)


def join(base: str | os.PathLike[str], *parts: str) -> str:
    """``base/part/...`` for a URI (always ``/``) or a local path (``os.path.join``)."""
    if is_uri(base):
        return "/".join([str(base).rstrip("/"), *(p.strip("/") for p in parts)])
    return os.path.join(os.fspath(base), *parts)


def relative(path: str | os.PathLike[str], base: str | os.PathLike[str]) -> str:
    """``path`` relative to ``base`` as a POSIX string (both URIs, or both local paths)."""
    if is_uri(path):
        prefix = str(base).rstrip("/") + "/"
        if not str(path).startswith(prefix):
            raise ValueError(f"{path} is not under {base}")
        return str(path)[len(prefix) :]
    return os.path.relpath(os.fspath(path), os.fspath(base)).replace(os.sep, "/")


def clip_reference(clip: str | os.PathLike[str], out: str | os.PathLike[str]) -> str:
    """What a manifest's ``path`` column holds for ``clip``: the URI of a clip in object storage; for a
    local clip, its path relative to a local OUT (the manifest's directory), or a ``file://`` URI when OUT
    is itself a URI (no relative path leads from a bucket to a disk)."""
    if is_uri(clip):
        return str(clip)
    if is_uri(out):
        return "file://" + os.path.abspath(local_path(clip))
    return os.path.relpath(local_path(clip), os.fspath(out))


def is_under(path: str | os.PathLike[str], base: str | os.PathLike[str]) -> bool:
    """True when the URI ``path`` is ``base`` or lies below it (False when either is a local path)."""
    if not (is_uri(path) and is_uri(base)):
        return False
    a, b = str(path).rstrip("/"), str(base).rstrip("/")
    return a == b or a.startswith(b + "/")


def parent(path: str | os.PathLike[str]) -> str:
    if is_uri(path):
        return str(path).rstrip("/").rsplit("/", 1)[0]
    return os.path.dirname(os.path.abspath(os.fspath(path)))


def basename(path: str | os.PathLike[str]) -> str:
    return str(path).rstrip("/").rsplit("/", 1)[-1] if is_uri(path) else os.path.basename(os.fspath(path))


@contextmanager
def storage_errors(
    uri: str, options: StorageOptions | None = None, *, writing: bool = False
) -> Iterator[None]:
    """Turn a filesystem's error into a :class:`StorageError` naming ``uri``, secrets masked.

    When reading, FileNotFoundError passes through unchanged (callers test for absence); when
    ``writing``, it means the bucket is missing and becomes a StorageError too."""
    try:
        yield
    except StorageError:
        raise
    except FileNotFoundError as exc:
        if not writing:
            raise
        raise StorageError(
            mask_secrets(f"{uri}: cannot write: {exc} (create the bucket, or check the URI)", options)
        ) from None
    except Exception as exc:
        if isinstance(exc, KeyboardInterrupt | SystemExit):
            raise
        raise StorageError(mask_secrets(f"{uri}: {type(exc).__name__}: {exc}", options)) from None


def read_bytes(path: str | os.PathLike[str], options: StorageOptions | None = None) -> bytes:
    """The whole file or object (FileNotFoundError when absent)."""
    if not is_uri(path):
        with open(local_path(path), "rb") as handle:
            return handle.read()
    fs, key = resolve(path, options)
    with storage_errors(str(path), options):
        return fs.cat_file(key)


def read_text(path: str | os.PathLike[str], options: StorageOptions | None = None) -> str:
    return read_bytes(path, options).decode("utf-8")


def exists(path: str | os.PathLike[str], options: StorageOptions | None = None) -> bool:
    if not is_uri(path):
        return os.path.exists(local_path(path))
    fs, key = resolve(path, options)
    with storage_errors(str(path), options):
        fs.invalidate_cache(key)  # s3fs caches listings; another process (an actor) may have written
        return fs.exists(key)


def is_file(path: str | os.PathLike[str], options: StorageOptions | None = None) -> bool:
    if not is_uri(path):
        return os.path.isfile(local_path(path))
    fs, key = resolve(path, options)
    with storage_errors(str(path), options):
        fs.invalidate_cache(key)
        return fs.isfile(key)


def list_files(path: str | os.PathLike[str], options: StorageOptions | None = None) -> list[str]:
    """Every file below ``path`` as a sorted POSIX path relative to it ([] when there is none)."""
    fs, key = resolve(path, options)
    with storage_errors(str(path), options):
        fs.invalidate_cache(key)
        if not fs.exists(key):
            return []
        found = fs.find(key)
    prefix = key.rstrip("/") + "/"
    return sorted(f[len(prefix) :] for f in found if f.startswith(prefix))


def remove(path: str | os.PathLike[str], options: StorageOptions | None = None) -> None:
    """Delete one file or object (absent is fine)."""
    if not is_uri(path):
        try:
            os.unlink(local_path(path))
        except FileNotFoundError:
            pass
        return
    fs, key = resolve(path, options)
    with storage_errors(str(path), options):
        try:
            fs.rm_file(key)
        except FileNotFoundError:
            pass


def upload_file(local: str | os.PathLike[str], uri: str, options: StorageOptions | None = None) -> None:
    """Copy a local file to ``uri`` in one PUT (or one multipart upload, visible only when complete)."""
    fs, key = resolve(uri, options)
    with storage_errors(uri, options, writing=True):
        fs.put_file(os.fspath(local), key)


def download_file(uri: str, local: str | os.PathLike[str], options: StorageOptions | None = None) -> None:
    fs, key = resolve(uri, options)
    with storage_errors(uri, options):
        fs.get_file(key, os.fspath(local))


def arrow_location(path: str | os.PathLike[str], options: StorageOptions | None = None) -> tuple[str, Any]:
    """``(path, filesystem)`` for pyarrow's readers (``pq.read_table(path, filesystem=fs)``): the local
    path and None, or the key and the fsspec filesystem of a URI (pyarrow wraps it)."""
    if not is_uri(path):
        return local_path(path), None
    fs, key = resolve(path, options)
    fs.invalidate_cache(key)
    return key, fs


def location(path: str | os.PathLike[str]) -> Path | str:
    """A URI as its string (``pathlib`` would fold ``s3://`` into ``s3:/``), a local path as a Path."""
    return str(path) if is_uri(path) else Path(local_path(path))


@contextmanager
def using_options(options: StorageOptions | None) -> Iterator[None]:
    """:func:`set_default_options` for the block, the previous defaults restored after it."""
    global _default
    saved, saved_env = _default, os.environ.get(ENV_OPTIONS)
    set_default_options(options)
    try:
        yield
    finally:
        _default = saved
        if saved_env is None:
            os.environ.pop(ENV_OPTIONS, None)
        else:
            os.environ[ENV_OPTIONS] = saved_env
