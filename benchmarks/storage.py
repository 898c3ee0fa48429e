"""Cached-loader pairs/s from object storage (a loopback S3 server) against the same shards on local disk.

The frame cache of the sample clips is prepared once on local disk, then uploaded unchanged to a bucket on
moto's S3 server (server mode, HTTP on 127.0.0.1: the S3 REST protocol, the same s3fs client as in
production; its latency is loopback's, so this measures the client side and the per-request overhead, not
a WAN). The trainer's loader (``FramePairDataset`` over ``CacheFrameSource``, a DataLoader with
``--workers`` processes and prefetch factor 4, as ``build_rank_batches`` builds it) then reads batches of
pairs from each, alternating local / S3 rounds so the machine's load hits both alike:

  local            pread of the two JPEGs per pair
  s3+prefetch      byte-range GETs, all frames of a batch fetched concurrently (``__getitems__``)
  s3-no-prefetch   byte-range GETs one frame at a time (what a per-sample dataset would do)

Ratios s3 / local are printed per round and as the median; the goal is >= 0.9 with prefetching. On a small
machine the S3 server's own CPU time competes with the loader for the same cores (a real store is another
machine), so the CPU seconds the server process used during the s3+prefetch measurement are printed too.
Build time to S3 against local disk is not measured here (`build --out s3://` is not implemented yet).

    python benchmarks/storage.py [--pairs 640] [--rounds 3] [--workers 2] [--batch 32]
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
for package in ("videonet-curate", "vito-train"):
    sys.path.insert(0, str(ROOT / "packages" / package / "src"))
sys.path.insert(0, str(ROOT / "tests" / "train"))

import psutil  # noqa: E402
import torch  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402

from videonet_curate.uri import StorageOptions, upload_file  # noqa: E402
from vito_train.data.cache import FrameCache  # noqa: E402
from vito_train.data.cache_source import CacheFrameSource  # noqa: E402
from vito_train.data.frame_pairs import FramePairDataset, collate_pair_batch  # noqa: E402
from vito_train.data.prepare import prepare_cache  # noqa: E402
from vito_train.distributed import RankBatchSampler  # noqa: E402

IMAGE_SIZE, MIN_SCALE, MAX_GAP_S = 112, 0.3, 1.0


class NoPrefetchSource(CacheFrameSource):
    """The same source without batched fetching: every frame is its own request."""

    prefetch = None


def start_s3() -> tuple[subprocess.Popen, str]:
    """moto's S3 server in its own process (a store is another machine: its CPU is not the loader's
    process, though on this machine it shares the same cores)."""
    import boto3

    os.environ.setdefault("AWS_ACCESS_KEY_ID", "benchmark")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "benchmark-secret")
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket="bench")
            return server, endpoint
        except Exception:  # not listening yet
            time.sleep(0.1)
    server.kill()
    sys.exit("moto's S3 server did not start")


def build_cache(work: Path) -> Path:
    from conftest import write_sample_manifest  # the trainer tests' helper: one kept row per sample clip

    samples = Path(os.environ.get("VIDEONET_SAMPLES", Path.home() / ".cache" / "videonet-curate" / "samples"))
    if not (samples / "videos").is_dir():
        sys.exit(f"sample media missing under {samples}: run `videonet-curate samples fetch`")
    (work / "videos").mkdir()
    for video in sorted((samples / "videos").iterdir()):
        (work / "videos" / video.name).symlink_to(video)
    manifest = write_sample_manifest(work / "videos", work)
    out = work / "cache"
    summary = prepare_cache(manifest, out, fps=8, short_side=160, clips_per_shard=3, workers=2)
    if not summary.complete:
        sys.exit(f"prepare failed: {summary}")
    return out


def pairs_per_s(dataset: FramePairDataset, pairs: int, batch: int, workers: int, first_step: int) -> float:
    steps = pairs // batch
    loader = DataLoader(
        dataset,
        batch_sampler=RankBatchSampler(batch, first_step, first_step + steps),
        num_workers=workers,
        collate_fn=collate_pair_batch,
        prefetch_factor=4 if workers else None,
    )
    started, got = time.perf_counter(), 0
    for item in loader:
        got += item["view_1"].shape[0]
    return got / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--pairs", type=int, default=640)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch", type=int, default=32)
    args = parser.parse_args()
    torch.set_num_threads(1)
    server, endpoint = start_s3()
    options = StorageOptions(endpoint_url=endpoint)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            local = build_cache(Path(tmp))
            files = [p for p in local.rglob("*") if p.is_file()]
            for path in files:
                upload_file(path, f"s3://bench/cache/{path.relative_to(local).as_posix()}", options)
            tar_bytes = sum(p.stat().st_size for p in files if p.suffix == ".tar")
            local_cache, remote_cache = FrameCache(local), FrameCache("s3://bench/cache", options)
            frames = sum(len(c.times) for c in local_cache.clips)
            print(
                f"cache: {len(local_cache.clips)} clips, {frames} frames, {tar_bytes / 1e6:.1f} MB of shards;"
                f" S3 at {endpoint} (moto server process, loopback)"
            )
            print(
                f"{args.pairs} pairs per measurement, batch {args.batch}, {args.workers} loader workers, "
                f"{IMAGE_SIZE} px crops, load {os.getloadavg()[0]:.1f}"
            )

            def dataset(source):
                return FramePairDataset(source, seed=0, image_size=IMAGE_SIZE, min_scale=MIN_SCALE)

            kinds = {
                "local": dataset(CacheFrameSource(local_cache, max_gap_s=MAX_GAP_S)),
                "s3+prefetch": dataset(CacheFrameSource(remote_cache, max_gap_s=MAX_GAP_S)),
                "s3-no-prefetch": dataset(NoPrefetchSource(remote_cache, max_gap_s=MAX_GAP_S)),
            }
            rates: dict[str, list[float]] = {k: [] for k in kinds}
            server_cpu = psutil.Process(server.pid)
            for round_ in range(args.rounds):
                first_step = round_ * (args.pairs // args.batch)  # fresh samples each round, same for all
                for kind, data in kinds.items():
                    cpu_before, wall_before = sum(server_cpu.cpu_times()[:2]), time.perf_counter()
                    rates[kind].append(pairs_per_s(data, args.pairs, args.batch, args.workers, first_step))
                    if kind == "s3+prefetch":
                        used = sum(server_cpu.cpu_times()[:2]) - cpu_before
                        wall = time.perf_counter() - wall_before
                        cores = os.cpu_count() or 1
                        print(
                            f"  s3+prefetch: the S3 server process used {used:.1f} CPU-s in {wall:.1f} s "
                            f"({used / (wall * cores):.0%} of this machine's {cores} cores)"
                        )
                print(
                    f"round {round_ + 1}: "
                    + ", ".join(f"{k} {v[-1]:.1f} pairs/s" for k, v in rates.items())
                    + f"; s3+prefetch / local {rates['s3+prefetch'][-1] / rates['local'][-1]:.3f}"
                )
            median = {k: statistics.median(v) for k, v in rates.items()}
            print("median: " + ", ".join(f"{k} {v:.1f} pairs/s" for k, v in median.items()))
            for kind in ("s3+prefetch", "s3-no-prefetch"):
                ratio = statistics.median(s / loc for s, loc in zip(rates[kind], rates["local"], strict=True))
                goal = " (goal >= 0.9)" if kind == "s3+prefetch" else ""
                print(f"ratio {kind} / local: {ratio:.3f}{goal}")
    finally:
        server.terminate()
        server.wait()


if __name__ == "__main__":
    main()
