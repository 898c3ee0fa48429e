"""bf16 autocast of the encoder against fp32, on CPU, on the real-texture fixtures: `davis` (CRW preset),
`segment` and `probe` results stay within `vito_eval.runtime.BF16_TOLERANCE`, and each command reports its
precision, throughput and peak memory. The encoder is efficientnet-lite0, the trained ImageNet classifier
videonet-curate ships, so the features are those of a real network, not of random weights."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from eval_fixtures import texture, write_davis_fixture, write_voc_fixture

from vito_eval.datasets import load_dataset, stratified_subsample
from vito_eval.davis import DavisEvalConfig, run_davis_eval
from vito_eval.encoders import load_encoder
from vito_eval.errors import EncoderError
from vito_eval.features import extract_features
from vito_eval.knn import knn_scores
from vito_eval.linear_probe import fit_linear_probe
from vito_eval.probe import ProbeEvalConfig, run_probe_eval
from vito_eval.runtime import BF16_TOLERANCE, resolve_precision, start_throughput
from vito_eval.segmentation import SegmentationConfig, run_segmentation

ENCODER = "efficientnet-lite0"


@pytest.fixture(autouse=True, scope="module")
def _one_thread(one_torch_thread):
    """Every test here runs with one torch thread (see tests/conftest.py)."""


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = a.reshape(len(a), -1), b.reshape(len(b), -1)
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def test_auto_is_bf16_on_cuda_only_and_bad_names_fail():
    assert resolve_precision("auto", "cuda:0") == "bf16"
    assert resolve_precision("auto", "cpu") == "fp32"
    assert resolve_precision("bf16", "cpu") == "bf16"
    with pytest.raises(ValueError, match="precision"):
        resolve_precision("fp8", "cpu")


@pytest.fixture(scope="module")
def encoders():
    """The encoder in both precisions, loaded once for the module."""
    return {p: load_encoder(ENCODER, precision=p) for p in ("fp32", "bf16")}


@pytest.fixture
def loaded(encoders, monkeypatch):
    """The commands' `load_encoder` answers with the module's encoders (loading costs seconds each)."""

    def load(spec, features="gap", device="cpu", precision="fp32"):
        assert spec == ENCODER and device == "cpu"
        return encoders[precision]

    monkeypatch.setattr("vito_eval.encoders.load_encoder", load)
    monkeypatch.setattr("vito_eval.probe.load_encoder", load)


def test_bf16_runs_the_forward_in_bf16_and_keys_the_cache_apart(encoders):
    fp32, bf16 = encoders["fp32"], encoders["bf16"]
    assert (fp32.precision, bf16.precision) == ("fp32", "bf16")
    assert fp32.cache_key != bf16.cache_key  # bf16 features never answer for fp32 ones
    seen = []
    hook = bf16.model.conv_stem.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    out = bf16.embed(torch.zeros(1, 3, 32, 32, dtype=torch.uint8))
    hook.remove()
    assert seen == [torch.bfloat16] and out.dtype == torch.float32
    with pytest.raises(EncoderError, match="--precision"):  # the CLI turns this into exit status 2
        fp32.to("cpu", "fp8")
    assert fp32.precision == "fp32"


def test_probe_features_and_accuracy_bf16_within_tolerance(encoders, samples_dir: Path):
    ds = load_dataset(f"mnist-csv:{samples_dir / 'mnist-5k' / 'mnist_5k.csv.gz'}")
    train = ds.train.subset(stratified_subsample(ds.train.labels, 150, 0))
    test = ds.test.subset(stratified_subsample(ds.test.labels, 300, 0))
    top1 = {}
    feats = {}
    for precision, encoder in encoders.items():
        xtr, xte = extract_features(encoder, train, 48), extract_features(encoder, test, 48)
        probe = fit_linear_probe(xtr, train.labels, 10, (1e-3,))
        knn = knn_scores(xtr, train.labels, xte, 10).argmax(1)
        top1[precision] = ((probe.predict(xte) == test.labels).mean(), (knn == test.labels).mean())
        feats[precision] = xte
    cosine = _cosines(feats["fp32"], feats["bf16"])
    print(f"probe top-1 (linear, kNN) fp32 {top1['fp32']} bf16 {top1['bf16']}; cosine min {cosine.min():.5f}")
    assert top1["fp32"][0] > 0.5  # a trained encoder: far above chance (0.1)
    assert cosine.min() >= BF16_TOLERANCE["feature_cosine_min"]
    for a, b in zip(top1["fp32"], top1["bf16"], strict=True):
        assert abs(a - b) <= BF16_TOLERANCE["probe_top1_abs"]


def test_probe_json_reports_precision_and_throughput(loaded, samples_dir: Path):
    config = ProbeEvalConfig(
        encoders=[ENCODER],
        dataset=f"mnist-csv:{samples_dir / 'mnist-5k' / 'mnist_5k.csv.gz'}",
        image_size=32,
        train_limit=20,
        test_limit=10,
        cache_dir=None,
        l2_grid=(1e-3,),
        precision="bf16",
    )
    result = run_probe_eval(config)["results"][0]
    assert result["precision"] == "bf16"
    assert result["throughput"]["images"] == 30 and result["throughput"]["images_per_second"] > 0
    assert result["throughput"]["peak_memory_bytes"] > 10**6


def test_dense_features_bf16_within_tolerance(encoders, samples_dir: Path):
    frames = np.stack([texture(samples_dir, "cockatoo.mp4", s, (96, 64)) for s in (1.0, 2.0, 3.0)])
    x = torch.from_numpy(frames).permute(0, 3, 1, 2)
    cosine = _cosines(encoders["fp32"].dense(x).numpy(), encoders["bf16"].dense(x).numpy())
    print(f"dense feature cosine min {cosine.min():.5f}")
    assert cosine.min() >= BF16_TOLERANCE["feature_cosine_min"]


def test_davis_crw_bf16_within_tolerance(loaded, tmp_path_factory, samples_dir: Path):
    davis = write_davis_fixture(tmp_path_factory.mktemp("davis") / "DAVIS", samples_dir)
    runs = {}
    for precision in ("fp32", "bf16"):
        config = DavisEvalConfig(
            encoder=ENCODER,
            root=davis.root,
            out=tmp_path_factory.mktemp(precision),
            preset="crw",
            n_overlay_frames=0,
            precision=precision,
        )
        runs[precision] = run_davis_eval(config)
    for precision, result in runs.items():
        assert result["precision"] == precision and result["failed"] == {}
        assert result["throughput"]["frames"] == 12 and result["throughput"]["frames_per_second"] > 0
    a, b = runs["fp32"]["metrics"]["jf_mean"], runs["bf16"]["metrics"]["jf_mean"]
    print(f"DAVIS J&F fp32 {a:.4f} bf16 {b:.4f}")
    assert abs(a - b) <= BF16_TOLERANCE["davis_jf_abs"]


def test_segment_bf16_within_tolerance(loaded, tmp_path_factory, samples_dir: Path):
    voc = write_voc_fixture(tmp_path_factory.mktemp("voc") / "VOC2012", samples_dir)
    runs = {}
    for precision in ("fp32", "bf16"):
        config = SegmentationConfig(
            encoder=ENCODER,
            dataset=f"voc:{voc.root}",
            stage=3,
            image_size=96,
            pixels_per_image=200,
            l2_grid=(1e-3,),
            n_visualise=0,
            precision=precision,
        )
        runs[precision] = run_segmentation(config)
    for precision, result in runs.items():
        assert result["precision"] == precision
        assert result["throughput"]["images"] == 12 and result["throughput"]["images_per_second"] > 0
    a, b = runs["fp32"]["miou"], runs["bf16"]["miou"]
    print(f"segment mIoU fp32 {a:.4f} bf16 {b:.4f}")
    assert abs(a - b) <= BF16_TOLERANCE["segment_miou_abs"]


def test_throughput_report_on_cpu():
    meter = start_throughput("cpu", "frames", measures="test")
    with meter.timed(5):
        sum(range(10_000))
    report = meter.report()
    assert report["frames"] == 5 and report["frames_per_second"] > 0
    assert report["peak_memory"].startswith("process peak RSS") and report["peak_memory_bytes"] > 10**6
    assert report["measures"] == "test" and report["device"] == "cpu"
