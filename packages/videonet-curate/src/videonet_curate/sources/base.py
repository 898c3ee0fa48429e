"""The seam between `videonet-curate build` and where its candidate clips come from.

A :class:`Source` is built from :class:`SourceArgs` (the build's arguments that concern the input, typed
once by the CLI) and does four things for the build, in this order:

1. :meth:`Source.check`: everything about the input that can be checked before anything is written;
2. :meth:`Source.gather`: the candidates to label, the rows already settled without any work (files that
   are not videos, ids that cannot be used, clips missing from a mirror...), the per-clip
   ``materialize(candidate, out_dir)`` the workers call (None: candidates are local files already), and
   statistics for the summary;
3. :meth:`Source.run_settings`: what of the source decides a shard's output (the resume fingerprint);
4. :meth:`Source.after_labelling`: a last look at the labelled embeddings (``--retry-failed`` carries the
   old ones over).

Sources are registered by name in :mod:`videonet_curate.sources.registry`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import pyarrow as pa

from videonet_curate.fetch.options import FetchOptions

# What a worker calls to turn a candidate into a local file under OUT: ``materialize(candidate, out_dir)``
# gives the row fields of :class:`videonet_curate.fetch.Materialized` (``path`` None: the row is final).
Materialize = Callable[[Mapping[str, Any], Path], Mapping[str, Any]]


class SourceInputError(ValueError):
    """Bad source arguments (exit code 2): the message names the option and the fix."""


@dataclass(frozen=True)
class SourceOptions:
    """The source options of `build` beyond --input, typed once by the CLI (build_cli.py).

    Only the network sources (kinetics, urls) read them; a build records them all in its manifest's
    ``config["source_options"]`` (:meth:`as_config`).
    """

    annotations: Path | None = None  # kinetics: the annotation CSV
    split: str | None = None  # kinetics: keep rows of this split
    classes: tuple[str, ...] | None = None  # kinetics: keep rows with these labels
    limit: int | None = None  # kinetics, urls: the first N selected rows
    retry_failed: tuple[str, ...] | None = None  # re-fetch the old manifest's rows failed for these reasons
    ytdlp_opt: tuple[str, ...] = ()  # --ytdlp-opt as typed (recorded); ``fetch.ytdlp_options`` parsed
    fetch: FetchOptions = field(default_factory=FetchOptions)

    def as_config(self) -> dict[str, Any]:
        """The manifest's record of these options (the keys builds have always written)."""
        fetch = self.fetch
        return {
            "annotations": self.annotations,
            "split": self.split,
            "limit": self.limit,
            "mirror_dir": fetch.mirror_dir,
            "classes": list(self.classes) if self.classes is not None else None,
            "url_template": fetch.url_template,
            "min_height": fetch.min_height,
            "max_retries": fetch.max_retries,
            "socket_timeout_s": fetch.socket_timeout_s,
            "max_rps": fetch.max_rps,
            "max_concurrent": fetch.max_concurrent,
            "cookies": fetch.cookies,
            "proxy": fetch.proxy,
            "ytdlp_opt": list(self.ytdlp_opt),
            "retry_failed": list(self.retry_failed) if self.retry_failed is not None else None,
        }


@dataclass(frozen=True)
class SourceArgs:
    """What a source is built from: the build's arguments that concern its input."""

    out_dir: Path | str  # a str: a URI (s3://bucket/run)
    input_path: Path | str | None = None  # local: the video directory; urls: the URL list
    clip_seconds: float = 10.0
    min_clip_seconds: float = 1.0  # shorter clips are failed/too_short, whatever the source
    options: SourceOptions = field(default_factory=SourceOptions)


@dataclass
class Gathered:
    """The candidates of a build, and what came with them."""

    candidates: list[dict[str, Any]]  # for the workers
    settled: list[dict[str, Any]]  # final rows that need no work (or, with --retry-failed, carried over)
    materialize: Materialize | None  # None: every candidate names a local file (its ``locator``)
    stats: dict[str, Any]  # the summary's ``source`` section


class Source(ABC):
    """One kind of input of `build` (see the module docstring for the order of the calls)."""

    name: ClassVar[str]  # the --source value

    def __init__(self, args: SourceArgs) -> None:
        self.args = args

    @abstractmethod
    def check(self) -> None:
        """Raise :class:`SourceInputError` for input that cannot work; writes nothing, starts no Ray.

        May keep what it read (a network source reads its list here, once)."""

    @abstractmethod
    def gather(self, *, use_ray: bool) -> Gathered:
        """The candidates to label and the rows settled without work (after :meth:`check`)."""

    def run_settings(self) -> dict[str, Any]:
        """What of the source decides a shard's output: part of the run fingerprint, so changing any of it
        labels the shards again. Subclasses add to this dict; keys must stay stable (resume)."""
        return {
            "source": self.name,
            "clip_seconds": self.args.clip_seconds,
            "min_clip_seconds": self.args.min_clip_seconds,
        }

    def after_labelling(self, embeddings: pa.Table, rows: pa.Table) -> pa.Table:
        """The build's embeddings once its shards are merged (``rows``: every row of the new manifest)."""
        return embeddings
