"""ImageNet-1k class names, WordNet ids and the policy for the two duplicated names.

Class names come from open_clip (``IMAGENET_CLASSNAMES``, the names its zero-shot prompts use); the
WordNet ids, lemmas and definitions from timm's bundled ``ImageNetInfo`` (both offline).

Duplicated names. open_clip's list names two pairs of classes identically:

* 657 ``n03773504`` "missile" and 744 ``n04008634`` "projectile, missile";
* 836 ``n04355933`` "sunglass" (WordNet: a burning glass) and 837 ``n04356056`` "sunglasses, dark
  glasses, shades".

With text prototypes the two rows of a pair are identical, so a CLIP scorer splits the probability
evenly and can never prefer one; a classifier can, but the pairs are notoriously confused in the
ImageNet labels themselves. Policy (:data:`DUPLICATE_NAME_TWINS`): when assigning a clip's label each
pair is merged onto the class whose WordNet synset matches the shared name (744 onto 657 "missile"; 836
onto 837 "sunglasses") by keeping the larger probability and renormalising (never by summing, which
would count identical prototypes twice; see :func:`videonet_curate.classify.fold_duplicate_names`), so
a pair never splits a clip's score and labels 744 and 836 are never assigned. :func:`label_name` gives
every index a unique, readable name (the twins get their WordNet lemma), so no two labels in a manifest
share a name.
"""

from __future__ import annotations

import importlib.util
import sys
from functools import cache
from pathlib import Path
from typing import Any

NUM_CLASSES = 1000

# twin index -> the index its probability is folded onto when a label is assigned
DUPLICATE_NAME_TWINS: dict[int, int] = {744: 657, 836: 837}

# readable, unique names for the indices whose open_clip name is shared with another class
_DISAMBIGUATED_NAMES: dict[int, str] = {
    657: "missile",
    744: "projectile, missile",
    836: "sunglass",
    837: "sunglasses",
}


def _open_clip_metadata() -> Any:
    """open_clip's ``zero_shot_metadata`` module (plain constants: the class names and prompt templates),
    read from the installed package without running the package's ``__init__``, which imports torch,
    torchvision (and with it ``torch._dynamo``) and timm: ~4 CPU s that a build's driver would otherwise
    spend before any stage starts, for 1000 strings. The package itself where it is already imported, or
    where that file is not there (another layout)."""
    if "open_clip" in sys.modules:
        return sys.modules["open_clip"]
    package = importlib.util.find_spec("open_clip")
    path = Path(package.origin).parent / "zero_shot_metadata.py" if package and package.origin else None
    if path is None or not path.is_file():
        import open_clip

        return open_clip
    spec = importlib.util.spec_from_file_location("_videonet_open_clip_zero_shot_metadata", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


@cache
def _classnames() -> tuple[str, ...]:
    # read on first use: encoders reused elsewhere (vito-eval) must not need open_clip
    names = tuple(_open_clip_metadata().IMAGENET_CLASSNAMES)
    if len(names) != NUM_CLASSES:  # pragma: no cover - guards an open_clip change
        raise RuntimeError(f"open_clip ships {len(names)} ImageNet class names, expected {NUM_CLASSES}")
    return names


def __getattr__(name: str) -> Any:
    if name == "IMAGENET_CLASSNAMES":  # open_clip's 1000 names, in index order (two pairs duplicated)
        return _classnames()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@cache
def _info() -> Any:
    from timm.data import ImageNetInfo

    return ImageNetInfo("imagenet-1k")


def _check_index(index: int) -> int:
    index = int(index)
    if not 0 <= index < NUM_CLASSES:
        raise IndexError(f"ImageNet-1k class index {index} is out of range 0..{NUM_CLASSES - 1}")
    return index


def label_name(index: int) -> str:
    """A unique human-readable name of ImageNet-1k class ``index`` (open_clip's, twins disambiguated)."""
    index = _check_index(index)
    return _DISAMBIGUATED_NAMES.get(index, _classnames()[index])


def wnid(index: int) -> str:
    """The WordNet synset id of class ``index`` (e.g. 89 -> ``n01819313``)."""
    return _info().index_to_label_name(_check_index(index))


def wordnet_description(index: int, *, detailed: bool = False) -> str:
    """WordNet lemmas of class ``index`` (with the definition when ``detailed``)."""
    return _info().index_to_description(_check_index(index), detailed=detailed)


def unique_label_names() -> list[str]:
    """:func:`label_name` for all 1000 classes, in index order."""
    return [label_name(i) for i in range(NUM_CLASSES)]
