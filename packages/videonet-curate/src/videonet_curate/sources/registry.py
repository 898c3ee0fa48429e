"""``--source NAME`` -> the :class:`~videonet_curate.sources.base.Source` that reads it.

A new source is one module defining a :class:`~videonet_curate.sources.base.Source` subclass, plus one
line here; `build` never names a source.
"""

from __future__ import annotations

from videonet_curate.sources.base import Source, SourceArgs, SourceInputError
from videonet_curate.sources.kinetics import KineticsSource
from videonet_curate.sources.local import LocalSource
from videonet_curate.sources.urls import UrlListSource

SOURCES: dict[str, type[Source]] = {cls.name: cls for cls in (LocalSource, KineticsSource, UrlListSource)}


def make_source(name: str, args: SourceArgs) -> Source:
    """The source called ``name`` (the --source value), built from ``args``; nothing is read yet."""
    try:
        cls = SOURCES[name]
    except KeyError:
        raise SourceInputError(f"unknown --source {name!r}; expected one of: {', '.join(SOURCES)}") from None
    return cls(args)
