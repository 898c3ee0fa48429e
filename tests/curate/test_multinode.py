"""`build --address` on a real multi-node Ray cluster on this machine (``ray.cluster_utils.Cluster``: a head
without CPUs and three worker nodes of one CPU, separate raylets), output on the loopback S3 server: a
build that runs to the end, and one whose worker node running a stage actor is killed (SIGKILL of its
raylet and workers) once the first shard is committed; it finishes, or a rerun does, with every row
accounted for. Also: a local --out that the nodes do not see is refused.

Four Ray nodes on a small machine: 86 s on the idle 2-core machine (~2.5 min at load 8-12). Part of
`make test`; `make test-multinode` runs these alone.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
from cli_env import cli_env

pytestmark = [pytest.mark.slow, pytest.mark.multinode]

MEDIA = ("realshort.mp4", "bikes.mp4", "cockatoo.mp4")  # 1 + 3 + 4 clips of at most 4 s
ARGS = ["--clip-seconds", "4", "--frames-per-clip", "2", "--shard-size", "1", "--threads", "1"]
# one decode and one model actor (1 CPU each) on two of the three nodes: the third takes the replacement
STAGES = ["--decode-workers", "1", "--model-workers", "1", "--device", "cpu"]
OBJECT_STORE = 200 * 1024**2  # per node; Ray's default (30% of memory) times three would not fit


@pytest.fixture(scope="module")
def cluster():
    """Head (no CPUs: the driver's node only coordinates) + three worker nodes of 1 CPU each; this
    process connects too, to see which nodes are busy."""
    import ray
    from ray.cluster_utils import Cluster

    started = time.perf_counter()
    head = {"num_cpus": 0, "object_store_memory": OBJECT_STORE}
    cluster = Cluster(initialize_head=True, connect=False, head_node_args=head)
    workers = [cluster.add_node(num_cpus=1, object_store_memory=OBJECT_STORE) for _ in range(3)]
    cluster.wait_for_nodes()
    print(f"cluster up in {time.perf_counter() - started:.1f} s")
    try:
        cluster.connect()
        yield cluster, workers
    finally:
        ray.shutdown()
        cluster.shutdown()


def _busy_worker(workers):
    """A worker node whose CPU is taken (by a stage actor: the probing tasks ended before any shard)."""
    from ray._private.state import available_resources_per_node

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        free = available_resources_per_node()
        busy = [w for w in workers if free.get(w.node_id, {}).get("CPU", 0) < 1]
        if busy:
            return busy[0]
        time.sleep(0.2)
    raise AssertionError(f"no worker node is running a stage actor: {free}")


@pytest.fixture(scope="module")
def media_bucket(s3_module_bucket, sample_videos: Path):
    for name in MEDIA:
        s3_module_bucket.client().upload_file(
            str(sample_videos / name), s3_module_bucket.name, f"media/{name}"
        )
    return s3_module_bucket


def _command(cluster, bucket, out: str, *extra: str, media: str | None = None) -> list[str]:
    source = ["--source", "local", "--input", media or bucket.uri("media")]
    return [
        sys.executable, "-m", "videonet_curate", "build", *source,
        "--out", out, "--address", cluster.address, *bucket.option_args, *ARGS, *STAGES, *extra,
    ]  # fmt: skip


@pytest.fixture(scope="module")
def local_media(sample_videos: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    media = tmp_path_factory.mktemp("media")
    for name in MEDIA:
        (media / name).symlink_to(sample_videos / name)
    return media


def test_a_local_out_that_the_nodes_do_not_see_is_refused(cluster, media_bucket, local_media: Path) -> None:
    """The driver runs in its own mount namespace with a tmpfs at --out's parent: the nodes' tasks find
    no marker there, as on a cluster whose --out is a node-local disk."""
    ray_cluster, _workers = cluster
    private = local_media.parent / "private"
    private.mkdir()
    probe = subprocess.run(["unshare", "-m", "--propagation", "private", "true"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip("unshare -m is not permitted here (needs CAP_SYS_ADMIN)")
    command = _command(ray_cluster, media_bucket, str(private / "out"), media=str(local_media))
    shell = f"mount -t tmpfs tmpfs {private} && exec " + " ".join(f"'{c}'" for c in command)
    result = subprocess.run(
        ["unshare", "-m", "--propagation", "private", "sh", "-c", shell],
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 2, result.stdout[-3000:] + result.stderr[-3000:]
    assert f"--out {private / 'out'}: not the same directory on node" in result.stdout + result.stderr
    assert (
        "use a URI" in result.stdout + result.stderr and "or a shared mount" in result.stdout + result.stderr
    )
    assert not any(private.iterdir())  # the driver's tmpfs is gone with it; nothing was left here


def test_a_build_on_two_worker_nodes_writes_to_s3_and_survives_losing_a_node(
    cluster, media_bucket, local_media: Path
) -> None:
    ray_cluster, workers = cluster
    bucket = media_bucket
    started = time.perf_counter()
    # local --input (every node sees this machine's disk: the per-node check passes), --out on S3
    whole = subprocess.run(
        _command(ray_cluster, bucket, bucket.uri("whole"), media=str(local_media)),
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=900,
    )
    print(f"full build on the cluster: {time.perf_counter() - started:.1f} s")
    assert whole.returncode == 0, whole.stdout[-3000:] + whole.stderr[-3000:]
    expected = bucket.read_manifest(bucket.uri("whole")).select(["clip_id", "status", "label"]).to_pylist()
    assert len(expected) == 8

    # the same build, one worker node killed once the first shard is committed
    out = bucket.uri("lost")
    proc = subprocess.Popen(
        _command(ray_cluster, bucket, out),
        env=cli_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    deadline = time.monotonic() + 600
    while not any(k.endswith(".done") for k in bucket.keys("lost/")):
        assert proc.poll() is None and time.monotonic() < deadline, "the build ended before its first shard"
        time.sleep(0.1)
    victim = _busy_worker(workers)
    ray_cluster.remove_node(victim, allow_graceful=False)
    try:
        stdout, stderr = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
    reran = False
    if proc.returncode not in (0, 1):  # the build gave up: the rerun resumes from the committed shards
        reran = True
        again = subprocess.run(
            _command(ray_cluster, bucket, out), env=cli_env(), capture_output=True, text=True, timeout=900
        )
        assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    print(f"losing a node: exit {proc.returncode}, rerun needed: {reran}")
    rows = bucket.read_manifest(out).select(["clip_id", "status", "label"]).to_pylist()
    assert rows == expected  # every row accounted for, labelled as in the uninterrupted build
    assert not any(k.endswith((".tmp", ".lock")) for k in bucket.keys("lost/"))
