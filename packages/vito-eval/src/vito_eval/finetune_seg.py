"""``vito-eval finetune-seg``: end-to-end fine-tuning of an encoder with an FCN head (VOC-aug, ADE20K).

Recipe: mmsegmentation's FCN R50-D8 512x512 schedules (``configs/fcn/fcn_r50-d8_4xb4-20k_voc12aug-512x512.py``
and ``fcn_r50-d8_4xb4-80k_ade20k-512x512.py``): dilated ResNet at output stride 8, SGD lr 0.01, momentum
0.9, weight decay 5e-4, poly decay (power 0.9, min lr 1e-4) per iteration, batch 16, 20k (VOC-aug) / 80k
(ADE20K) iterations, random rescale of a (2048, 512) scale by 0.5-2.0, 512x512 random crop, flip,
photometric jitter, auxiliary FCN head on stage 3 with loss weight 0.4; test: resize to (2048, 512)
keeping the aspect ratio, whole-image inference, optional flip. Deviations, all stated in the results:
the head is torchvision's ``FCNHead`` (one 3x3 conv to C/4 channels) rather than mmseg's two 512-channel
convs with input concat, the trunk keeps torchvision's ResNet stem (v1b, not mmseg's deep v1c stem), and
the photometric jitter is torchvision's ColorJitter with mmseg's ranges. ``smoke`` is a CPU schedule for
the shapes fixture only.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from torchvision.models._utils import IntermediateLayerGetter
from torchvision.models.segmentation.fcn import FCN, FCNHead
from torchvision.transforms import v2

from videonet_curate.storage import atomic_write_text
from vito_eval.datasets import load_segmentation_dataset
from vito_eval.datasets.segmentation import SegmentationDataset
from vito_eval.encoders import Encoder, load_encoder
from vito_eval.errors import EncoderError, EvalInputError
from vito_eval.seg_metrics import IGNORE_INDEX, confusion_matrix, scores_from_confusion

log = logging.getLogger(__name__)
Track = Callable[[Iterable, str], Iterable]
RECIPE = "mmsegmentation FCN R50-D8 512x512 (voc12aug 20k / ade20k 80k)"


@dataclass(frozen=True)
class SegSchedule:
    name: str
    iterations: int
    batch_size: int
    lr: float
    min_lr: float
    power: float
    momentum: float
    weight_decay: float
    scale: tuple[int, int]  # (long, short) bound of the base rescale, as mmseg's img_scale
    ratio_range: tuple[float, float]
    crop: int
    aux_weight: float
    provenance: str


def mmseg_schedule(name: str, iterations: int) -> SegSchedule:
    return SegSchedule(
        name, iterations, 16, 0.01, 1e-4, 0.9, 0.9, 5e-4, (2048, 512), (0.5, 2.0), 512, 0.4, RECIPE
    )


SEG_SCHEDULES = {
    "voc-20k": mmseg_schedule("voc-20k", 20_000),
    "ade20k-80k": mmseg_schedule("ade20k-80k", 80_000),
    "smoke": SegSchedule(  # a CPU schedule for the shapes fixture
        "smoke",
        150,
        8,
        0.05,
        1e-4,
        0.9,
        0.9,
        5e-4,
        (512, 128),
        (0.75, 1.25),
        96,
        0.4,
        "vito-eval smoke schedule (synthetic fixture only)",
    ),
}
DEFAULT_SCHEDULE = {"voc": "voc-20k", "ade20k": "ade20k-80k"}


class FinetuneSegError(EvalInputError):
    """Options of finetune-seg that cannot work."""


@dataclass
class FinetuneSegConfig:
    encoder: str
    dataset: str
    out: Path
    schedule: str | None = None  # None: the dataset's mmseg schedule
    output_stride: int = 8
    iterations: int | None = None  # None: the schedule's (the poly decay follows the actual length)
    flip_test: bool = False
    device: str = "auto"
    workers: int = 2
    seed: int = 0
    progress: bool = True


def dilate_resnet(model: nn.Module, output_stride: int) -> nn.Module:
    """A copy of a torchvision ResNet with the strides of layer3/layer4 (OS 8) or layer4 (OS 16) replaced
    by dilation, as `torchvision.models.resnet(replace_stride_with_dilation=...)` builds it (first block of
    a dilated stage keeps the previous dilation); works for basic blocks too, which torchvision refuses."""
    plan = {8: {"layer3": 2, "layer4": 4}, 16: {"layer4": 2}}
    if output_stride not in plan:
        raise FinetuneSegError(f"--output-stride {output_stride}: choose 8 or 16")
    model = copy.deepcopy(model)
    previous = 1
    for name in ("layer3", "layer4"):
        dilation = plan[output_stride].get(name)
        if dilation is None:
            continue
        for i, block in enumerate(getattr(model, name)):
            d = previous if i == 0 else dilation
            conv = block.conv2 if hasattr(block, "conv3") else block.conv1
            conv.stride = (1, 1)
            for c in (block.conv2,) if hasattr(block, "conv3") else (block.conv1, block.conv2):
                c.dilation, c.padding = (d, d), (d, d)
            if block.downsample is not None:
                block.downsample[0].stride = (1, 1)
        previous = dilation
    return model


def build_fcn(encoder: Encoder, num_classes: int, output_stride: int) -> FCN:
    """torchvision's FCN (main head on layer4, auxiliary head on layer3) over a dilated, trainable trunk."""
    if encoder.family != "resnet":
        raise EncoderError(
            f"{encoder.name}: finetune-seg needs a ResNet trunk to dilate, not {encoder.family} {encoder.arch!r}"
        )
    trunk = dilate_resnet(encoder.model, output_stride)
    for p in trunk.parameters():
        p.requires_grad_(True)
    last3, last4 = trunk.layer3[-1], trunk.layer4[-1]
    c3 = (last3.bn3 if hasattr(last3, "bn3") else last3.bn2).num_features
    c4 = (last4.bn3 if hasattr(last4, "bn3") else last4.bn2).num_features
    backbone = IntermediateLayerGetter(trunk, return_layers={"layer3": "aux", "layer4": "out"})
    return FCN(backbone, FCNHead(c4, num_classes), FCNHead(c3, num_classes)).train()


class SegTrainSet(torch.utils.data.Dataset):
    """mmseg's training pipeline: random rescale, crop (padded with ignore), flip, photometric jitter."""

    def __init__(self, ds: SegmentationDataset, schedule: SegSchedule) -> None:
        self.ds, self.s = ds, schedule
        self.jitter = v2.ColorJitter(brightness=32 / 255, contrast=0.5, saturation=0.5, hue=18 / 360)

    def __len__(self) -> int:
        return len(self.ds.train)

    def __getitem__(self, key: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        index, sample_seed = key
        rng = np.random.default_rng(sample_seed)
        image_path, label_path = self.ds.train[index]
        with Image.open(image_path) as im:
            image = im.convert("RGB")
        label = Image.fromarray(self.ds.read_label(label_path))
        w, h = image.size
        long_bound, short_bound = self.s.scale
        base = min(long_bound / max(w, h), short_bound / min(w, h))
        factor = base * rng.uniform(*self.s.ratio_range)
        size = (max(1, round(w * factor)), max(1, round(h * factor)))
        image, label = image.resize(size, Image.BILINEAR), label.resize(size, Image.NEAREST)
        img = torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1)
        lab = torch.from_numpy(np.asarray(label).astype(np.int64))
        crop = self.s.crop
        pad_h, pad_w = max(0, crop - lab.shape[0]), max(0, crop - lab.shape[1])
        img = F.pad(img, (0, pad_w, 0, pad_h), value=0)
        lab = F.pad(lab, (0, pad_w, 0, pad_h), value=IGNORE_INDEX)
        y = int(rng.integers(0, lab.shape[0] - crop + 1))
        x = int(rng.integers(0, lab.shape[1] - crop + 1))
        img, lab = img[:, y : y + crop, x : x + crop], lab[y : y + crop, x : x + crop]
        if rng.random() < 0.5:
            img, lab = img.flip(-1), lab.flip(-1)
        torch.manual_seed(int(rng.integers(2**31)))
        return self.jitter(img), lab


def poly_lr(iteration: int, s: SegSchedule) -> float:
    """mmseg's PolyLR: (lr - min_lr) * (1 - t/T)^power + min_lr."""
    return (s.lr - s.min_lr) * (1 - iteration / s.iterations) ** s.power + s.min_lr


def test_size(w: int, h: int, scale: tuple[int, int]) -> tuple[int, int]:
    """mmseg's keep-ratio Resize to ``scale`` = (long, short) bounds."""
    factor = min(scale[0] / max(w, h), scale[1] / min(w, h))
    return max(1, round(w * factor)), max(1, round(h * factor))


@torch.inference_mode()
def predict_label(
    model: nn.Module,
    image: Image.Image,
    encoder: Encoder,
    scale: tuple[int, int],
    flip: bool,
    device: torch.device,
) -> np.ndarray:
    """Whole-image inference at the test scale, logits resized to the original size, argmax."""
    w, h = image.size
    x = torch.from_numpy(np.asarray(image.resize(test_size(w, h, scale), Image.BILINEAR)).copy())
    x = _normalize(x.permute(2, 0, 1)[None].to(device), encoder)
    probs = model(x)["out"].softmax(1)
    if flip:
        probs = probs + model(x.flip(-1))["out"].softmax(1).flip(-1)
    probs = F.interpolate(probs, size=(h, w), mode="bilinear", align_corners=False)
    return probs.argmax(1)[0].cpu().numpy().astype(np.uint8)


def _normalize(x: torch.Tensor, encoder: Encoder) -> torch.Tensor:
    mean = torch.tensor(encoder.mean, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(encoder.std, device=x.device).view(1, 3, 1, 1)
    return (x.float() / 255.0 - mean) / std


def with_voc_aug(ds: SegmentationDataset) -> SegmentationDataset:
    """VOC-aug training set when present, in mmsegmentation's layout (tools/dataset_converters/voc_aug.py):
    ``SegmentationClassAug/*.png`` with ``ImageSets/Segmentation/aug.txt`` (or ``train_aug.txt``), added to
    the VOC2012 train list as mmseg's voc12aug config concatenates them (10,582 images); val is untouched."""
    sets, aug_dir = ds.root / "ImageSets" / "Segmentation", ds.root / "SegmentationClassAug"
    listing = next((p for p in (sets / "aug.txt", sets / "train_aug.txt") if p.is_file()), None)
    if ds.name != "voc" or listing is None or not aug_dir.is_dir():
        return ds
    have = {img.stem for img, _ in ds.train}
    val = {img.stem for img, _ in ds.val}
    ids = [i.strip() for i in listing.read_text().splitlines() if i.strip() and i.strip() not in have | val]
    extra = [(ds.root / "JPEGImages" / f"{i}.jpg", aug_dir / f"{i}.png") for i in ids]
    missing = [p for pair in extra for p in pair if not p.is_file()]
    if missing:
        raise FinetuneSegError(
            f"voc:{ds.root}: {len(missing)} files listed in {listing.name} are missing, e.g. {missing[0]}"
        )
    log.info("VOC-aug: %d train images (%d from %s)", len(ds.train) + len(extra), len(extra), listing.name)
    return dataclasses.replace(ds, train=ds.train + extra)


def run_finetune_seg(config: FinetuneSegConfig, track: Track | None = None) -> dict[str, Any]:
    """Fine-tune, evaluate on val (mIoU, per-class IoU), write metrics.json / per_class_iou.csv."""
    ds = with_voc_aug(load_segmentation_dataset(config.dataset))
    name = config.schedule or DEFAULT_SCHEDULE[ds.name]
    if name not in SEG_SCHEDULES:
        raise FinetuneSegError(f"--schedule {name!r}: choose one of {', '.join(SEG_SCHEDULES)}")
    s = SEG_SCHEDULES[name]
    if config.iterations:
        s = dataclasses.replace(s, iterations=config.iterations)
    encoder = load_encoder(config.encoder)
    torch.manual_seed(config.seed)
    model = build_fcn(encoder, ds.num_classes, config.output_stride)
    out = Path(config.out)
    if out.exists() and any(out.iterdir()):
        raise FinetuneSegError(f"--out {out} is not empty: choose a new folder")
    device = torch.device(
        ("cuda" if torch.cuda.is_available() else "cpu") if config.device == "auto" else config.device
    )
    model.to(device)
    out.mkdir(parents=True, exist_ok=True)

    decay, no_decay = [], []
    for module in model.modules():
        for p in module.parameters(recurse=False):
            (no_decay if isinstance(module, nn.modules.batchnorm._BatchNorm) else decay).append(p)
    optimizer = torch.optim.SGD(
        [{"params": decay, "weight_decay": s.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=s.lr,
        momentum=s.momentum,
    )
    rng = np.random.default_rng(config.seed)
    keys = [
        [(int(rng.integers(len(ds.train))), int(rng.integers(2**62))) for _ in range(s.batch_size)]
        for _ in range(s.iterations)
    ]  # the whole sample order up front: a pure function of the seed
    loader = torch.utils.data.DataLoader(SegTrainSet(ds, s), batch_sampler=keys, num_workers=config.workers)
    autocast_dtype = torch.bfloat16 if device.type == "cuda" else None
    t0 = time.perf_counter()
    model.train()
    log_rows = []
    it_loader = track(loader, f"finetune-seg {s.name}") if (track and config.progress) else loader
    for iteration, (images, labels) in enumerate(it_loader):
        lr = poly_lr(iteration, s)
        for group in optimizer.param_groups:
            group["lr"] = lr
        x, y = _normalize(images.to(device), encoder), labels.to(device)
        with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
            outputs = model(x)
            loss = F.cross_entropy(outputs["out"].float(), y, ignore_index=IGNORE_INDEX)
            loss = loss + s.aux_weight * F.cross_entropy(outputs["aux"].float(), y, ignore_index=IGNORE_INDEX)
        if not math.isfinite(float(loss.detach())):
            raise FloatingPointError(f"loss is {float(loss)} at iteration {iteration}: lower the LR")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if (iteration + 1) % 10 == 0 or iteration + 1 == s.iterations:
            log_rows.append(
                {
                    "iteration": iteration + 1,
                    "lr": lr,
                    "loss": float(loss.detach()),
                    "seconds": round(time.perf_counter() - t0, 1),
                }
            )
    (out / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in log_rows))
    train_seconds = time.perf_counter() - t0

    model.eval()
    conf = np.zeros((ds.num_classes, ds.num_classes), dtype=np.int64)
    pairs = track(ds.val, "evaluating") if (track and config.progress) else ds.val
    for image_path, label_path in pairs:
        with Image.open(image_path) as im:
            pred = predict_label(model, im.convert("RGB"), encoder, s.scale, config.flip_test, device)
        conf += confusion_matrix(pred, ds.read_label(label_path), ds.num_classes)
    scores = scores_from_confusion(conf)
    per_class = {
        c: (None if np.isnan(v) else round(100 * float(v), 4)) for c, v in zip(ds.class_names, scores.iou)
    }
    result = {
        "task": f"finetune-seg {ds.name}",
        "miou": round(100 * scores.miou, 4),
        "pixel_accuracy": round(100 * scores.pixel_accuracy, 4),
        "per_class_iou": per_class,
        "encoder": config.encoder,
        "dataset": config.dataset,
        "schedule": asdict(s),
        "output_stride": config.output_stride,
        "flip_test": config.flip_test,
        "train_images": len(ds.train),
        "val_images": len(ds.val),
        "train_seconds": round(train_seconds, 1),
        "device": str(device),
    }
    atomic_write_text(out / "metrics.json", json.dumps(result, indent=2))
    rows = "".join(f"{c},{'' if v is None else f'{v:.4f}'}\n" for c, v in per_class.items())
    atomic_write_text(out / "per_class_iou.csv", "class,iou\n" + rows)
    return result
