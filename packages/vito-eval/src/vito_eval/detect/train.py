"""``vito-eval detect``: fine-tune Mask R-CNN R-FPN from an encoder on COCO or LVIS, then evaluate.

Top-down, like a single-file trainer: inputs checked (dataset, encoder, model) before anything is
written; then device, DDP and optimiser; resume; the loop (bf16 autocast on GPU, Detectron2's warmup +
multi-step LR, metrics.jsonl + TensorBoard, atomic checkpoints); evaluation on val by rank 0.

Outputs under ``--out``: ``config.json``, ``checkpoint.pt`` (model, optimiser, iteration; RNG draws are a function of the iteration, so a rerun
with the same command resumes exactly), ``metrics.jsonl``, ``tb/``, ``detections_val.json`` (COCO results
format), ``metrics.json`` and ``per_category_ap.csv``.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from vito_eval.datasets.coco import load_detection_dataset, repeat_factors, trainable_images
from vito_eval.detect import config as C
from vito_eval.detect.data import DetectionTrainSet, ResumableBatches, collate_lists, lr_at
from vito_eval.detect.evaluate import evaluate_detections, predict, write_metrics
from vito_eval.detect.model import build_mask_rcnn, norm_and_other_parameters
from vito_eval.encoders import load_encoder
from vito_eval.errors import EvalInputError

log = logging.getLogger(__name__)
CHECKPOINT = "checkpoint.pt"
Track = Callable[[Iterable, str], Iterable]


class DetectConfigError(EvalInputError):
    """Options that cannot work together, or an --out folder holding another run."""


def _resolve_schedule(config: C.DetectConfig, lvis: bool) -> C.Schedule:
    if config.schedule not in C.SCHEDULES:
        raise DetectConfigError(f"--schedule {config.schedule!r}: choose one of {', '.join(C.SCHEDULES)}")
    s = C.SCHEDULES[config.schedule]
    changes: dict[str, Any] = {}
    if config.batch_size:
        changes["batch_size"] = config.batch_size
    if config.epochs:  # LR steps keep their place relative to the schedule's length
        changes["lr_steps"] = tuple(e * config.epochs / s.epochs for e in s.lr_steps)
        changes["epochs"] = config.epochs
    if lvis:
        changes["detections_per_image"] = C.LVIS_DETECTIONS_PER_IMAGE
    return C.Schedule(**{**s.__dict__, **changes})


def _pick_device(requested: str) -> torch.device:
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(requested)


def _run_identity(config: C.DetectConfig, schedule: C.Schedule) -> dict[str, Any]:
    """What must match for a checkpoint in --out to be resumed (the rest may change between attempts)."""
    return {
        "encoder": config.encoder,
        "dataset": config.dataset,
        "schedule": asdict(schedule),
        "seed": config.seed,
        "lr": config.lr,
    }


def run_detect(config: C.DetectConfig, track: Track | None = None) -> dict[str, Any]:
    """Train, checkpoint and evaluate; returns the metrics (rank 0) or {} on other ranks."""
    from vito_train.distributed import cleanup_distributed, init_distributed

    # ---- inputs: all checked before anything is written
    dataset = load_detection_dataset(config.dataset)
    lvis = dataset.kind == "lvis"
    schedule = _resolve_schedule(config, lvis)
    encoder = load_encoder(config.encoder)
    score_threshold = C.LVIS_SCORE_THRESHOLD if lvis else C.COCO_SCORE_THRESHOLD
    torch.manual_seed(config.seed)
    model = build_mask_rcnn(
        encoder, dataset.num_classes, schedule, schedule.detections_per_image, score_threshold
    )
    train_images = trainable_images(dataset.train)
    if not train_images:
        raise DetectConfigError(f"{config.dataset}: no training image has a usable (non-crowd) instance")
    out = Path(config.out)
    identity = _run_identity(config, schedule)
    resume_state = _resume_state(out, identity)

    # ---- device, processes, optimiser
    env, device = init_distributed(_pick_device(config.device))
    try:
        if env.world_size > 1 and device.type == "cuda":  # SyncBN needs CUDA; gloo CPU runs keep per-rank BN
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        model.to(device)
        ddp = nn.parallel.DistributedDataParallel(model) if env.world_size > 1 else model
        base_lr = config.lr or schedule.lr(schedule.batch_size)
        norm_params, other_params = norm_and_other_parameters(model)
        optimizer = torch.optim.SGD(
            [
                {"params": other_params, "weight_decay": schedule.weight_decay},
                {"params": norm_params, "weight_decay": 0.0},
            ],
            lr=base_lr,
            momentum=schedule.momentum,
        )
        iters_per_epoch = max(1, len(train_images) // schedule.batch_size)
        total_iters = schedule.epochs * iters_per_epoch
        step_iters = tuple(round(e * iters_per_epoch) for e in schedule.lr_steps)
        start_iter = 0
        if resume_state is not None:
            model.load_state_dict(resume_state["model"])
            optimizer.load_state_dict(resume_state["optimizer"])
            start_iter = int(resume_state["iteration"])
            log.info("resuming %s at iteration %d of %d", out, start_iter, total_iters)
        if env.is_main:
            out.mkdir(parents=True, exist_ok=True)
            _write_json(
                out / "config.json",
                {
                    **identity,
                    "config": _jsonable(asdict(config)),
                    "lr": base_lr,
                    "total_iters": total_iters,
                    "step_iters": step_iters,
                    "encoder_source": encoder.source,
                    "arch": encoder.arch,
                    "num_classes": dataset.num_classes,
                    "train_images": len(train_images),
                },
            )
        stop_iter = min(total_iters, config.max_iters) if config.max_iters else total_iters

        # ---- data: repeat factors (LVIS) and a batch order that is a function of (seed, iteration)
        factors = (
            repeat_factors(
                [{int(a["category_id"]) for a in dataset.train.annotations[im["id"]]} for im in train_images],
                C.LVIS_REPEAT_THRESHOLD,
            )
            if lvis
            else torch.ones(len(train_images)).numpy()
        )
        batches = ResumableBatches(
            factors, schedule.batch_size, config.seed, start_iter, stop_iter, env.rank, env.world_size
        )
        loader = DataLoader(
            DetectionTrainSet(dataset.train, train_images),
            batch_sampler=batches,
            collate_fn=collate_lists,
            num_workers=config.workers,
            persistent_workers=False,
            pin_memory=device.type == "cuda",
        )
        autocast_dtype = torch.bfloat16 if device.type == "cuda" else None
        writer = _tensorboard(out) if env.is_main else None

        # ---- the loop
        ddp.train()
        iteration, t0 = start_iter, time.perf_counter()
        progress = (
            track(loader, f"detect {schedule.name}")
            if (track and env.is_main and config.progress)
            else loader
        )
        for images, targets in progress:
            # torch's RNG (torchvision's per-image scale choice, RPN/RoI sampling) is reseeded from
            # (seed, rank, iteration) every step: a resumed run, on any world size, replays the same draws
            torch.manual_seed(config.seed * 1_000_003 + env.rank * 7_919 + iteration)
            lr = lr_at(
                iteration, base_lr, total_iters, step_iters, schedule.warmup_iters, schedule.warmup_factor
            )
            for group in optimizer.param_groups:
                group["lr"] = lr
            images = [im.to(device, non_blocking=True) for im in images]
            targets = [{k: v.to(device, non_blocking=True) for k, v in t.items()} for t in targets]
            with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
                losses = ddp(images, targets)
            loss = sum(losses.values())
            if not math.isfinite(float(loss.detach())):
                raise FloatingPointError(f"loss is {float(loss)} at iteration {iteration}: lower the LR")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if schedule.clip_grad_norm:
                torch.nn.utils.clip_grad_norm_(model.parameters(), schedule.clip_grad_norm)
            optimizer.step()
            iteration += 1
            if env.is_main and (iteration % 20 == 0 or iteration == stop_iter):
                row = {
                    "iteration": iteration,
                    "lr": lr,
                    "loss": float(loss.detach()),
                    **{k: float(v.detach()) for k, v in losses.items()},
                    "seconds": round(time.perf_counter() - t0, 2),
                }
                with open(out / "metrics.jsonl", "a") as handle:
                    handle.write(json.dumps(row) + "\n")
                for k, v in row.items():
                    if k not in ("iteration", "seconds") and writer is not None:
                        writer.add_scalar(f"train/{k}", v, iteration)
            if iteration % config.checkpoint_every == 0 or iteration == stop_iter:
                _save(out, env, model, optimizer, iteration, identity)
        if writer is not None:
            writer.flush()
        if iteration < total_iters:
            return {"stopped_at": iteration, "total_iters": total_iters}

        # ---- evaluation (rank 0; val sets are evaluated once, not sharded)
        if not env.is_main:
            return {}
        val_images = dataset.val.images[: config.eval_limit] if config.eval_limit else dataset.val.images
        t_eval = time.perf_counter()
        results = predict(model, dataset.val, val_images, device, autocast_dtype=autocast_dtype, track=track)
        _write_json(out / "detections_val.json", results)
        ids = [im["id"] for im in val_images]
        metrics: dict[str, Any] = {
            t: evaluate_detections(dataset.val, results, ids, t) for t in ("bbox", "segm")
        }
        metrics["meta"] = {
            "dataset": dataset.spec,
            "kind": dataset.kind,
            "encoder": config.encoder,
            "schedule": schedule.name,
            "provenance": schedule.provenance,
            "iterations": total_iters,
            "batch_size": schedule.batch_size,
            "lr": base_lr,
            "val_images": len(val_images),
            "eval_seconds": round(time.perf_counter() - t_eval, 1),
            "device": str(device),
            "world_size": env.world_size,
        }
        write_metrics(out, metrics)
        if writer is not None:
            for t in ("bbox", "segm"):
                for k, v in metrics[t]["summary"].items():
                    if v is not None:
                        writer.add_scalar(f"val_{t}/{k}", v, total_iters)
            writer.close()
        return metrics
    finally:
        cleanup_distributed()


def _resume_state(out: Path, identity: dict[str, Any]) -> dict[str, Any] | None:
    path = out / CHECKPOINT
    if not path.exists():
        if out.exists() and any(out.iterdir()):
            raise DetectConfigError(
                f"--out {out} is not empty and holds no {CHECKPOINT}: choose a new folder"
            )
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a truncated or foreign file
        raise DetectConfigError(
            f"{path} is not a readable detect checkpoint ({exc}); remove it to start over"
        ) from exc
    if json.loads(state["identity"]) != json.loads(json.dumps(identity)):
        raise DetectConfigError(
            f"{path} belongs to another run (encoder, dataset, schedule or seed differ); use a new --out"
        )
    return state


def _save(out: Path, env, model: nn.Module, optimizer, iteration: int, identity: dict) -> None:
    if not env.is_main:
        return
    from vito_train.checkpoint import save_checkpoint

    state = {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "iteration": iteration,
        "identity": json.dumps(identity),
    }
    save_checkpoint(out / CHECKPOINT, state)


def _tensorboard(out: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is optional at run time; metrics.jsonl has everything
        return None
    return SummaryWriter(str(out / "tb"))


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def _write_json(path: Path, payload: Any) -> None:
    from videonet_curate.storage import atomic_write_bytes

    atomic_write_bytes(path, json.dumps(payload).encode())
