"""Semantic segmentation with frozen dense features: PASCAL VOC 2012 and ADE20K (SceneParsing).

Images are resized to ``image_size`` x ``image_size`` for the encoder; scores are computed at the original
label resolution. Two heads on the frozen feature map of one stage:

- ``linear``: a linear probe (`vito_eval.linear_probe.fit_linear_probe`, L-BFGS) on the features
  bilinearly upsampled to label resolution, fit on a seeded sample of labelled pixels per training image;
  since the probe and bilinear resampling are both linear, prediction applies the probe on the feature
  grid and upsamples the logits, which is the same thing at a fraction of the cost.
- ``conv``: BatchNorm + 1x1 convolution trained with Adam on all labelled pixels (logits upsampled to label
  resolution, cross-entropy ignoring 255), the usual light "linear" segmentation head.

mIoU follows `vito_eval.seg_metrics` (dataset-wide confusion matrix, ignore index 255).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from vito_eval.datasets import load_segmentation_dataset
from vito_eval.datasets.segmentation import SegmentationDataset, SegmentationLayoutError
from vito_eval.runtime import Throughput, start_throughput
from vito_eval.seg_metrics import IGNORE_INDEX, confusion_matrix, scores_from_confusion

log = logging.getLogger(__name__)

Head = Literal["linear", "conv"]
DenseFn = Callable[[torch.Tensor], torch.Tensor]  # uint8 (N, 3, S, S) -> (N, C, h, w)


def model_input(path: Path, image_size: int) -> torch.Tensor:
    """An RGB image resized (bilinear) to image_size x image_size: uint8 (3, S, S)."""
    with Image.open(path) as im:
        im = im.convert("RGB").resize((image_size, image_size), Image.Resampling.BILINEAR)
        return torch.from_numpy(np.asarray(im, dtype=np.uint8).copy()).permute(2, 0, 1)


def iter_dense(
    dense: DenseFn,
    pairs: list[tuple[Path, Path]],
    image_size: int,
    batch_size: int = 8,
    track: Callable[[Iterable, str], Iterable] | None = None,
    desc: str = "images",
    throughput: Throughput | None = None,
) -> Iterator[tuple[int, torch.Tensor]]:
    """(index, dense features (C, h, w)) of the images of ``pairs`` in order, computed in batches; streamed so
    that a split never has to fit in memory at once. ``throughput`` times the forward passes."""
    batches = range(0, len(pairs), batch_size)
    for i in track(batches, desc) if track else batches:
        x = torch.stack([model_input(img, image_size) for img, _ in pairs[i : i + batch_size]])
        with torch.no_grad(), throughput.timed(len(x)) if throughput else nullcontext():
            feats = dense(x).float().cpu()
        yield from enumerate(feats, start=i)


def sample_pixel_features(
    feats: torch.Tensor, label: np.ndarray, n_pixels: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Features bilinearly upsampled to label resolution, read at up to ``n_pixels`` random labelled pixels.

    Sampling uses grid_sample at the pixel centres, which equals F.interpolate(..., align_corners=False)
    followed by indexing, without materialising the full-resolution map.
    """
    ys, xs = np.nonzero(label != IGNORE_INDEX)
    if len(ys) == 0:
        return np.zeros((0, feats.shape[0]), np.float32), np.zeros(0, np.int64)
    pick = rng.choice(len(ys), size=min(n_pixels, len(ys)), replace=False)
    ys, xs = ys[pick], xs[pick]
    h, w = label.shape
    grid = torch.stack(
        [torch.from_numpy((xs + 0.5) / w * 2 - 1), torch.from_numpy((ys + 0.5) / h * 2 - 1)], -1
    )
    sampled = F.grid_sample(
        feats[None], grid[None, None].float(), mode="bilinear", padding_mode="border", align_corners=False
    )[0, :, 0]  # (C, n)
    return sampled.T.numpy(), label[ys, xs].astype(np.int64)


def upsampled_prediction(logits: torch.Tensor, size: tuple[int, int]) -> np.ndarray:
    """(K, h, w) logits -> (H, W) class indices after bilinear upsampling."""
    return F.interpolate(logits[None], size=size, mode="bilinear", align_corners=False)[0].argmax(0).numpy()


class ConvHead(torch.nn.Module):
    """BatchNorm + 1x1 convolution: the light head trained on frozen features."""

    def __init__(self, channels: int, num_classes: int) -> None:
        super().__init__()
        self.norm = torch.nn.BatchNorm2d(channels)
        self.classifier = torch.nn.Conv2d(channels, num_classes, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.norm(x))


def train_conv_head(
    feats: torch.Tensor,
    labels: list[np.ndarray],
    num_classes: int,
    epochs: int = 20,
    lr: float = 1e-3,
    batch_size: int = 8,
    seed: int = 0,
) -> ConvHead:
    """Adam on cross-entropy (ignore 255) of logits upsampled to each image's label resolution."""
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    head = ConvHead(feats.shape[1], num_classes)
    opt = torch.optim.Adam(head.parameters(), lr=lr)
    targets = [torch.from_numpy(lab.astype(np.int64)) for lab in labels]
    for _ in range(epochs):
        head.train()
        for batch in torch.randperm(len(feats), generator=gen).split(batch_size):
            logits = head(feats[batch])
            loss = sum(
                F.cross_entropy(
                    F.interpolate(
                        logits[j : j + 1], size=targets[i].shape, mode="bilinear", align_corners=False
                    ),
                    targets[i][None],
                    ignore_index=IGNORE_INDEX,
                    reduction="sum",
                )
                for j, i in enumerate(batch.tolist())
            ) / max(1, sum(int((targets[i] != IGNORE_INDEX).sum()) for i in batch.tolist()))
            opt.zero_grad()
            loss.backward()
            opt.step()
    return head.eval()


@dataclass
class SegmentationConfig:
    """Options of `vito-eval segment`."""

    encoder: str
    dataset: str
    out: Path | None = None
    head: Head = "linear"
    stage: int = 4
    output_stride: int | None = None
    image_size: int = 448
    pixels_per_image: int = 500
    probe_max_iter: int = 500
    epochs: int = 20
    lr: float = 1e-3
    train_limit: int | None = None
    val_limit: int | None = None
    l2_grid: tuple[float, ...] | None = None
    batch_size: int = 8
    device: str = "cpu"
    seed: int = 0
    n_visualise: int = 4
    precision: str = "auto"  # the encoder's forward: auto (bf16 on CUDA), fp32, bf16


def run_segmentation(
    config: SegmentationConfig,
    track: Callable[[Iterable, str], Iterable] | None = None,
    dense: DenseFn | None = None,
) -> dict[str, Any]:
    """Fit the head on the training split, score the validation split; writes JSON and PNGs to ``config.out``.

    ``dense`` replaces the encoder (tests pass oracle features); otherwise ``config.encoder`` is loaded.
    """
    if config.head not in ("linear", "conv"):
        raise SegmentationLayoutError(f"--head must be linear or conv, got {config.head!r}")
    ds = load_segmentation_dataset(config.dataset)
    train, val = ds.train[: config.train_limit], ds.val[: config.val_limit]
    if not train or not val:
        raise SegmentationLayoutError(f"the limits leave {len(train)} train / {len(val)} val images")
    encoder_name, precision = config.encoder or "custom", None
    if dense is None:
        from vito_eval.encoders import load_encoder

        encoder = load_encoder(config.encoder, device=config.device, precision=config.precision)
        encoder_name, precision = encoder.name, encoder.precision

        def dense(x: torch.Tensor) -> torch.Tensor:
            return encoder.dense(x, stage=config.stage, output_stride=config.output_stride)

    throughput = start_throughput(config.device, "images", measures="encoder forward, both splits")
    start = time.perf_counter()
    predict, feature_shape, extract_s = _fit_head(config, ds, train, dense, track, throughput)
    fit_s = time.perf_counter() - start - extract_s
    conf = np.zeros((ds.num_classes, ds.num_classes), dtype=np.int64)
    examples = []
    start = time.perf_counter()
    val_stream = iter_dense(
        dense, val, config.image_size, config.batch_size, track, f"{ds.name} val", throughput
    )
    for i, feats in val_stream:
        label = ds.read_label(val[i][1])
        pred = predict(feats, label.shape)
        conf += confusion_matrix(pred, label, ds.num_classes)
        if i < config.n_visualise:
            examples.append((val[i][0], label, pred))
    val_s = time.perf_counter() - start
    scores = scores_from_confusion(conf)
    result: dict[str, Any] = {
        "task": f"segmentation-{ds.name}",
        "encoder": encoder_name,
        "head": config.head,
        "stage": config.stage,
        "feature_shape": feature_shape,
        "train_images": len(train),
        "val_images": len(val),
        "miou": scores.miou,
        "pixel_accuracy": scores.pixel_accuracy,
        "per_class_iou": {
            n: (None if np.isnan(v) else float(v)) for n, v in zip(ds.class_names, scores.iou, strict=True)
        },
        "timing": {
            "train_extract_s": round(extract_s, 2),
            "fit_s": round(fit_s, 2),
            "val_s": round(val_s, 2),
        },
        "precision": precision,
        "throughput": throughput.report(),
        "config": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(config).items()},
    }
    if config.out is not None:
        _write_outputs(Path(config.out), ds, result, scores.iou, examples)
    return result


def _fit_head(
    config: SegmentationConfig,
    ds: SegmentationDataset,
    train: list[tuple[Path, Path]],
    dense: DenseFn,
    track: Callable[[Iterable, str], Iterable] | None,
    throughput: Throughput | None = None,
) -> tuple[Callable[[torch.Tensor, tuple[int, int]], np.ndarray], list[int], float]:
    """Extract training features and train the chosen head.

    Returns predict(features (C, h, w), label size) -> (H, W) classes, the feature shape and the seconds spent
    extracting. The linear head keeps only the sampled pixels of each image; the conv head keeps all maps.
    """
    start = time.perf_counter()
    stream = iter_dense(
        dense, train, config.image_size, config.batch_size, track, f"{ds.name} train", throughput
    )
    rng = np.random.default_rng(config.seed)
    kept: list[torch.Tensor] = []
    samples: list[tuple[np.ndarray, np.ndarray]] = []
    labels: list[np.ndarray] = []
    for i, feats in stream:
        label = ds.read_label(train[i][1])
        if config.head == "conv":
            kept.append(feats)
            labels.append(label)
        else:
            samples.append(sample_pixel_features(feats, label, config.pixels_per_image, rng))
    shape = list((kept[0] if kept else feats).shape)
    extract_s = time.perf_counter() - start
    if config.head == "conv":
        head = train_conv_head(
            torch.stack(kept),
            labels,
            ds.num_classes,
            config.epochs,
            config.lr,
            config.batch_size,
            config.seed,
        )

        def predict_conv(f: torch.Tensor, size: tuple[int, int]) -> np.ndarray:
            with torch.no_grad():
                return upsampled_prediction(head(f[None])[0], size)

        return predict_conv, shape, extract_s
    from vito_eval.linear_probe import DEFAULT_L2_GRID, fit_linear_probe

    x = np.concatenate([sx for sx, _ in samples])
    y = np.concatenate([sy for _, sy in samples])
    if len(y) == 0:
        raise SegmentationLayoutError("the training labels hold no labelled pixel (all 255)")
    probe = fit_linear_probe(
        x,
        y,
        ds.num_classes,
        config.l2_grid or DEFAULT_L2_GRID,
        seed=config.seed,
        max_iter=config.probe_max_iter,
    )

    def predict_linear(f: torch.Tensor, size: tuple[int, int]) -> np.ndarray:
        c, h, w = f.shape
        logits = probe.logits(f.reshape(c, -1).T.numpy()).T.reshape(-1, h, w)
        return upsampled_prediction(torch.from_numpy(logits).float(), size)

    return predict_linear, shape, extract_s


def _write_outputs(out: Path, ds: SegmentationDataset, result: dict, iou: np.ndarray, examples: list) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from videonet_curate.storage import atomic_write_json
    from vito_eval.datasets.davis import default_palette

    out.mkdir(parents=True, exist_ok=True)
    present = [i for i in range(len(iou)) if not np.isnan(iou[i])]
    fig, ax = plt.subplots(figsize=(max(4.0, 0.25 * len(present) + 2), 3.5))
    ax.bar(range(len(present)), [iou[i] for i in present], color="tab:green")
    ax.set_xticks(range(len(present)), [ds.class_names[i] for i in present], rotation=90, fontsize=7)
    ax.set_ylim(0, 1)
    ax.set_ylabel("IoU")
    ax.set_title(f"{ds.name} {result['head']} head: mIoU {result['miou']:.3f}")
    fig.tight_layout()
    fig.savefig(out / f"{ds.name}-per-class-iou.png", dpi=100)
    plt.close(fig)
    pal = np.array(default_palette(), dtype=np.uint8).reshape(-1, 3)
    for img, label, pred in examples:
        rgb = np.asarray(Image.open(img).convert("RGB"))
        panels = [
            rgb,
            pal[np.where(label == IGNORE_INDEX, 255, label + (ds.name == "ade20k"))],
            pal[pred + (ds.name == "ade20k")],
        ]
        Image.fromarray(np.concatenate(panels, axis=1)).save(out / f"{ds.name}-{img.stem}-image-gt-pred.png")
    atomic_write_json(out / f"segmentation-{ds.name}.json", result)
