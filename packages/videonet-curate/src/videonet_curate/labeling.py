"""Label one shard of candidate clips: materialise -> sample frames -> embed -> score -> rows.

This is the per-shard stage of `videonet-curate build`. It is a plain class so it can be tested without
Ray; the pipeline wraps it in a Ray actor so the model is loaded once per worker. Every candidate ends as
exactly one manifest row: a failure is recorded with its reason and the shard goes on.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from videonet_curate import manifest as mf
from videonet_curate.dedup import clip_embedding
from videonet_curate.embeddings import embeddings_table
from videonet_curate.shards import Shard, write_shard

log = logging.getLogger(__name__)

# Candidate keys that are bookkeeping for the pipeline, not manifest columns.
_CANDIDATE_ONLY_KEYS = ("locator", "url")


@dataclass(frozen=True)
class LabelingConfig:
    """How shards are labelled; what decides their output goes into the run fingerprint
    (:func:`videonet_curate.pipeline.fingerprint_settings`)."""

    model: str = "efficientnet-lite0"
    templates: str = "openai"
    frames_per_clip: int = 8
    batch_frames: int = 64
    # Frames are scaled on decode so their short side stays >= 256 for aspect ratios up to 16:9: the
    # models resize to 224-256 anyway, and converting full-size frames dominated the GPU embed stage.
    decode_max_side: int = 456
    device: str = "cpu"
    precision: str = "auto"  # auto: bf16 on a GPU, fp32 on the CPU; or fp32 | fp16 | bf16
    threads: int = 1


@dataclass
class _Pending:
    row: dict[str, Any]
    frames: np.ndarray


def resolve_precision(precision: str, device: str) -> str:
    """``auto`` means bf16 on a GPU (the scores barely move, the throughput doubles) and fp32 on a CPU."""
    if precision == "auto":
        return "bf16" if device.startswith("cuda") else "fp32"
    return precision


class ShardLabeler:
    """Holds one model; labels whole shards and writes their outputs atomically."""

    def __init__(
        self,
        config: LabelingConfig,
        out_dir: str | os.PathLike[str],
        materialize: Callable[[Mapping[str, Any], Path], Mapping[str, Any]] | None = None,
    ) -> None:
        import torch

        from videonet_curate.models import load_scorer

        torch.set_num_threads(max(1, config.threads))
        self.config = config
        self.out_dir = Path(out_dir)
        self.materialize = materialize
        self.scorer = load_scorer(
            config.model,
            device=config.device,
            templates=config.templates,
            precision=resolve_precision(config.precision, config.device),
        )
        self.timings = {"materialize": 0.0, "sample": 0.0, "embed": 0.0, "score": 0.0}

    # -- public ---------------------------------------------------------------------------------------
    def run_shard(self, shard: Shard) -> dict[str, Any]:
        """Label every candidate of ``shard``, write its outputs, return counts and its own stage seconds."""
        before = dict(self.timings)
        rows: list[dict[str, Any]] = []
        embeddings: dict[str, np.ndarray] = {}
        pending: list[_Pending] = []
        for candidate in shard.candidates:
            item = self._prepare(candidate)
            if isinstance(item, dict):
                rows.append(item)
                continue
            pending.append(item)
            if sum(len(p.frames) for p in pending) >= self.config.batch_frames:
                self._flush(pending, rows, embeddings)
                pending = []
        self._flush(pending, rows, embeddings)

        ids = [cid for cid in (r["clip_id"] for r in rows) if cid in embeddings]
        matrix = np.stack([embeddings[i] for i in ids]) if ids else np.zeros((0, self.scorer.embedding_dim))
        emb_table = embeddings_table(ids, matrix)
        info = {"model_id": self.scorer.model_id, "prototype_set": self.scorer.prototype_set}
        write_shard(self.out_dir, shard, mf.rows_to_table(rows), emb_table, info)
        statuses: dict[str, int] = {}
        for row in rows:
            statuses[row["status"]] = statuses.get(row["status"], 0) + 1
        timings = {stage: seconds - before[stage] for stage, seconds in self.timings.items()}
        return {"shard": shard.name, "clips": len(rows), "statuses": statuses, "timings": timings}

    # -- stages ---------------------------------------------------------------------------------------
    def _prepare(self, candidate: Mapping[str, Any]) -> _Pending | dict[str, Any]:
        """Materialise and sample one candidate; a finished (failed) row comes back as a dict."""
        from videonet_curate.video import VideoError, read_frames_at, sample_timestamps

        values = {
            k: v for k, v in candidate.items() if k not in _CANDIDATE_ONLY_KEYS and k in mf.SCHEMA.names
        }
        row = mf.empty_row(**values)
        row.setdefault("attempts", None)
        local_path = candidate.get("locator")
        if local_path is None:
            if self.materialize is None:
                return self._failed(row, "internal", f"no way to fetch source {candidate.get('source')!r}")
            started = time.perf_counter()
            got = self.materialize(candidate, self.out_dir)
            self.timings["materialize"] += time.perf_counter() - started
            for key in (
                "status",
                "reason",
                "detail",
                "attempts",
                "start_s",
                "end_s",
                "source_start_s",
                "source_end_s",
                "duration_s",
                "fps",
                "width",
                "height",
                "codec",
            ):
                if got.get(key) is not None:
                    row[key] = got[key]
            if got.get("path") is None:
                row["status"] = got.get("status") or mf.STATUS_FAILED
                return row
            local_path = str(got["path"])
        row["path"] = os.path.relpath(local_path, self.out_dir)

        started = time.perf_counter()
        try:
            stamps = sample_timestamps(
                float(row["start_s"]), float(row["end_s"]), self.config.frames_per_clip
            )
            frames = read_frames_at(
                local_path, stamps, max_side=self.config.decode_max_side, threads=self.config.threads
            )
        except VideoError as exc:
            return self._failed(row, exc.reason, str(exc))
        except Exception as exc:  # a decoder bug must not sink the shard; record it
            log.exception("unexpected error sampling %s", local_path)
            return self._failed(row, "decode_error", f"{type(exc).__name__}: {exc}")
        finally:
            self.timings["sample"] += time.perf_counter() - started
        if len(frames) == 0:
            return self._failed(row, "decode_error", "no frame could be decoded in the clip window")
        row["frames_sampled"] = len(frames)
        return _Pending(row=row, frames=np.asarray(frames))

    def _flush(
        self, pending: list[_Pending], rows: list[dict[str, Any]], embeddings: dict[str, np.ndarray]
    ) -> None:
        """Embed the frames of several clips in one batch, then score each clip."""
        import torch

        from videonet_curate.classify import score_clip

        if not pending:
            return
        started = time.perf_counter()
        with torch.inference_mode():
            # clips differ in size: preprocess (resize + crop) each, then one forward pass for all
            batch = torch.cat([self.scorer.preprocess(p.frames) for p in pending])
            emb = self.scorer.embed(batch)
            probs = self.scorer.class_probabilities(emb).float().cpu().numpy()
        emb_np = emb.float().cpu().numpy()
        self.timings["embed"] += time.perf_counter() - started

        started = time.perf_counter()
        offset = 0
        for item in pending:
            n = len(item.frames)
            clip_probs, clip_emb = probs[offset : offset + n], emb_np[offset : offset + n]
            offset += n
            score = score_clip(clip_probs)
            row = item.row
            row.update(
                label=int(score.label),
                label_name=score.label_name,
                score=float(score.score),
                margin=float(score.margin),
                top5_labels=[int(x) for x in score.top5_labels],
                top5_scores=[float(x) for x in score.top5_scores],
            )
            # labelled: the score cut, dedup and rebalancing are table steps on the driver (curation.py);
            # ``detail`` keeps any note, e.g. a clip kept although shorter than its segment
            row.update(status=mf.STATUS_KEPT, reason=None)
            rows.append(row)
            embeddings[row["clip_id"]] = clip_embedding(clip_emb)
        self.timings["score"] += time.perf_counter() - started

    @staticmethod
    def _failed(row: dict[str, Any], reason: str, detail: str) -> dict[str, Any]:
        row.update(
            status=mf.STATUS_FAILED, reason=reason if reason in mf.REASONS else "decode_error", detail=detail
        )
        return row
