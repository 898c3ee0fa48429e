"""Shared fixtures: where the sample media lie, and an offline environment for every test."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Hub clients retry for about 46 s before failing when they think they are online.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
if os.environ.get("PYTEST_XDIST_WORKER"):
    # `make test` runs two xdist workers on a 2-core machine: one BLAS/OpenMP thread each (subprocesses
    # inherit it), or each worker's intra-op threads would spin against the other's
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("MKL_NUM_THREADS", "1")

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DIR = REPO_ROOT.parent / "shared"
# Test directories whose tests start local Ray clusters (the curation builds). Two clusters at once on a
# 2-core machine overloaded Ray's GCS under load (a build exited 3: "the GCS has become overloaded"), so
# under xdist they are one work unit, run by one worker, while the torch-bound train and eval test files
# are shared out to the others. (xdist's own --dist loadgroup cannot do it on pytest 9.2: it renames the
# item's `_nodeid`, which pytest 9.2 no longer reads.)
RAY_TEST_DIRS = ("tests/curate/", "tests/e2e/")


@pytest.hookimpl(optionalhook=True)  # a hook of pytest-xdist: plain `pytest` runs without it
def pytest_xdist_make_scheduler(config, log):
    if config.getvalue("dist") == "each":
        return None  # xdist's own
    from xdist.scheduler import LoadFileScheduling

    class RayTestsOnOneWorker(LoadFileScheduling):
        """Work units are test files, except that all Ray test files are one unit (collected first, so
        the largest unit starts first)."""

        def _split_scope(self, nodeid: str) -> str:
            return "ray" if nodeid.startswith(RAY_TEST_DIRS) else super()._split_scope(nodeid)

    return RayTestsOnOneWorker(config, log)


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


# the loopback S3 server (moto) and a bucket per test: see s3_server.py (its assert helpers get pytest's
# detailed failure messages like a test module's)
pytest.register_assert_rewrite("s3_server")
from s3_server import s3_bucket, s3_endpoint, s3_module_bucket  # noqa: E402, F401
