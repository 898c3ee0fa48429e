"""Mask R-CNN with an FPN over an encoder's trunk, from torchvision's detection models.

The only VITO-specific part is which trunk feeds torchvision's `BackboneWithFPN`; everything else (RPN,
RoI heads, mask head, resizing and normalisation) is torchvision's `MaskRCNN`, configured the way
`torchvision.models.detection.maskrcnn_resnet50_fpn` builds it. Unlike torchvision's ImageNet-initialised
default (FrozenBatchNorm, conv1 + layer1 frozen), every stage trains and BatchNorm is trained, as the SSL
transfer literature fine-tunes (MoCo appendix A; mmselfsup's benchmark configs); under torchrun the BN
layers become SyncBatchNorm (see `vito_eval.detect.train`).
"""

from __future__ import annotations

import copy

import torch
from torch import nn
from torchvision.models.detection import MaskRCNN
from torchvision.models.detection.backbone_utils import BackboneWithFPN
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

from vito_eval.detect.config import Schedule
from vito_eval.encoders import Encoder
from vito_eval.errors import EncoderError

FPN_RETURN_LAYERS = {"layer1": "0", "layer2": "1", "layer3": "2", "layer4": "3"}


def fpn_in_channels(trunk: nn.Module) -> list[int]:
    """Output channels of layer1..4 of a torchvision ResNet (64..512 basic blocks, 256..2048 bottlenecks)."""
    channels = []
    for name in FPN_RETURN_LAYERS:
        block = getattr(trunk, name)[-1]
        channels.append((block.bn3 if hasattr(block, "bn3") else block.bn2).num_features)
    return channels


def trainable_trunk(encoder: Encoder) -> nn.Module:
    """A trainable copy of the encoder's ResNet (the Encoder itself stays frozen, as probes expect).

    Raises EncoderError for architectures without an FPN mapping (anything but torchvision-style ResNets).
    """
    if encoder.family != "resnet":
        raise EncoderError(
            f"{encoder.name}: detect has no FPN mapping for {encoder.family} architecture {encoder.arch!r}; "
            "use a ResNet trunk (a VITO run, random:resnet50, torchvision:resnet50:WEIGHTS, ...)"
        )
    trunk = copy.deepcopy(encoder.model)
    for p in trunk.parameters():
        p.requires_grad_(True)
    return trunk.train()


def build_mask_rcnn(
    encoder: Encoder,
    num_classes: int,
    schedule: Schedule,
    detections_per_image: int,
    score_threshold: float,
) -> MaskRCNN:
    """torchvision Mask R-CNN R-FPN for ``num_classes`` object classes (plus background) on the encoder's
    trunk, normalising inputs with the encoder's own mean/std."""
    trunk = trainable_trunk(encoder)
    backbone = BackboneWithFPN(
        trunk,
        return_layers=dict(FPN_RETURN_LAYERS),
        in_channels_list=fpn_in_channels(trunk),
        out_channels=schedule.fpn_channels,
        extra_blocks=LastLevelMaxPool(),
    )
    if schedule.test_size != schedule.train_sizes[-1]:
        # torchvision resizes test images to min_size[-1]; the schedules keep that equal to the test size
        raise ValueError(f"schedule {schedule.name}: test_size must be the last train size")
    c, k = schedule.fpn_channels, num_classes + 1
    # torchvision's own head and predictor classes, at the schedule's widths (the defaults for 1x/2x)
    heads = {
        "box_head": TwoMLPHead(c * 7 * 7, schedule.box_head_dim),
        "box_predictor": FastRCNNPredictor(schedule.box_head_dim, k),
        "mask_head": MaskRCNNHeads(c, [schedule.mask_head_channels] * 4, 1),
        "mask_predictor": MaskRCNNPredictor(schedule.mask_head_channels, schedule.mask_head_channels, k),
    }
    return MaskRCNN(
        backbone,
        num_classes=None,
        **heads,
        min_size=schedule.train_sizes,
        max_size=schedule.max_size,
        image_mean=list(encoder.mean),
        image_std=list(encoder.std),
        rpn_pre_nms_top_n_train=schedule.rpn_pre_nms_train,
        rpn_post_nms_top_n_train=schedule.rpn_post_nms_train,
        rpn_pre_nms_top_n_test=schedule.rpn_pre_nms_test,
        rpn_post_nms_top_n_test=schedule.rpn_post_nms_test,
        box_batch_size_per_image=schedule.rois_per_image,
        box_detections_per_img=detections_per_image,
        box_score_thresh=score_threshold,
    )


def norm_and_other_parameters(model: nn.Module) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """(normalisation-layer parameters, the rest): Detectron2 applies no weight decay to the former
    (SOLVER.WEIGHT_DECAY_NORM = 0)."""
    norm_types = (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.LayerNorm)
    norm, other = [], []
    for module in model.modules():
        for p in module.parameters(recurse=False):
            if p.requires_grad:
                (norm if isinstance(module, norm_types) else other).append(p)
    return norm, other
