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

import os
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
# option names whose values are secrets: never shown (repr, errors, recorded configs)
_SECRET_WORDS = ("secret", "token", "password", "key", "credential")
_ENV_SECRETS = ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_ACCESS_KEY_ID")
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
    try:
        fs = fsspec.filesystem(protocol, **(options or StorageOptions()).fsspec_kwargs(protocol))
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
