"""Shared fixtures: where the sample media lie, and an offline environment for every test."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Hub clients retry for about 46 s before failing when they think they are online.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DIR = REPO_ROOT.parent / "shared"


def _samples_root() -> Path:
    return Path(os.environ.get("VIDEONET_SAMPLES", Path.home() / ".cache" / "videonet-curate" / "samples"))


@pytest.fixture(scope="session")
def samples_dir() -> Path:
    """The sample media fetched by `videonet-curate samples fetch` (make test runs it first)."""
    root = _samples_root()
    if not (root / "videos").is_dir():
        pytest.fail(
            f"sample media missing under {root}: run `videonet-curate samples fetch` (make setup does)"
        )
    return root


@pytest.fixture(scope="session")
def sample_videos(samples_dir: Path) -> Path:
    return samples_dir / "videos"


@pytest.fixture(scope="session")
def kinetics_dir() -> Path:
    """The real Kinetics annotation CSVs in ../shared; tests that need them skip when it is absent."""
    path = SHARED_DIR / "data" / "kinetics"
    if not path.is_dir():
        pytest.skip(f"{path} not present (the Kinetics CSVs live outside the repository)")
    return path


@pytest.fixture(scope="module")
def one_torch_thread():
    """Many small ops on a shared 2-core machine: intra-op threads only spin against each other."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# the loopback S3 server (moto) and a bucket per test: see s3_server.py
from s3_server import s3_bucket, s3_endpoint, s3_module_bucket  # noqa: E402, F401
