"""The training configuration: one dataclass, YAML presets, ``key=value`` overrides.

Every hyper-parameter lives here and is configurable. Defaults follow the BYOL/MoCLR family
(online network with projector and predictor, EMA target, LARS, large batches) with the three VITO
changes: gentler crops, temporal views, multi-scale attention pooling. The VITO paper's own values
could not be read; the presets mark each default that is a choice rather than a fact.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

log = logging.getLogger(__name__)

ARCHS = ("resnet10", "resnet18", "resnet34", "resnet50", "resnet101")
OPTIMIZERS = ("lars", "sgd", "adamw")
POOLINGS = ("gap", "attention", "multiscale")


class ConfigError(ValueError):
    """A preset, file or override that does not describe a valid configuration."""


@dataclass
class TrainConfig:
    # model
    arch: str = "resnet50"
    pooling: str = "multiscale"  # gap | attention | multiscale (last two stages)
    attention_hidden: int = 512  # channels of the 1x1-conv head that scores positions
    projector_hidden: int = 4096  # BYOL/MoCLR projector: Linear-BN-ReLU-Linear
    projector_dim: int = 256
    predictor_hidden: int = 4096
    # data
    image_size: int = 224
    decode_short_side: int = 320  # frames are scaled so their short side is this before cropping
    crop_min_scale: float = 0.3  # VITO: gentler than the image-SSL 0.08 (value is our choice)
    frame_fps: float = 8.0  # video mode picks frames on this grid, as a frame cache at this fps holds them
    max_gap_s: float = 1.0  # temporal offset between the two views; 0 = both from one frame
    num_workers: int = 8
    decode_retries: int = 3  # other clips tried when one fails to decode
    max_undecodable_steps: int = 20  # consecutive steps without a decodable clip before exit 2
    photometric_augment: str = "auto"  # where colour/blur/solarize run: device (batched) | workers | auto
    blur_p_scale: float = 1.0  # times BYOL's blur probabilities (view 1: 1.0, view 2: 0.1); 0 = no blur
    # objective
    temperature: float = 0.1  # InfoNCE temperature (MoCLR/DetCon use 0.1)
    ema_base: float = 0.996  # BYOL: target decay starts here and follows a cosine to 1
    # optimisation
    optimizer: str = "lars"  # lars (BYOL, large batches) | sgd (momentum) | adamw; lr = base_lr * B / 256
    batch_size: int = 4096
    base_lr: float = 0.2  # BYOL LARS: lr = base_lr * batch_size / 256
    weight_decay: float = 1.5e-6
    momentum: float = 0.9
    lars_trust_coeff: float = 1e-3
    warmup_steps: int = 3000
    max_steps: int = 100_000  # also the length of the cosine schedules
    final_lr_ratio: float = 0.0
    grad_clip: float = 0.0  # max global grad norm; 0 disables
    # runtime
    device: str = "auto"  # auto | cpu | cuda
    precision: str = "bf16"  # bf16 | fp16 | fp32 (autocast applies on GPU only)
    channels_last: bool = True
    sync_bn: bool = False  # SyncBatchNorm across ranks (torchrun on GPUs); per-rank BN statistics otherwise
    compile: bool = False
    deterministic: bool = False
    torch_threads: int = 0  # intra-op threads of the training process; 0 = torch's default
    seed: int = 0
    log_every: int = 10
    ckpt_every: int = 1000  # numbered checkpoints; last.pt is refreshed every ckpt_last_every
    ckpt_last_every: int = 100
    stop_after: int = 0  # stop (as if interrupted) after this step; 0 = run to max_steps
    # online kNN monitor (vito-train run --monitor SPEC): kNN-20 top-1 of the online encoder
    # a measurement embeds bank + queries images: about (bank + queries) / (8 * batch_size) steps' compute
    monitor_every: int = 250  # steps between measurements (also one at step 0 and at the end)
    monitor_bank: int = 1000  # labelled training images (a fixed subset of the set's train split)
    monitor_queries: int = 500  # query images (a fixed subset of its test split)
    notes: dict[str, str] = field(default_factory=dict)

    def validate(self) -> TrainConfig:
        problems = _type_problems(self)
        if problems:  # the range checks below assume the right types
            raise ConfigError("invalid training config: " + "; ".join(problems))
        if self.arch not in ARCHS:
            problems.append(f"arch={self.arch!r} is not one of {ARCHS}")
        if self.pooling not in POOLINGS:
            problems.append(f"pooling={self.pooling!r} is not one of {POOLINGS}")
        if self.optimizer not in OPTIMIZERS:
            problems.append(f"optimizer={self.optimizer!r} is not one of {OPTIMIZERS}")
        if not 0 <= self.blur_p_scale <= 1:
            problems.append(f"blur_p_scale={self.blur_p_scale} must lie in [0, 1]")
        if not 0 < self.crop_min_scale <= 1:
            problems.append(f"crop_min_scale={self.crop_min_scale} must lie in (0, 1]")
        if not self.frame_fps > 0:
            problems.append(f"frame_fps={self.frame_fps} must be > 0")
        if self.max_gap_s < 0:
            problems.append(f"max_gap_s={self.max_gap_s} must be >= 0")
        if self.batch_size < 2:
            problems.append("batch_size must be >= 2 (InfoNCE needs negatives)")
        if not 0 <= self.ema_base <= 1:
            problems.append(f"ema_base={self.ema_base} must lie in [0, 1]")
        if self.temperature <= 0:
            problems.append("temperature must be > 0")
        if self.max_steps < 1 or self.warmup_steps < 0:
            problems.append("max_steps must be >= 1 and warmup_steps >= 0")
        # written as `not x > 0` so that nan fails too
        if not self.base_lr > 0 or self.base_lr == float("inf"):
            problems.append(f"base_lr={self.base_lr} must be a positive finite number")
        for key in ("weight_decay", "grad_clip", "lars_trust_coeff"):
            if not 0 <= getattr(self, key) < float("inf"):
                problems.append(f"{key}={getattr(self, key)} must be >= 0 and finite")
        if not 0 <= self.momentum < 1:
            problems.append(f"momentum={self.momentum} must lie in [0, 1)")
        if not 0 <= self.final_lr_ratio <= 1:
            problems.append(f"final_lr_ratio={self.final_lr_ratio} must lie in [0, 1]")
        for key in (
            "log_every",
            "ckpt_last_every",
            "image_size",
            "decode_short_side",
            "projector_dim",
            "max_undecodable_steps",
        ):
            if getattr(self, key) < 1:
                problems.append(f"{key}={getattr(self, key)} must be >= 1")
        for key in ("ckpt_every", "num_workers", "decode_retries", "stop_after", "torch_threads"):
            if getattr(self, key) < 0:
                problems.append(f"{key}={getattr(self, key)} must be >= 0")
        if self.monitor_every < 1 or self.monitor_bank < 1 or self.monitor_queries < 1:
            problems.append("monitor_every, monitor_bank and monitor_queries must be >= 1")
        if self.photometric_augment not in ("auto", "device", "workers"):
            problems.append(
                f"photometric_augment={self.photometric_augment!r} is not auto, device or workers"
            )
        if self.precision not in ("bf16", "fp16", "fp32"):
            problems.append(f"precision={self.precision!r} is not bf16, fp16 or fp32")
        if self.device not in ("auto", "cpu", "cuda") and not self.device.startswith("cuda:"):
            problems.append(f"device={self.device!r} is not auto, cpu or cuda[:N]")
        if problems:
            raise ConfigError("invalid training config: " + "; ".join(problems))
        return self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _type_problems(config: TrainConfig) -> list[str]:
    """Keys whose value has the wrong type (a YAML file can hold anything)."""
    problems = []
    for f in dataclasses.fields(config):
        value, default = getattr(config, f.name), getattr(TrainConfig(), f.name)
        if isinstance(default, bool):
            ok = isinstance(value, bool)
        elif isinstance(default, int):
            ok = isinstance(value, int) and not isinstance(value, bool)
        elif isinstance(default, float):
            ok = isinstance(value, int | float) and not isinstance(value, bool)
        else:
            ok = isinstance(value, type(default))
        if not ok:
            problems.append(f"{f.name}={value!r} should be of type {type(default).__name__}")
    return problems


def preset_names() -> list[str]:
    files = resources.files("vito_train") / "presets"
    return sorted(p.name.removesuffix(".yaml") for p in files.iterdir() if p.name.endswith(".yaml"))


def _load_yaml(text: str, origin: str) -> dict[str, Any]:
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or type(exc).__name__
        raise ConfigError(f"{origin} is not valid YAML{where}: {problem}; fix the file") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{origin} must hold a mapping of config keys, got {type(data).__name__}")
    return data


def _number_from_text(value: str) -> Any:
    """``"1e-3"`` -> 0.001, ``"1e3"`` -> 1000: YAML 1.1 reads exponents without a dot as strings."""
    try:
        number = float(value)
    except ValueError:
        return value
    return int(number) if number.is_integer() and abs(number) < 2**53 else number


def _numbers_from_text(values: dict[str, Any]) -> dict[str, Any]:
    defaults = TrainConfig().to_dict()
    numeric = {k for k, v in defaults.items() if isinstance(v, int | float) and not isinstance(v, bool)}
    return {k: _number_from_text(v) if k in numeric and isinstance(v, str) else v for k, v in values.items()}


def _read_preset(name_or_file: str | Path) -> dict[str, Any]:
    path = Path(name_or_file)
    if path.suffix in (".yaml", ".yml") or path.exists():
        if not path.is_file():
            raise ConfigError(f"preset file {path} does not exist")
        try:
            return _load_yaml(path.read_bytes().decode("utf-8"), f"preset file {path}")
        except UnicodeDecodeError as exc:
            raise ConfigError(
                f"preset file {path} is not UTF-8 text ({exc.reason}); save it as UTF-8"
            ) from None
        except OSError as exc:
            raise ConfigError(f"cannot read preset file {path}: {exc.strerror}") from None
    resource = resources.files("vito_train") / "presets" / f"{name_or_file}.yaml"
    if not resource.is_file():
        raise ConfigError(
            f"unknown preset {name_or_file!r}; bundled presets: {preset_names()} (or a .yaml file)"
        )
    return _load_yaml(resource.read_text(), f"preset {name_or_file}")


def load_preset(name_or_file: str | Path, _seen: tuple[str, ...] = ()) -> dict[str, Any]:
    """The raw mapping of a bundled preset name (e.g. ``cpu-smoke``) or a YAML file.

    ``extends: NAME`` in a preset starts from that preset's mapping (itself resolved the same way) and
    replaces the keys it sets, so an ablation cell states only what it changes. ``notes`` is replaced
    whole, not merged: a cell's description is never inherited from its base.
    """
    if str(name_or_file) in _seen:
        raise ConfigError(f"preset {name_or_file!r} extends itself (chain: {' -> '.join(_seen)})")
    values = _read_preset(name_or_file)
    base = values.pop("extends", None)
    if base is None:
        return values
    if not isinstance(base, str):
        raise ConfigError(f"preset {name_or_file}: extends must name one preset, got {base!r}")
    return {**load_preset(base, (*_seen, str(name_or_file))), **values}


def preset_cell(name_or_file: str | Path) -> str:
    """Which configuration (or cell of the paper's ablation grid) a preset is: its ``notes.cell``."""
    notes = load_preset(name_or_file).get("notes") or {}
    return str(notes.get("cell", "")) if isinstance(notes, dict) else ""


def _coerce(key: str, raw: str, current: Any) -> Any:
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError:
        value = raw
    if isinstance(value, str) and isinstance(current, int | float) and not isinstance(current, bool):
        value = _number_from_text(value)  # 1e-3: YAML 1.1 wants a dot, users do not
    if isinstance(current, bool):
        if not isinstance(value, bool):
            raise ConfigError(f"--set {key}={raw}: expected true or false")
        return value
    if isinstance(current, int) and not isinstance(current, bool):
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if not isinstance(value, int):
            raise ConfigError(f"--set {key}={raw}: expected an integer")
        return value
    if isinstance(current, float):
        if not isinstance(value, int | float):
            raise ConfigError(f"--set {key}={raw}: expected a number")
        return float(value)
    if isinstance(current, str):
        return str(value) if value is not None else raw
    return value


def apply_overrides(values: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``key=value`` strings (YAML-typed) on top of ``values``."""
    defaults = TrainConfig().to_dict()
    merged = dict(values)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set expects key=value, got {item!r}")
        key, raw = item.split("=", 1)
        key = key.strip()
        if key not in defaults:
            raise ConfigError(f"--set {key}: not a config key; known keys: {sorted(defaults)}")
        merged[key] = _coerce(key, raw.strip(), defaults[key])
    return merged


def from_dict(values: dict[str, Any]) -> TrainConfig:
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(f"unknown config keys {unknown}; known keys: {sorted(known)}")
    return TrainConfig(**_numbers_from_text(values)).validate()


def resolve_config(preset: str | Path | None = None, overrides: list[str] | None = None) -> TrainConfig:
    """Defaults <- preset (name or file) <- ``key=value`` overrides, validated."""
    values = load_preset(preset) if preset else {}
    merged = apply_overrides(values, overrides or [])
    try:
        return from_dict(merged)
    except ConfigError as exc:  # name where the values came from
        origin = " with ".join(
            part
            for part in (
                f"preset {preset}" if preset else "",
                " ".join(f"--set {o}" for o in overrides or []),
            )
            if part
        )
        raise ConfigError(f"{origin}: {exc}" if origin else str(exc)) from None


def save_config(config: TrainConfig, path: Path) -> None:
    from videonet_curate.storage import atomic_write_bytes

    atomic_write_bytes(path, yaml.safe_dump(config.to_dict(), sort_keys=False).encode())
