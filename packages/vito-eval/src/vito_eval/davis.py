"""DAVIS-2017 semi-supervised video object segmentation by label propagation from a frozen encoder.

Reads the official layout with :mod:`vito_eval.datasets.davis`, propagates the first frame's masks with
:mod:`vito_eval.propagation`, writes palette PNGs in the DAVIS results layout, scores them with
:mod:`vito_eval.davis_metrics` and writes ``per-sequence-results.csv``, ``summary.json``, overlays and a
per-sequence bar plot.
"""

from __future__ import annotations

import csv
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from videonet_curate.storage import atomic_open, atomic_write_json
from vito_eval.datasets.davis import (
    DavisLayoutError,
    DavisSequence,
    default_palette,
    list_sequences,
    load_frames,
    read_annotations,
    read_index_png,
    write_index_png,
)
from vito_eval.davis_metrics import (
    DEFAULT_BOUND_TH,
    ObjectScores,
    evaluate_sequence,
    score_statistics,
    summarise,
)
from vito_eval.errors import DatasetError
from vito_eval.propagation import (
    DenseFeatureFn,
    PropagationConfig,
    downsample_labels,
    onehot_masks,
    propagate_labels,
    upsample_to_labels,
)
from vito_eval.runtime import start_throughput

log = logging.getLogger(__name__)


@torch.no_grad()
def dense_features(feature_fn: DenseFeatureFn, frames: np.ndarray, batch_size: int = 5) -> torch.Tensor:
    """The feature function over uint8 (T, H, W, 3) frames in mini-batches (CRW uses 5) -> (T, C, h, w)."""
    x = torch.from_numpy(frames).permute(0, 3, 1, 2)
    return torch.cat([feature_fn(x[i : i + batch_size]).float().cpu() for i in range(0, len(x), batch_size)])


def propagate_sequence(
    seq: DavisSequence,
    feature_fn: DenseFeatureFn,
    cfg: PropagationConfig,
    device: str = "cpu",
) -> tuple[np.ndarray, np.ndarray, list[int] | None]:
    """Predicted index maps (T, H, W) of one sequence, the frames (T, H, W, 3) and the annotation palette."""
    first, palette = read_index_png(seq.annotations[0])
    first = np.where(first == 255, 0, first)  # void is background, as the official loader reads it
    object_ids = [0] + [int(i) for i in np.unique(first) if i != 0]
    raw = load_frames(seq.frames)
    if raw.shape[1:3] != first.shape:
        raise DavisLayoutError(
            f"sequence {seq.name}: frames are {raw.shape[1:3]} but annotations {first.shape}"
        )
    feats = dense_features(feature_fn, raw)
    h, w = feats.shape[-2:]
    first_soft = downsample_labels(onehot_masks(torch.from_numpy(first), object_ids), (h, w))
    soft = propagate_labels(feats, first_soft, cfg, device)
    lut = np.array(object_ids, dtype=np.uint8)
    preds = np.stack([lut[upsample_to_labels(s, first.shape).numpy()] for s in soft])
    preds[0] = first  # frame 0 is given
    return preds, raw, palette


def overlay(
    frame: np.ndarray, labels: np.ndarray, palette: list[int] | None, alpha: float = 0.5
) -> np.ndarray:
    """Blend palette colours of non-background labels onto an RGB frame."""
    pal = np.array(palette if palette else default_palette(), dtype=np.uint8).reshape(-1, 3)
    colours = pal[labels]
    out = frame.astype(np.float32)
    fg = labels > 0
    out[fg] = (1 - alpha) * out[fg] + alpha * colours[fg]
    return out.astype(np.uint8)


@dataclass(frozen=True)
class DavisRunConfig:
    root: Path
    out: Path
    split: str = "val"
    resolution: str = "480p"
    bound_th: float = DEFAULT_BOUND_TH
    n_overlay_frames: int = 3
    device: str = "cpu"  # where the affinities are computed


def run_davis(
    feature_fn: DenseFeatureFn,
    run: DavisRunConfig,
    prop: PropagationConfig,
    encoder_name: str = "",
    sequences: list[str] | None = None,
    track: Callable[[Iterable, str], Iterable] | None = None,
    extra: dict | None = None,
) -> dict:
    """Propagate, write predictions, score every sequence; returns (and writes) the summary JSON dict
    (``extra`` is merged into it).

    A sequence that fails is recorded in ``failed`` with its reason and the run goes on.
    """
    seqs = list_sequences(run.root, run.split, run.resolution)
    if sequences:
        unknown = sorted(set(sequences) - {s.name for s in seqs})
        if unknown:
            raise DavisLayoutError(f"sequences {unknown} are not in ImageSets/2017/{run.split}.txt")
        seqs = [s for s in seqs if s.name in sequences]
    out = Path(run.out)
    out.mkdir(parents=True, exist_ok=True)
    objects: list[ObjectScores] = []
    failed: dict[str, str] = {}
    started = time.time()
    throughput = start_throughput(run.device, "frames", measures="encoder forward + label propagation")
    iterator = track(seqs, "DAVIS sequences") if track else seqs
    for seq in iterator:
        try:
            with throughput.timed(len(seq.frames)):
                preds, raw, palette = propagate_sequence(seq, feature_fn, prop, run.device)
            for t, frame in enumerate(seq.frames):
                write_index_png(out / "predictions" / seq.name / f"{frame.stem}.png", preds[t], palette)
            gt = read_annotations(seq, len(seq.frames))
            objects += evaluate_sequence(seq.name, gt, preds, bound_th=run.bound_th)
            _write_overlays(out / "overlays", seq.name, raw, preds, palette, run.n_overlay_frames)
        except (
            DatasetError,
            OSError,
            ValueError,
            RuntimeError,
        ) as err:  # one bad sequence must not sink the run
            log.warning("sequence %s failed: %s", seq.name, err)
            failed[seq.name] = f"{type(err).__name__}: {err}"
    if not objects:
        raise RuntimeError(f"no DAVIS sequence could be evaluated; failures: {failed}")
    summary = summarise(objects)
    _write_per_sequence_csv(out / "per-sequence-results.csv", objects)
    _plot_per_sequence(out / "per-sequence-jf.png", objects)
    result = {
        "task": "davis2017-semi-supervised",
        "encoder": encoder_name,
        "split": run.split,
        "resolution": run.resolution,
        "propagation": asdict(prop),
        "bound_th": run.bound_th,
        "metrics": asdict(summary),
        "sequences": sorted({o.sequence for o in objects}),
        "failed": failed,
        "seconds": round(time.time() - started, 2),
        "throughput": throughput.report(),
        **(extra or {}),
    }
    _write_json(out / "summary.json", result)
    return result


def _write_overlays(out: Path, name: str, raw: np.ndarray, preds: np.ndarray, palette, n: int) -> None:
    if n <= 0:
        return
    out.mkdir(parents=True, exist_ok=True)
    for t in np.unique(np.linspace(0, len(raw) - 1, n).round().astype(int)):
        Image.fromarray(overlay(raw[t], preds[t], palette)).save(out / f"{name}_{t:05d}.png")


def _write_per_sequence_csv(path: Path, objects: list[ObjectScores]) -> None:
    """One row per object, named ``<seq>_<obj>`` as davis2017-evaluation's per-sequence-results CSV."""
    with atomic_open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(
            ["Sequence", "J-Mean", "F-Mean", "J&F-Mean", "J-Recall", "F-Recall", "J-Decay", "F-Decay"]
        )
        for o in objects:
            j, f = score_statistics(o.j), score_statistics(o.f)
            writer.writerow(
                [f"{o.sequence}_{o.object_id}"]
                + [
                    f"{v:.6f}"
                    for v in (j.mean, f.mean, (j.mean + f.mean) / 2, j.recall, f.recall, j.decay, f.decay)
                ]
            )


def _plot_per_sequence(path: Path, objects: list[ObjectScores]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [f"{o.sequence}_{o.object_id}" for o in objects]
    jf = [(score_statistics(o.j).mean + score_statistics(o.f).mean) / 2 for o in objects]
    fig, ax = plt.subplots(figsize=(max(4.0, 0.3 * len(names) + 2), 3.5))
    ax.bar(range(len(names)), jf, color="tab:blue")
    ax.set_xticks(range(len(names)), names, rotation=90, fontsize=7)
    ax.set_ylim(0, 1)
    ax.set_ylabel("J&F mean")
    ax.set_title(f"DAVIS-2017 per object (mean {np.mean(jf):.3f})")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _write_json(path: Path, obj: dict) -> None:
    atomic_write_json(path, obj, default=str)


@dataclass
class DavisEvalConfig:
    """Options of `vito-eval davis`: an encoder spec, the dataset, the preset and any overrides."""

    encoder: str
    root: Path
    out: Path
    preset: str = "crw"
    n_context: int | None = None
    topk: int | None = None
    radius: float | None = None
    temperature: float | None = None
    stage: int = 3
    output_stride: int | None = 8
    split: str = "val"
    resolution: str = "480p"
    sequences: list[str] | None = None
    n_overlay_frames: int = 3
    bound_th: float = DEFAULT_BOUND_TH
    device: str = "cpu"
    precision: str = "auto"  # the encoder's forward: auto (bf16 on CUDA), fp32, bf16


def propagation_config(preset: str, **overrides: float | int | None) -> PropagationConfig:
    """A preset (crw, vfs, dino) with the given non-None fields replaced."""
    from dataclasses import replace

    from vito_eval.propagation import PRESETS

    if preset not in PRESETS:
        raise DatasetError(f"--preset {preset!r}: choose one of {sorted(PRESETS)}")
    try:
        return replace(PRESETS[preset], **{k: v for k, v in overrides.items() if v is not None})
    except ValueError as err:
        raise DatasetError(f"invalid propagation options: {err}") from err


def encoder_feature_fn(encoder, stage: int, output_stride: int | None) -> DenseFeatureFn:
    """Dense features of an `vito_eval.encoders.Encoder`. ResNets remove the strides after ``stage`` as
    CRW/VFS do (layer3 at stride 8); other networks take the stage that already has that stride."""
    if output_stride is not None and encoder.family != "resnet":
        natural = {8: 2, 16: 3, 32: 4}[output_stride]
        log.warning(
            "%s is not a ResNet: using its stage %d (stride %d) instead of removing strides",
            encoder.name,
            natural,
            output_stride,
        )
        return lambda x: encoder.dense(x, stage=natural)
    return lambda x: encoder.dense(x, stage=stage, output_stride=output_stride)


def run_davis_eval(config: DavisEvalConfig, track: Callable[[Iterable, str], Iterable] | None = None) -> dict:
    """Load the encoder and run `run_davis` with the chosen preset and overrides."""
    from vito_eval.encoders import load_encoder

    prop = propagation_config(
        config.preset,
        n_context=config.n_context,
        topk=config.topk,
        radius=config.radius,
        temperature=config.temperature,
    )
    list_sequences(
        config.root, config.split, config.resolution
    )  # a wrong layout fails before the model loads
    encoder = load_encoder(config.encoder, device=config.device, precision=config.precision)
    run = DavisRunConfig(
        root=config.root,
        out=config.out,
        split=config.split,
        resolution=config.resolution,
        bound_th=config.bound_th,
        n_overlay_frames=config.n_overlay_frames,
        device=config.device,
    )
    result = run_davis(
        encoder_feature_fn(encoder, config.stage, config.output_stride),
        run,
        prop,
        encoder_name=encoder.name,
        sequences=config.sequences,
        track=track,
        extra={
            "preset": config.preset,
            "stage": config.stage,
            "output_stride": config.output_stride,
            "weights_sha256": encoder.weights_hash,
            "precision": encoder.precision,
        },
    )
    return result
