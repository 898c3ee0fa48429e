"""Cached-loader pairs/s from object storage (a loopback S3 server) against the same shards on local disk.

The frame cache of the sample clips is prepared once on local disk, then uploaded unchanged to a bucket on
moto's S3 server (server mode, HTTP on 127.0.0.1: the S3 REST protocol, the same clients as in
production; its latency is loopback's, so this measures the client side and the per-request overhead, not
a WAN). The trainer's loader (``FramePairDataset`` over ``CacheFrameSource``, a DataLoader with
``--workers`` processes and prefetch factor 4, as ``build_rank_batches`` builds it) then reads batches of
pairs from each, alternating local / S3 rounds so the machine's load hits both alike:

  local            pread of the two JPEGs per pair
  s3+prefetch      the frames of a batch fetched together (``__getitems__``): byte ranges less than
                   ``range_reads.MERGE_GAP`` apart coalesced into one GET, the GETs sent concurrently,
                   with pyarrow's C++ S3 client (the default for s3://); each sample is made as soon as
                   the GET holding its frames has arrived
  s3fs+prefetch    the same requests through fsspec's s3fs (botocore in Python)
  before+prefetch  as before 2026-12-02: s3fs, ranges merged only when less than 256 KiB apart
  s3-no-prefetch   byte-range GETs one frame at a time (what a per-sample dataset would do)

Ratios s3 / local are printed per round and as the median; the goal is >= 0.9 with prefetching. On a small
machine the S3 server's own CPU time competes with the loader for the same cores (a real store is another
machine), so the CPU seconds the server process used during the s3+prefetch measurement are printed too,
and pairs per CPU-second (loader, workers and server together: steadier than pairs/s on a shared machine).
How many GETs a batch needs depends on how close its frames lie in the shards: ``--copies N`` makes the
dataset N times larger (every shard again, clips renamed), so a batch's frames lie further apart.
With ``--build``: `videonet-curate build --source local` of sample videos (a subprocess, on a local Ray,
as users run it) three ways, alternating within each round: local input -> local OUT, local input ->
``--out s3://``, and ``--input s3://`` -> ``--out s3://``; wall seconds each and the ratios to local.

``--merge-gaps 1024,256`` adds the default reader with other merge gaps (KiB): fewer bytes, more GETs.

    python benchmarks/storage.py [--pairs 640] [--rounds 3] [--workers 2] [--batch 32] [--copies 1]
                                 [--merge-gaps KIB,...]
    python benchmarks/storage.py --build [--rounds 2] [--videos 4]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import resource
import shutil
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

import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
import torch  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402

from videonet_curate.uri import StorageOptions, upload_file  # noqa: E402
from vito_train.data.cache import (  # noqa: E402
    FORMAT,
    INDEX_FILE,
    PLAN_FILE,
    CachePlan,
    FrameCache,
    read_table,
    shard_paths,
)
from vito_train.data.cache_source import CacheFrameSource  # noqa: E402
from vito_train.data.frame_pairs import FramePairDataset, collate_pair_batch  # noqa: E402
from vito_train.data.pairs import clip_for_index, sample_generator  # noqa: E402
from vito_train.data.prepare import prepare_cache  # noqa: E402
from vito_train.data.range_reads import MERGE_GAP, coalesce  # noqa: E402
from vito_train.distributed import RankBatchSampler  # noqa: E402

IMAGE_SIZE, MIN_SCALE, MAX_GAP_S = 112, 0.3, 1.0


class NoPrefetchSource(CacheFrameSource):
    """The same source without batched fetching: every frame is its own request."""

    prefetch = None


class FsspecCache(FrameCache):
    """The same cache read through fsspec's s3fs (botocore in Python) instead of pyarrow's C++ client."""

    range_client = "fsspec"


class BeforeCache(FsspecCache):
    """As the cache read object storage before 2026-12-02 (s3fs, ranges merged only when < 256 KiB apart)."""

    merge_gap = 256 * 1024


def gap_cache(kib: int) -> type[FrameCache]:
    """The default reader (pyarrow) with ranges merged when less than ``kib`` KiB apart."""
    return type(f"Gap{kib}KiBCache", (FrameCache,), {"merge_gap": kib * 1024})


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


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


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


def replicate_cache(cache: Path, copies: int) -> None:
    """Make the cache ``copies`` times larger in place: every shard again under new shard numbers, its
    clips renamed ``{clip_id}#{copy}`` (the same bytes: a larger dataset, so a batch's frames lie further
    apart, as on a real cache whose shards far outnumber a batch's clips)."""
    plan = CachePlan.from_json((cache / PLAN_FILE).read_text())
    shards = plan.n_shards
    clip_ids = list(plan.clip_ids)
    for copy in range(1, copies):
        for shard in range(shards):
            (tar, index, done), (new_tar, new_index, new_done) = (
                shard_paths(cache, s) for s in (shard, shard + copy * shards)
            )
            shutil.copyfile(tar, new_tar)
            shutil.copyfile(done, new_done)
            table = read_table(index)
            renamed = [f"{c}#{copy}" for c in table.column("clip_id").to_pylist()]
            table = table.set_column(0, "clip_id", pa.array(renamed, pa.string()))
            pq.write_table(table, new_index)
        clip_ids += [f"{c}#{copy}" for c in plan.clip_ids]
    plan = dataclasses.replace(plan, clip_ids=tuple(clip_ids))
    # the index as write_global_index writes it, over every shard (shard k of a copy is not the plan's
    # k-th slice of clip ids when the last shard is short; readers only use the index)
    tables = []
    for shard in range(shards * copies):
        table = read_table(shard_paths(cache, shard)[1])
        tables.append(table.append_column("shard", pa.array([shard] * table.num_rows, pa.int32())))
    index = pa.concat_tables(tables).replace_schema_metadata({"format": FORMAT, "plan": plan.to_json()})
    pq.write_table(index, cache / INDEX_FILE)
    (cache / PLAN_FILE).write_text(plan.to_json())


def requests_per_batch(
    dataset: FramePairDataset,
    cache: FrameCache,
    pairs: int,
    batch: int,
    first_step: int,
    max_gap: int = MERGE_GAP,
) -> tuple[float, float]:
    """(GETs, bytes) a loader worker sends per batch with prefetching: the batch's first draws' frames,
    coalesced as ``FrameCache.read_jpegs`` does (computed here from the same picks, not counted in the
    workers)."""
    n_items, requests, bytes_ = len(dataset.source), 0, 0
    for step in range(first_step, first_step + pairs // batch):
        frames = set()
        for index in range(step * batch, (step + 1) * batch):
            item = clip_for_index(dataset.seed, index, n_items)
            picks = dataset.source.pick_pair(item, sample_generator(dataset.seed, index))
            frames.update((item, f) for f in picks)
        ranges = []
        for item, f in frames:
            clip = cache.clips[item]
            start = int(clip.offsets[f])
            ranges.append((str(clip.shard), start, start + int(clip.lengths[f])))
        merged, _ = coalesce(ranges, max_gap)
        requests += len(merged)
        bytes_ += sum(end - start for _, start, end in merged)
    steps = pairs // batch
    return requests / steps, bytes_ / steps


def process_cpu_seconds() -> float:
    """CPU seconds of this process and of its children that have ended (the loader workers)."""
    own, children = (resource.getrusage(w) for w in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


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


BUILD_ARGS = ["--clip-seconds", "4", "--frames-per-clip", "4", "--shard-size", "4", "--model-workers", "1"]


def build_seconds(input_: str, out: str, endpoint: str) -> float:
    command = [sys.executable, "-m", "videonet_curate", "build", "--source", "local", "--input", input_]
    command += ["--out", out, "--storage-option", f"endpoint_url={endpoint}", *BUILD_ARGS]
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "HF_HUB_OFFLINE": "1"}
    started = time.perf_counter()
    result = subprocess.run(command, env=env, capture_output=True, text=True)
    if result.returncode not in (0, 1):
        sys.exit(f"build {input_} -> {out} failed ({result.returncode}): {result.stderr[-2000:]}")
    return time.perf_counter() - started


def compare_builds(rounds: int, videos: int, endpoint: str) -> None:
    samples = Path(os.environ.get("VIDEONET_SAMPLES", Path.home() / ".cache" / "videonet-curate" / "samples"))
    chosen = sorted((samples / "videos").iterdir(), key=lambda p: p.stat().st_size)[:videos]
    options = StorageOptions(endpoint_url=endpoint)
    with tempfile.TemporaryDirectory() as tmp:
        media = Path(tmp) / "media"
        media.mkdir()
        for video in chosen:
            (media / video.name).symlink_to(video)
            upload_file(video, f"s3://bench/media/{video.name}", options)
        megabytes = sum(float(p.stat().st_size) for p in chosen) / 1e6
        names = ", ".join(p.name for p in chosen)
        print(f"build: {len(chosen)} videos ({megabytes:.1f} MB: {names}), {' '.join(BUILD_ARGS)}")
        times: dict[str, list[float]] = {"local": [], "local->s3": [], "s3->s3": []}
        for round_ in range(rounds):
            load = os.getloadavg()[0]
            times["local"].append(build_seconds(str(media), f"{tmp}/out-{round_}", endpoint))
            times["local->s3"].append(build_seconds(str(media), f"s3://bench/run-{round_}", endpoint))
            times["s3->s3"].append(build_seconds("s3://bench/media", f"s3://bench/run-s3-{round_}", endpoint))
            print(
                f"round {round_ + 1} (load {load:.1f}): "
                + ", ".join(f"{k} {v[-1]:.1f} s" for k, v in times.items())
            )
        for kind in ("local->s3", "s3->s3"):
            ratio = statistics.median(s / loc for s, loc in zip(times[kind], times["local"], strict=True))
            print(f"build time {kind} / local: {ratio:.3f} (median of rounds)")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--pairs", type=int, default=640)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument(
        "--copies", type=int, default=1, help="the cache's shards N times over (a larger dataset)"
    )
    parser.add_argument(
        "--merge-gaps",
        default="",
        help="also read S3 with these merge gaps in KiB (comma-separated), e.g. 1024,256",
    )
    parser.add_argument("--build", action="store_true", help="time builds to S3 against local disk instead")
    parser.add_argument("--videos", type=int, default=4, help="--build: the smallest N sample videos")
    args = parser.parse_args()
    torch.set_num_threads(1)
    server, endpoint = start_s3()
    options = StorageOptions(endpoint_url=endpoint)
    if args.build:
        try:
            compare_builds(args.rounds, args.videos, endpoint)
        finally:
            server.terminate()
            server.wait()
        return
    try:
        with tempfile.TemporaryDirectory() as tmp:
            local = build_cache(Path(tmp))
            if args.copies > 1:
                replicate_cache(local, args.copies)
            files = [p for p in local.rglob("*") if p.is_file()]
            for path in files:
                upload_file(path, f"s3://bench/cache/{path.relative_to(local).as_posix()}", options)
            tar_bytes = sum(p.stat().st_size for p in files if p.suffix == ".tar")
            local_cache, remote_cache = FrameCache(local), FrameCache("s3://bench/cache", options)
            s3fs_cache = FsspecCache("s3://bench/cache", options)
            before_cache = BeforeCache("s3://bench/cache", options)
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
                "s3fs+prefetch": dataset(CacheFrameSource(s3fs_cache, max_gap_s=MAX_GAP_S)),
                "before+prefetch": dataset(CacheFrameSource(before_cache, max_gap_s=MAX_GAP_S)),
                "s3-no-prefetch": dataset(NoPrefetchSource(remote_cache, max_gap_s=MAX_GAP_S)),
            }
            gaps = [int(kib) for kib in args.merge_gaps.split(",") if kib.strip()]
            for kib in gaps:
                cache = gap_cache(kib)("s3://bench/cache", options)
                kinds[f"s3-gap-{kib}KiB"] = dataset(CacheFrameSource(cache, max_gap_s=MAX_GAP_S))
            for kib in [MERGE_GAP // 1024, *gaps]:
                n, size = requests_per_batch(
                    kinds["s3+prefetch"], local_cache, args.pairs * args.rounds, args.batch, 0, kib * 1024
                )
                print(
                    f"merge gap {kib} KiB: {n / args.batch:.3f} GETs per pair, "
                    f"{size / args.batch / 1e6:.3f} MB per pair ({size / n / 1e6:.2f} MB per GET)"
                )
            gets, got = requests_per_batch(
                kinds["s3+prefetch"], local_cache, args.pairs * args.rounds, args.batch, 0
            )
            print(
                f"s3+prefetch sends {gets / args.batch:.2f} GETs per pair ({got / gets / 1e6:.2f} MB each, "
                f"{got / args.batch / 1e6:.2f} MB per pair); s3-no-prefetch about 2 GETs per pair "
                f"of ~{sum(c.lengths.sum() for c in local_cache.clips) / frames / 1e3:.0f} KB"
            )
            rates: dict[str, list[float]] = {k: [] for k in kinds}
            cpu: dict[str, list[float]] = {k: [] for k in kinds}
            server_ms: dict[str, list[float]] = {k: [] for k in kinds}  # the S3 server's CPU per pair
            client_cpu: dict[str, list[float]] = {k: [] for k in kinds}  # without the server's share
            for round_ in range(args.rounds):
                first_step = round_ * (args.pairs // args.batch)  # fresh samples each round, same for all
                for kind, data in kinds.items():
                    cpu_before, wall_before = cpu_seconds(server.pid), time.perf_counter()
                    ours_before = process_cpu_seconds()
                    rates[kind].append(pairs_per_s(data, args.pairs, args.batch, args.workers, first_step))
                    used = cpu_seconds(server.pid) - cpu_before
                    ours = process_cpu_seconds() - ours_before
                    cpu[kind].append(args.pairs / (ours + used))
                    server_ms[kind].append(used / args.pairs * 1e3)
                    client_cpu[kind].append(args.pairs / ours)
                    if kind == "s3+prefetch":
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
            print(
                "pairs per CPU-second (loader process, its workers and the S3 server together), median: "
                + ", ".join(f"{k} {statistics.median(v):.1f}" for k, v in cpu.items())
            )
            print(
                "S3 server CPU ms per pair, median: "
                + ", ".join(f"{k} {statistics.median(v):.2f}" for k, v in server_ms.items() if k != "local")
            )
            print(
                "pairs per CPU-second of the loader alone (what a store on another machine leaves), median: "
                + ", ".join(f"{k} {statistics.median(v):.1f}" for k, v in client_cpu.items())
            )
            for kind in [k for k in kinds if k != "local"]:
                ratio = statistics.median(s / loc for s, loc in zip(rates[kind], rates["local"], strict=True))
                goal = " (goal >= 0.9)" if kind == "s3+prefetch" else ""
                per_cpu, client = (
                    statistics.median(s / loc for s, loc in zip(c[kind], c["local"], strict=True))
                    for c in (cpu, client_cpu)
                )
                print(
                    f"ratio {kind} / local: {ratio:.3f}{goal}; per CPU-second {per_cpu:.3f} "
                    f"(loader alone {client:.3f})"
                )
    finally:
        server.terminate()
        server.wait()


if __name__ == "__main__":
    main()
