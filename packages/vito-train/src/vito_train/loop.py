"""The VITO training loop, top-down: config, data, model, optimiser, resume, loop, checkpoint.

One machine, one process. Every piece it calls lives in its own module; issue 8 (DDP, frame
cache, batched augmentation) replaces pieces, not this outline.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from vito_train.checkpoint import (
    LAST,
    load_checkpoint,
    restore_rng_state,
    rng_state,
    save_checkpoint,
    step_checkpoint_name,
)
from vito_train.config import ConfigError, TrainConfig, from_dict, save_config
from vito_train.data.augment import normalize_on_device
from vito_train.data.dataset import FramePairDataset, collate_pairs
from vito_train.data.pairs import StepBatchSampler, load_clips
from vito_train.ema import ema_decay, ema_update_
from vito_train.loss import symmetric_multiscale_loss
from vito_train.metrics import MetricsLog, plot_loss_curve
from vito_train.model import OnlineNetwork, VitoEncoder, build_online
from vito_train.optim import build_lars, learning_rate, set_learning_rate

log = logging.getLogger(__name__)

# Keys whose change makes a resumed run a different run (model, data stream, batch).
RESUME_FIXED_KEYS = ("arch", "pooling", "attention_hidden", "projector_hidden", "projector_dim",
                     "predictor_hidden", "image_size", "decode_short_side", "crop_min_scale", "max_gap_s",
                     "batch_size", "seed")


class NonFiniteLossError(FloatingPointError):
    """The loss became NaN or infinite; the last good checkpoint is left as it was."""


@dataclass
class TrainState:
    config: TrainConfig
    device: torch.device
    online: OnlineNetwork
    target: VitoEncoder
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    step: int = 0  # optimiser steps completed; the data position is step * batch_size
    failed_clips: int = 0
    online_forward: nn.Module | None = None  # compiled wrappers, when config.compile
    target_forward: nn.Module | None = None

    def autocast(self) -> torch.autocast:
        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.config.precision)
        enabled = self.device.type == "cuda" and dtype is not None
        return torch.autocast(self.device.type, dtype=dtype or torch.bfloat16, enabled=enabled)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device={name} but CUDA is not available; use --set device=cpu")
    return torch.device(name)


def build_state(config: TrainConfig, device: torch.device) -> TrainState:
    """Fresh online and target networks (target = copy of the online encoder), LARS, scaler."""
    torch.manual_seed(config.seed)
    online = build_online(config).to(device)
    if device.type == "cuda" and config.channels_last:
        online = online.to(memory_format=torch.channels_last)
    target = copy.deepcopy(online.encoder)
    target.requires_grad_(False)
    optimizer = build_lars(online, weight_decay=config.weight_decay, momentum=config.momentum,
                           trust_coeff=config.lars_trust_coeff)
    scaler = torch.amp.GradScaler(device.type, enabled=device.type == "cuda" and config.precision == "fp16")
    state = TrainState(config, device, online, target, optimizer, scaler)
    state.online_forward, state.target_forward = online, target
    if config.compile:
        state.online_forward, state.target_forward = torch.compile(online), torch.compile(target)
    return state


def train_step(state: TrainState, views_1: torch.Tensor, views_2: torch.Tensor) -> torch.Tensor:
    """One optimiser step on a batch of uint8 view pairs; returns the loss (a 0-d tensor).

    Raises NonFiniteLossError before touching the weights when the loss is NaN or infinite.
    """
    cfg, device = state.config, state.device
    memory_format = torch.channels_last if device.type == "cuda" and cfg.channels_last else torch.contiguous_format
    images = torch.cat([views_1, views_2]).to(device, non_blocking=True)
    images = normalize_on_device(images).contiguous(memory_format=memory_format)
    n = views_1.shape[0]
    lr = learning_rate(state.step, base_lr=cfg.base_lr, batch_size=cfg.batch_size, warmup_steps=cfg.warmup_steps,
                       total_steps=cfg.max_steps, final_ratio=cfg.final_lr_ratio)
    set_learning_rate(state.optimizer, lr)
    with state.autocast():
        predictions = state.online_forward(images)
        with torch.no_grad():
            targets = state.target_forward(images)
        loss = symmetric_multiscale_loss(
            [p[:n] for p in predictions], [p[n:] for p in predictions],
            [z[:n].detach() for z in targets], [z[n:].detach() for z in targets],
            cfg.temperature,
        )
    if not torch.isfinite(loss):
        raise NonFiniteLossError(
            f"loss is {loss.item()} at step {state.step + 1}; the weights were not updated and the last "
            "checkpoint is intact. Lower base_lr, set grad_clip, or use precision=fp32 and resume."
        )
    state.optimizer.zero_grad(set_to_none=True)
    state.scaler.scale(loss).backward()
    if cfg.grad_clip > 0:
        state.scaler.unscale_(state.optimizer)
        torch.nn.utils.clip_grad_norm_(state.online.parameters(), cfg.grad_clip)
    state.scaler.step(state.optimizer)
    state.scaler.update()
    ema_update_(state.target, state.online.encoder, ema_decay(state.step, cfg.max_steps, cfg.ema_base))
    state.step += 1
    return loss.detach()


def checkpoint_payload(state: TrainState) -> dict[str, Any]:
    return {
        "format": "vito-train/1",
        "step": state.step,
        "data_position": state.step * state.config.batch_size,
        "config": state.config.to_dict(),
        "arch": state.config.arch,
        "pooling": state.config.pooling,
        "online": state.online.state_dict(),
        "target": state.target.state_dict(),
        "optimizer": state.optimizer.state_dict(),
        "scaler": state.scaler.state_dict(),
        "rng": rng_state(),
        "failed_clips": state.failed_clips,
    }


def restore(state: TrainState, payload: dict[str, Any]) -> None:
    saved = from_dict(payload["config"])
    changed = [k for k in RESUME_FIXED_KEYS if getattr(saved, k) != getattr(state.config, k)]
    if changed:
        raise ConfigError(
            f"cannot resume: {changed} differ from the checkpoint's config "
            f"({ {k: getattr(saved, k) for k in changed} }); use a new --out directory"
        )
    if saved.max_steps != state.config.max_steps:
        log.warning("max_steps changed from %d to %d: the lr and EMA schedules change from here on",
                    saved.max_steps, state.config.max_steps)
    state.online.load_state_dict(payload["online"])
    state.target.load_state_dict(payload["target"])
    state.optimizer.load_state_dict(payload["optimizer"])
    state.scaler.load_state_dict(payload["scaler"])
    restore_rng_state(payload["rng"])
    state.step = int(payload["step"])
    state.failed_clips = int(payload.get("failed_clips", 0))


def build_loader(config: TrainConfig, manifest: Path, start_step: int, end_step: int,
                 device: torch.device) -> DataLoader:
    clips = load_clips(manifest)
    log.info("%d kept clips from %s", len(clips), manifest)
    dataset = FramePairDataset(clips, seed=config.seed, image_size=config.image_size,
                               min_scale=config.crop_min_scale, max_gap_s=config.max_gap_s,
                               decode_short_side=config.decode_short_side, retries=config.decode_retries)
    return DataLoader(
        dataset,
        batch_sampler=StepBatchSampler(config.batch_size, start_step, end_step),
        num_workers=config.num_workers,
        collate_fn=collate_pairs,
        pin_memory=device.type == "cuda",
        prefetch_factor=4 if config.num_workers > 0 else None,
        persistent_workers=False,
    )


def save(state: TrainState, run_dir: Path, *, numbered: bool) -> None:
    payload = checkpoint_payload(state)
    save_checkpoint(run_dir / LAST, payload)
    if numbered:
        save_checkpoint(run_dir / step_checkpoint_name(state.step), payload)


def train(config: TrainConfig, manifest: str | Path, run_dir: str | Path, *, progress: bool = False
          ) -> dict[str, Any]:
    """Train (or resume training of) a VITO encoder; returns a summary of this invocation."""
    run_dir, manifest = Path(run_dir), Path(manifest)
    run_dir.mkdir(parents=True, exist_ok=True)
    device = resolve_device(config.device)
    if config.torch_threads > 0:
        # on a shared or small CPU, OpenMP threads spin against the loader workers and other jobs
        torch.set_num_threads(config.torch_threads)
    if config.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
    else:
        torch.backends.cudnn.benchmark = True
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True

    # data first: a bad manifest should fail before minutes of model setup
    load_clips(manifest)
    state = build_state(config, device)
    if (run_dir / LAST).exists():
        restore(state, load_checkpoint(run_dir / LAST))
        log.info("resumed %s at step %d", run_dir, state.step)
    save_config(config, run_dir / "config.yaml")
    start_step = state.step
    end_step = min(config.max_steps, config.stop_after) if config.stop_after > 0 else config.max_steps
    if start_step >= end_step:
        log.info("nothing to do: run is at step %d of %d", start_step, end_step)
        return {"start_step": start_step, "end_step": start_step, "steps": 0, "failed_clips": state.failed_clips}

    loader = build_loader(config, manifest, start_step, end_step, device)
    metrics = MetricsLog(run_dir, start_step)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=end_step, initial=start_step, unit="step", dynamic_ncols=True)
    state.online.train()
    state.target.train()
    started, window_start, window_pairs, last_loss = time.perf_counter(), time.perf_counter(), 0, math.nan
    try:
        for batch in loader:
            state.failed_clips += len(batch["failed"])
            if batch["view_1"] is None:  # every clip of the batch failed: skip the step, keep position
                log.warning("step %d: no decodable clip in the batch; skipped", state.step + 1)
                state.step += 1
                continue
            loss = train_step(state, batch["view_1"], batch["view_2"])
            window_pairs += batch["view_1"].shape[0]
            numbered = config.ckpt_every > 0 and state.step % config.ckpt_every == 0
            if state.step % config.log_every == 0 or state.step == end_step:
                last_loss = loss.item()
                now = time.perf_counter()
                pairs_per_s = window_pairs / max(now - window_start, 1e-9)
                window_start, window_pairs = now, 0
                metrics.log({
                    "step": state.step, "loss": last_loss, "lr": state.optimizer.param_groups[0]["lr"],
                    "ema_decay": ema_decay(state.step - 1, config.max_steps, config.ema_base),
                    "pairs_per_s": pairs_per_s, "failed_clips": state.failed_clips,
                    "dropped_samples": batch["dropped"],
                })
                if bar is not None:
                    bar.set_postfix(loss=f"{last_loss:.3f}", pairs_s=f"{pairs_per_s:.1f}")
            if bar is not None:
                bar.update(1)
            if numbered or state.step % config.ckpt_last_every == 0 or state.step == end_step:
                save(state, run_dir, numbered=numbered)
    except KeyboardInterrupt:
        log.warning("interrupted: saving step %d to %s", state.step, run_dir / LAST)
        save(state, run_dir, numbered=False)
        raise
    finally:
        metrics.close()
        if bar is not None:
            bar.close()
        plot_loss_curve(run_dir)
    elapsed = time.perf_counter() - started
    return {"start_step": start_step, "end_step": state.step, "steps": state.step - start_step,
            "final_loss": last_loss, "seconds": elapsed, "failed_clips": state.failed_clips,
            "pairs_per_s": (state.step - start_step) * config.batch_size / max(elapsed, 1e-9)}
