"""A torchvision ResNet that returns the feature maps of its last two stages.

The ResNet is kept whole (as ``self.resnet``, fc replaced by Identity) so its state-dict keys are
torchvision's under a ``resnet.`` prefix: export strips the prefix and torchvision loads the rest.
"""

from __future__ import annotations

import torch
import torchvision
from torch import nn
from torchvision.models.resnet import BasicBlock, ResNet

STAGE_CHANNELS = {
    "resnet10": (256, 512),
    "resnet18": (256, 512),
    "resnet34": (256, 512),
    "resnet50": (1024, 2048),
    "resnet101": (1024, 2048),
}


# Built from torchvision's own ResNet class (same modules, state-dict keys and initialisation) but
# not among torchvision's named models: ResNet-10 is ResNet-18 with one BasicBlock per stage instead
# of two (as in timm's resnet10t and solo-learn's small backbones), about half the compute, for
# short CPU budgets where the number of epochs matters more than depth.
EXTRA_ARCHS = {"resnet10": (BasicBlock, [1, 1, 1, 1])}


def build_resnet(arch: str) -> nn.Module:
    """A randomly initialised torchvision ResNet with ``fc`` replaced by Identity."""
    if arch not in STAGE_CHANNELS:
        raise ValueError(f"unsupported arch {arch!r}; expected one of {sorted(STAGE_CHANNELS)}")
    if arch in EXTRA_ARCHS:
        block, layers = EXTRA_ARCHS[arch]
        resnet = ResNet(block, layers)
    else:
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
