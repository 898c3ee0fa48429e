"""The VITO training loop, top-down: config, data, model, optimiser, resume, loop, checkpoint.

``_train`` reads in that order on one screen; what it calls lives in small functions here
(``configure_torch``, ``resume_if_saved``, ``skip_if_empty``, ``save_if_due``) and in progress.py
(metrics rows, kNN monitor, bar).

One process per GPU under torchrun (or one process alone). Every piece it calls lives in its own
module: distributed.py (ranks, gathered loss, stop signals), data/pair_loader.py (video or frame
cache source, where the photometric augmentation runs, loader-worker failures).
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.profiler import record_function

from videonet_curate.uri import StorageOptions, is_uri, location
from vito_train.checkpoint import (
    LAST,
    load_checkpoint,
    restore_rng_state,
    rng_state,
    save_checkpoint,
    step_checkpoint_name,
)
from vito_train.config import ConfigError, TrainConfig, from_dict, save_config
from vito_train.data.augment import blur_kernel_size, normalize_on_device
from vito_train.data.batched_augment import N_PARAMS, augment_and_normalize
from vito_train.data.cache_source import CacheFrameSource
from vito_train.data.pair_loader import (
    ResilientBatches,
    build_pair_dataset,
    build_rank_batches,
    check_data_source,
    open_frame_source,
    use_batched_augment,
)
from vito_train.data.undecodable import UndecodableWindow
from vito_train.distributed import (
    DistEnv,
    StopRequest,
    all_reduce_sum,
    cleanup_distributed,
    convert_sync_bn,
    exchange_counts,
    gathered_symmetric_loss,
    init_distributed,
    wrap_online,
)
from vito_train.ema import ema_decay, ema_update_
from vito_train.loss import symmetric_multiscale_loss
from vito_train.model import OnlineNetwork, VitoEncoder, build_online
from vito_train.monitor import KnnMonitor
from vito_train.optim import build_optimizer, learning_rate, set_learning_rate
from vito_train.progress import TrainProgress

log = logging.getLogger(__name__)

# Keys whose change makes a resumed run a different run (model, data stream, batch).
RESUME_FIXED_KEYS = (
    "arch",
    "pooling",
    "attention_hidden",
    "projector_hidden",
    "projector_dim",
    "predictor_hidden",
    "image_size",
    "decode_short_side",
    "crop_min_scale",
    "max_gap_s",
    "frame_fps",
    "batch_size",
    "seed",
    "optimizer",  # the saved optimiser state belongs to one kind
)


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
    online_forward: nn.Module | None = None  # DDP and/or compiled wrappers
    target_forward: nn.Module | None = None
    env: DistEnv | None = None  # rank and world size (None: one process)

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


def build_state(config: TrainConfig, device: torch.device, env: DistEnv | None = None) -> TrainState:
    """Fresh online and target networks (target = copy of the online encoder), optimiser, scaler;
    under several ranks the online network is DDP-wrapped (SyncBatchNorm when config.sync_bn)."""
    torch.manual_seed(config.seed)
    online = build_online(config).to(device)
    if device.type == "cuda" and config.channels_last:
        online = online.to(memory_format=torch.channels_last)
    target = copy.deepcopy(online.encoder)
    target.requires_grad_(False)
    optimizer = build_optimizer(
        config.optimizer,
        online,
        weight_decay=config.weight_decay,
        momentum=config.momentum,
        trust_coeff=config.lars_trust_coeff,
    )
    scaler = torch.amp.GradScaler(device.type, enabled=device.type == "cuda" and config.precision == "fp16")
    env = env or DistEnv()
    target = convert_sync_bn(target, env, config.sync_bn)
    state = TrainState(config, device, online, target, optimizer, scaler, env=env)
    state.online_forward = wrap_online(online, env, device, sync_bn=config.sync_bn)
    state.target_forward = target
    if config.compile:
        state.online_forward = torch.compile(state.online_forward)
        state.target_forward = torch.compile(target)
    return state


def device_images(
    state: TrainState, views_1: torch.Tensor, views_2: torch.Tensor, photometric: torch.Tensor | None = None
) -> torch.Tensor:
    """uint8 view pairs -> normalised float images on the device (views 1 then views 2); with
    ``photometric`` (2, B, N_PARAMS) the colour/blur/solarize augmentation runs here, batched."""
    cfg, device = state.config, state.device
    channels_last = device.type == "cuda" and cfg.channels_last
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    # copy each (pinned) view, then concatenate on the device: a host-side cat makes a 77 MB pageable
    # copy per step at batch 256, 224 px (then a synchronous upload); suspected cause of the 49 ms/step
    # gap between real and synthetic input in the first H100 check
    images = torch.cat([views_1.to(device, non_blocking=True), views_2.to(device, non_blocking=True)])
    if photometric is None:
        return normalize_on_device(images).contiguous(memory_format=memory_format)
    dtype = torch.bfloat16 if device.type == "cuda" and cfg.precision == "bf16" else torch.float32
    params = photometric.reshape(-1, N_PARAMS).to(device, non_blocking=True)
    images = augment_and_normalize(images, params, kernel_size=blur_kernel_size(cfg.image_size), dtype=dtype)
    return images.contiguous(memory_format=memory_format)


def train_step(
    state: TrainState,
    views_1: torch.Tensor,
    views_2: torch.Tensor,
    photometric: torch.Tensor | None = None,
    counts: list[int] | None = None,
) -> torch.Tensor:
    """One optimiser step on a batch of uint8 view pairs; returns this rank's mean loss (0-d tensor).

    ``counts``: every rank's sample count this step (``exchange_counts``); the InfoNCE negatives
    are the keys of all ranks. Raises NonFiniteLossError before touching the weights when the loss
    is NaN or infinite (on any rank).
    """
    cfg = state.config
    with record_function("vito.images"):
        images = device_images(state, views_1, views_2, photometric)
    n = views_1.shape[0]
    lr = learning_rate(
        state.step,
        base_lr=cfg.base_lr,
        batch_size=cfg.batch_size,
        warmup_steps=cfg.warmup_steps,
        total_steps=cfg.max_steps,
        final_ratio=cfg.final_lr_ratio,
    )
    set_learning_rate(state.optimizer, lr)
    with state.autocast(), record_function("vito.forward_and_loss"):
        predictions = state.online_forward(images)
        with torch.no_grad():
            targets = state.target_forward(images)
        loss, local_loss = gathered_symmetric_loss(
            [p[:n] for p in predictions],
            [p[n:] for p in predictions],
            [z[:n].detach() for z in targets],
            [z[n:].detach() for z in targets],
            cfg.temperature,
            counts=counts,
            loss_fn=symmetric_multiscale_loss,
        )
    # the one host sync of a step: the weights must not move on a NaN loss
    finite = bool(torch.isfinite(loss))
    if state.env is not None and state.env.world_size > 1:
        finite = all_reduce_sum(int(not finite), state.env) == 0  # every rank stops together
    if not finite:
        raise NonFiniteLossError(
            f"loss is {local_loss.item()} at step {state.step + 1}; the weights were not updated and the "
            "last checkpoint is intact. Lower base_lr, set grad_clip, or use precision=fp32 and resume."
        )
    with record_function("vito.backward"):
        state.optimizer.zero_grad(set_to_none=True)
        state.scaler.scale(loss).backward()
    with record_function("vito.optimizer"):
        if cfg.grad_clip > 0:
            state.scaler.unscale_(state.optimizer)
            torch.nn.utils.clip_grad_norm_(state.online.parameters(), cfg.grad_clip)
        state.scaler.step(state.optimizer)
        state.scaler.update()
    with record_function("vito.ema"):
        ema_update_(state.target, state.online.encoder, ema_decay(state.step, cfg.max_steps, cfg.ema_base))
    state.step += 1
    return local_loss


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
        log.warning(
            "max_steps changed from %d to %d: the lr and EMA schedules change from here on",
            saved.max_steps,
            state.config.max_steps,
        )
    state.online.load_state_dict(payload["online"])
    state.target.load_state_dict(payload["target"])
    state.optimizer.load_state_dict(payload["optimizer"])
    state.scaler.load_state_dict(payload["scaler"])
    restore_rng_state(payload["rng"])
    state.step = int(payload["step"])
    state.failed_clips = int(payload.get("failed_clips", 0))


def build_loader(
    config: TrainConfig,
    manifest: Path | None,
    start_step: int,
    end_step: int,
    device: torch.device,
    *,
    cache: str | Path | None = None,
    images: str | None = None,
    env: DistEnv | None = None,
    storage: StorageOptions | None = None,
) -> ResilientBatches:
    """This rank's batches from the manifest's videos, a frame cache (``vito-train prepare``) or the
    images of an image set."""
    env = env or DistEnv()
    batched = use_batched_augment(config.photometric_augment, device)
    described = (
        f"frame cache {cache}" if cache else f"images of {images}" if images else f"videos of {manifest}"
    )
    log.info(
        "data: %s; photometric augmentation %s",
        described,
        "batched on the training device" if batched else "per sample in the loader workers",
    )
    source = open_frame_source(config, manifest=manifest, cache=cache, images=images, storage=storage)
    return build_rank_batches(
        config,
        build_pair_dataset(config, source, batched=batched),
        start_step=start_step,
        end_step=end_step,
        rank=env.rank,
        world_size=env.world_size,
        pin_memory=device.type == "cuda",
        bad_cache_shards=len(source.cache.bad_shards) if isinstance(source, CacheFrameSource) else 0,
    )


def save(state: TrainState, run_dir: Path, *, numbered: bool) -> None:
    payload = checkpoint_payload(state)
    save_checkpoint(run_dir / LAST, payload)
    if numbered:
        save_checkpoint(run_dir / step_checkpoint_name(state.step), payload)


def train(
    config: TrainConfig,
    manifest: str | Path | None,
    run_dir: str | Path,
    *,
    progress: bool = False,
    cache: str | Path | None = None,
    images: str | None = None,
    monitor: str | None = None,
    storage: StorageOptions | None = None,
) -> dict[str, Any]:
    """Train (or resume training of) a VITO encoder from a manifest's videos, a frame ``cache`` (a
    directory or a URI such as ``s3://bucket/cache``; ``storage`` says how to reach it) or an
    image set (``images``: ``imagefolder:DIR``, ``fashion-mnist:DIR``, ...; two views of one image, so
    ``max_gap_s`` is set to 0); ``monitor``: an image-set spec for the online kNN monitor.
    Returns a summary of this invocation. Under torchrun every rank calls it; rank 0 writes."""
    run_dir = Path(run_dir)
    manifest = location(manifest) if manifest else None  # a URI stays a string
    cache = None if cache is None else str(cache) if is_uri(cache) else Path(cache)
    if images is not None and config.max_gap_s != 0:
        log.info("image mode: max_gap_s %.3g -> 0 (the two views come from one image)", config.max_gap_s)
        config = dataclasses.replace(config, max_gap_s=0.0)
    env, device = init_distributed(resolve_device(config.device))
    try:
        return _train(
            config,
            manifest,
            cache,
            run_dir,
            env,
            device,
            progress=progress,
            images=images,
            monitor=monitor,
            storage=storage,
        )
    finally:
        cleanup_distributed()


def configure_torch(config: TrainConfig) -> None:
    """Threads, determinism and TF32 for this process."""
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


def resume_if_saved(state: TrainState, run_dir: Path) -> None:
    """Continue from ``run_dir/last.pt`` when there is one (any world size: the data position is
    in global samples)."""
    if (run_dir / LAST).exists():
        restore(state, load_checkpoint(run_dir / LAST))
        log.info("resumed %s at step %d", run_dir, state.step)


def skip_if_empty(state: TrainState, batch: dict[str, Any], env: DistEnv) -> list[int] | None:
    """Every rank's sample count this step, or None (step skipped, position kept) when a rank has
    no decodable clip or lost its loader worker: then every rank skips together."""
    state.failed_clips += len(batch["failed"])
    counts = exchange_counts(0 if batch["view_1"] is None else batch["view_1"].shape[0], env)
    if min(counts) > 0:
        return counts
    log.warning("step %d: no decodable clip in a rank's batch (counts %s); skipped", state.step + 1, counts)
    state.step += 1
    return None


def save_if_due(state: TrainState, run_dir: Path, env: DistEnv, end_step: int) -> None:
    """``last.pt`` every ``ckpt_last_every`` steps and at the end; a numbered copy every ``ckpt_every``."""
    config = state.config
    numbered = config.ckpt_every > 0 and state.step % config.ckpt_every == 0
    due = numbered or state.step % config.ckpt_last_every == 0 or state.step == end_step
    if env.is_main and due:
        save(state, run_dir, numbered=numbered)


def _train(
    config: TrainConfig,
    manifest: Path | None,
    cache: str | Path | None,
    run_dir: Path,
    env: DistEnv,
    device: torch.device,
    *,
    progress: bool,
    images: str | None = None,
    monitor: str | None = None,
    storage: StorageOptions | None = None,
) -> dict[str, Any]:
    # data first: a bad manifest or cache should fail before minutes of model setup (and before
    # the run directory exists: exit 2 writes nothing)
    check_data_source(manifest=manifest, cache=cache, images=images, storage=storage)
    if env.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
    configure_torch(config)
    knn_monitor = None
    if monitor is not None and env.is_main:
        knn_monitor = KnnMonitor.load(
            monitor, config.image_size, config.monitor_bank, config.monitor_queries, seed=config.seed
        )
    state = build_state(config, device, env)  # online and target networks, LARS, scaler
    resume_if_saved(state, run_dir)
    if env.is_main:
        save_config(config, run_dir / "config.yaml")
    start_step = state.step
    end_step = min(config.max_steps, config.stop_after) if config.stop_after > 0 else config.max_steps
    if start_step >= end_step:
        log.info("nothing to do: run is at step %d of %d", start_step, end_step)
        return {
            "start_step": start_step,
            "end_step": start_step,
            "steps": 0,
            "failed_clips": state.failed_clips,
        }

    batches = build_loader(
        config, manifest, start_step, end_step, device, cache=cache, images=images, env=env, storage=storage
    )
    report = TrainProgress(config, run_dir, env, start_step, end_step, bar=progress, knn_monitor=knn_monitor)
    stop, started = StopRequest(env, signals=(signal.SIGTERM, signal.SIGINT)), time.perf_counter()
    stopped = 0  # the signal that stopped the run
    undecodable = UndecodableWindow(config.max_undecodable_steps)
    skipped_steps = dropped_samples = 0  # steps without an update (incl. dead workers'), samples lost
    state.online.train()
    state.target.train()
    try:
        if start_step == 0:
            report.measure_knn(state, device)  # the random initialisation's figure, the curve's first point
        for batch in batches:
            dropped_samples += batch["dropped"]
            counts = skip_if_empty(state, batch, env)
            if counts is None:  # skipped: still checkpointed below; a window of them stops the run
                skipped_steps += 1
                if undecodable.record(batch["failed"], skipped=True):
                    if env.is_main:  # the position is saved, so a fixed manifest resumes from here
                        save(state, run_dir, numbered=False)
                    raise undecodable.error(state.step, manifest or cache or images)
            else:
                undecodable.record(batch["failed"], skipped=False)
                loss = train_step(state, batch["view_1"], batch["view_2"], batch.get("photometric"), counts)
                report.after_step(state, batch, loss, counts, batches)
            if stop.should_stop(state.step):  # SIGTERM from a scheduler, Ctrl-C: checkpoint, then leave
                log.warning("stop requested: saving step %d to %s", state.step, run_dir / LAST)
                stopped = stop.signum or signal.SIGTERM
                if env.is_main:
                    save(state, run_dir, numbered=False)
                break
            save_if_due(state, run_dir, env, end_step)
    except KeyboardInterrupt:  # a second Ctrl-C: the step in flight may be half applied, so no save
        log.warning("interrupted twice: leaving without saving; %s holds the last checkpoint", run_dir / LAST)
        raise
    finally:
        stop.restore()
        report.close()
    elapsed = time.perf_counter() - started
    if skipped_steps and skipped_steps == state.step - start_step and not stopped:
        raise undecodable.error(state.step, manifest or cache or images)  # not one step trained
    return {
        "start_step": start_step,
        "end_step": state.step,
        "steps": state.step - start_step,
        "final_loss": report.last_loss,
        "seconds": elapsed,
        "failed_clips": state.failed_clips,
        "loader_worker_deaths": batches.worker_deaths,
        "skipped_steps": skipped_steps,
        "dropped_samples": dropped_samples,
        "bad_cache_shards": batches.bad_cache_shards,
        "stopped_by_signal": stopped,
        "pairs_per_s": (state.step - start_step) * config.batch_size / max(elapsed, 1e-9),
        **monitor_summary(knn_monitor, elapsed),
    }


def monitor_summary(knn_monitor: KnnMonitor | None, elapsed: float) -> dict[str, Any]:
    """The monitor's cost (seconds, share of the invocation's wall time) for the run's summary."""
    if knn_monitor is None:
        return {}
    return {
        "monitor_measurements": knn_monitor.measurements,
        "monitor_seconds": knn_monitor.seconds,
        "monitor_share": knn_monitor.seconds / max(elapsed, 1e-9),
    }
