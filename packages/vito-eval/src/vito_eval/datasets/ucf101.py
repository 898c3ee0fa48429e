"""The UCF-101 layout: videos ``UCF-101/<Class>/v_<Class>_gXX_cYY.avi`` and the official split files
``ucfTrainTestlist/{classInd.txt, trainlist0N.txt, testlist0N.txt}`` (N = 1, 2, 3).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from vito_eval.errors import DatasetError

log = logging.getLogger(__name__)

UCF101_URL = "https://www.crcv.ucf.edu/data/UCF101.php"


class Ucf101LayoutError(DatasetError):
    """The UCF-101 videos or split files are not in the official layout."""


@dataclass(frozen=True)
class Ucf101Split:
    classes: list[str]
    train: list[tuple[str, int]]  # (path relative to the videos root, 0-based class index)
    test: list[tuple[str, int]]


def read_split(videos_root: Path, splits_dir: Path, split: int) -> Ucf101Split:
    """Parse classInd.txt, trainlist0N.txt and testlist0N.txt (1-based class ids become 0-based)."""
    videos_root, splits_dir = Path(videos_root), Path(splits_dir)
    expected = (
        f"expected the official UCF-101 split files in {splits_dir} (classInd.txt, trainlist0{split}.txt, "
        f"testlist0{split}.txt from UCF101TrainTestSplits-RecognitionTask.zip) and the videos as "
        f"{videos_root}/<Class>/v_<Class>_gXX_cYY.avi ({UCF101_URL})"
    )
    if split not in (1, 2, 3):
        raise Ucf101LayoutError(f"--split must be 1, 2 or 3, got {split}")
    files = {
        name: splits_dir / name
        for name in ("classInd.txt", f"trainlist0{split}.txt", f"testlist0{split}.txt")
    }
    for path in files.values():
        if not path.is_file():
            raise Ucf101LayoutError(f"missing {path}; {expected}")
    if not videos_root.is_dir():
        raise Ucf101LayoutError(f"videos root {videos_root} is not a directory; {expected}")
    classes: dict[int, str] = {}
    for line in files["classInd.txt"].read_text().splitlines():
        if line.strip():
            idx, name = line.split()
            classes[int(idx)] = name
    if sorted(classes) != list(range(1, len(classes) + 1)):
        raise Ucf101LayoutError(f"{files['classInd.txt']}: class ids must run 1..N; {expected}")
    names = [classes[i] for i in range(1, len(classes) + 1)]
    by_name = {n: i for i, n in enumerate(names)}

    def entries(path: Path) -> list[tuple[str, int]]:
        out = []
        for line in path.read_text().splitlines():
            if not line.strip():
                continue
            rel = line.split()[0]  # trainlists append the 1-based class id; testlists do not
            cls = rel.split("/")[0]
            if cls not in by_name:
                raise Ucf101LayoutError(f"{path}: {rel!r} names class {cls!r}, not in classInd.txt")
            out.append((rel, by_name[cls]))
        if not out:
            raise Ucf101LayoutError(f"{path} lists no videos; {expected}")
        return out

    split_ = Ucf101Split(
        names, entries(files[f"trainlist0{split}.txt"]), entries(files[f"testlist0{split}.txt"])
    )
    missing = [rel for rel, _ in split_.train + split_.test if not (videos_root / rel).is_file()]
    if len(missing) == len(split_.train) + len(split_.test):
        raise Ucf101LayoutError(
            f"none of the listed videos exist under {videos_root} (e.g. {missing[0]}); {expected}"
        )
    if missing:
        log.warning(
            "%d listed videos are missing under %s (e.g. %s); they are recorded as failed",
            len(missing),
            videos_root,
            missing[0],
        )
    return split_
