"""A torchvision ResNet that returns the feature maps of its last two stages.

The ResNet is kept whole (as ``self.resnet``, fc replaced by Identity) so its state-dict keys are
torchvision's under a ``resnet.`` prefix: export strips the prefix and torchvision loads the rest.
"""

from __future__ import annotations

import torch
import torchvision
from torch import nn

STAGE_CHANNELS = {
    "resnet18": (256, 512),
    "resnet34": (256, 512),
    "resnet50": (1024, 2048),
    "resnet101": (1024, 2048),
}


def build_resnet(arch: str) -> nn.Module:
    """A randomly initialised torchvision ResNet with ``fc`` replaced by Identity."""
    if arch not in STAGE_CHANNELS:
        raise ValueError(f"unsupported arch {arch!r}; expected one of {sorted(STAGE_CHANNELS)}")
    resnet = getattr(torchvision.models, arch)(weights=None)
    resnet.fc = nn.Identity()
    return resnet


class ResNetTrunk(nn.Module):
    """Images -> (stage-3 map, stage-4 map), i.e. strides 16 and 32."""

    def __init__(self, arch: str) -> None:
        super().__init__()
        self.arch = arch
        self.resnet = build_resnet(arch)
        self.stage_channels = STAGE_CHANNELS[arch]

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        r = self.resnet
        x = r.maxpool(r.relu(r.bn1(r.conv1(images))))
        stage3 = r.layer3(r.layer2(r.layer1(x)))
        return stage3, r.layer4(stage3)
