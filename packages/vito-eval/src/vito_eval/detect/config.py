"""Fine-tuning schedules for Mask R-CNN R50-FPN transfer, and the run configuration.

Provenance of each value (the VITO paper does not publish its detection settings, so none of these is
"the paper's"): every 1x/2x value is the community protocol of the SSL transfer literature, i.e.
Detectron2's ``mask_rcnn_R_50_FPN_1x`` recipe as MoCo (He et al. 2020, appendix A) and mmselfsup's
``mask-rcnn_r50-fpn_4xb4-1x_coco`` benchmark config use it, with every backbone stage trainable and
(Sync)BN trained instead of frozen. ``smoke`` is ours: a CPU-sized schedule for the synthetic shapes
fixture, not a protocol anyone reports.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

COMMUNITY = "community protocol (Detectron2 mask_rcnn_R_50_FPN_1x as used by MoCo / mmselfsup)"
OURS = "vito-eval smoke schedule (synthetic fixture only)"


@dataclass(frozen=True)
class Schedule:
    """Optimisation and input sizes; learning rate is for ``reference_batch`` images per step and is
    scaled linearly to the actual total batch (Goyal et al. 2017)."""

    name: str
    epochs: int
    lr_steps: tuple[float, ...]  # epochs at which the LR drops 10x
    base_lr: float
    reference_batch: int
    batch_size: int  # total over all processes
    warmup_iters: int
    warmup_factor: float
    momentum: float
    weight_decay: float
    train_sizes: tuple[int, ...]  # shorter side, one drawn per image (multi-scale training)
    test_size: int
    max_size: int
    detections_per_image: int  # COCO 100; LVIS overrides to 300
    rpn_pre_nms_train: int = 2000
    rpn_post_nms_train: int = 2000
    rpn_pre_nms_test: int = 1000
    rpn_post_nms_test: int = 1000
    rois_per_image: int = 512
    fpn_channels: int = 256
    mask_head_channels: int = 256  # torchvision's MaskRCNNHeads: 4 x conv3x3
    box_head_dim: int = 1024  # torchvision's TwoMLPHead
    clip_grad_norm: float | None = None  # Detectron2 default: no clipping
    provenance: str = COMMUNITY

    def lr(self, batch_size: int) -> float:
        return self.base_lr * batch_size / self.reference_batch


SCHEDULE_1X = Schedule(
    name="1x",
    epochs=12,  # 90k iterations at batch 16 on COCO train2017
    lr_steps=(8.0, 11.0),
    base_lr=0.02,
    reference_batch=16,
    batch_size=16,
    warmup_iters=1000,
    warmup_factor=0.001,
    momentum=0.9,
    weight_decay=1e-4,
    train_sizes=(640, 672, 704, 736, 768, 800),
    test_size=800,
    max_size=1333,
    detections_per_image=100,
)
SCHEDULE_2X = Schedule(**{**SCHEDULE_1X.__dict__, "name": "2x", "epochs": 24, "lr_steps": (16.0, 22.0)})
SCHEDULE_SMOKE = Schedule(
    name="smoke",
    epochs=14,
    lr_steps=(11.0, 13.0),
    base_lr=0.04,
    reference_batch=4,
    batch_size=4,
    warmup_iters=20,
    warmup_factor=0.01,
    momentum=0.9,
    weight_decay=1e-4,
    train_sizes=(96, 112, 128),
    test_size=128,
    max_size=256,
    detections_per_image=100,
    rpn_pre_nms_train=300,
    rpn_post_nms_train=150,
    rpn_pre_nms_test=300,
    rpn_post_nms_test=100,
    rois_per_image=64,
    # thinner FPN/heads (same torchvision modules) so a CPU run learns in about a minute, and clipping
    # because a randomly initialised trunk at a high LR otherwise diverges within the warmup
    fpn_channels=64,
    mask_head_channels=64,
    box_head_dim=256,
    clip_grad_norm=5.0,
    provenance=OURS,
)
SCHEDULES = {s.name: s for s in (SCHEDULE_1X, SCHEDULE_2X, SCHEDULE_SMOKE)}

# LVIS v1 additions (Gupta et al. 2019; Detectron2's LVISv1 configs): repeat-factor sampling and 300
# detections per image with a 1e-4 score threshold, so rare categories have a chance to appear.
LVIS_REPEAT_THRESHOLD = 0.001
LVIS_DETECTIONS_PER_IMAGE = 300
LVIS_SCORE_THRESHOLD = 0.0001
COCO_SCORE_THRESHOLD = 0.05


@dataclass
class DetectConfig:
    """One ``vito-eval detect`` run."""

    encoder: str
    dataset: str
    out: Path
    schedule: str = "1x"
    batch_size: int | None = None  # total over processes; None: the schedule's
    epochs: int | None = None  # None: the schedule's (lr steps scale with it)
    lr: float | None = None  # None: the schedule's base LR scaled linearly to the batch size
    workers: int = 2
    device: str = "auto"  # auto: cuda when available
    checkpoint_every: int = 500  # iterations
    max_iters: int | None = None  # stop (with a checkpoint) after this many iterations: for tests/debugging
    eval_limit: int | None = None  # only the first N val images
    seed: int = 0
    progress: bool = True
    extra: dict = field(default_factory=dict)
