"""Semi-supervised label propagation by feature affinity, as CRW (Jabri et al. 2020) and VFS (Xu & Wang 2021).

For every target frame t the context ("keys") is the first frame plus the ``n_context`` frames before t (the
video is padded at the front with copies of the first frame, so early frames see the first frame many times).
The affinity of a query position q in frame t to a key position k is A = <f_q, f_k> / temperature on
L2-normalised features; positions of the short-term context farther than ``radius`` (in feature cells) from q
are masked out, the first frame is not. The label of q is the softmax-weighted sum of the labels of its
top-k keys:  y_q = sum_{k in topk(A_q)} softmax(A_q)_k y_k.  Predictions stay soft and feed the next frames.
Matches ``videowalk/code/test.py`` with ``long_mem=[0]``, ``norm_mask=False``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F

DenseFeatureFn = Callable[[torch.Tensor], torch.Tensor]
"""Maps uint8 RGB images (N, 3, H, W) to dense features (N, C, h, w); the function normalises them itself."""


@dataclass(frozen=True)
class PropagationConfig:
    """Label-propagation hyper-parameters (defaults: the CRW protocol)."""

    n_context: int = 20
    topk: int = 10
    radius: float = 12.0
    temperature: float = 0.05
    query_chunk: int = 1024  # query positions per block of the dense reference `propagate_step`
    tile: int = 8  # query tile side (feature cells) of the windowed computation `propagate_labels` uses

    def __post_init__(self) -> None:
        if (
            min(self.n_context, self.topk, self.query_chunk, self.tile) < 1
            or min(self.radius, self.temperature) <= 0
        ):
            raise ValueError(
                f"invalid propagation config {self}: n_context, topk, radius, temperature must be > 0"
            )


PRESETS: dict[str, PropagationConfig] = {
    "crw": PropagationConfig(n_context=20, topk=10, radius=12.0, temperature=0.05),
    "vfs": PropagationConfig(n_context=20, topk=10, radius=12.0, temperature=0.07),
    "dino": PropagationConfig(n_context=7, topk=5, radius=12.0, temperature=0.1),
}


def context_frames(t: int, n_context: int) -> list[int]:
    """Key frames for target frame t: [0] (long-term memory) + the n_context frames before t, clamped at 0."""
    return [0] + [max(0, s) for s in range(t - n_context, t)]


def radius_mask(h: int, w: int, radius: float) -> torch.Tensor:
    """(h*w, h*w) boolean: key cell k is within ``radius`` (Euclidean, strictly less) of query cell q."""
    ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    pos = torch.stack([ys.flatten(), xs.flatten()], dim=1).float()
    return torch.cdist(pos, pos) < radius


def downsample_labels(onehot: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(K, H, W) one-hot masks -> (K, h, w) soft labels by bilinear resizing (CRW resizes with cv2 linear)."""
    return F.interpolate(onehot[None].float(), size=size, mode="bilinear", align_corners=False)[0]


def upsample_to_labels(soft: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(K, h, w) soft labels -> (H, W) argmax indices after bilinear upsampling (CRW's dump_predictions)."""
    up = F.interpolate(soft[None].float(), size=size, mode="bilinear", align_corners=False)[0]
    return up.argmax(dim=0)


def propagate_step(
    query: torch.Tensor,
    keys: torch.Tensor,
    key_labels: torch.Tensor,
    local: torch.Tensor,
    cfg: PropagationConfig,
) -> torch.Tensor:
    """Soft labels of one target frame.

    query: (C, P) features of the target frame; keys: (T, C, P) features of its context (frame 0 first);
    key_labels: (T, K, P); local: (P, P) radius mask, applied to all context frames but the first.
    Returns (K, P).
    """
    n_keys, _, n_pos = keys.shape
    flat_keys = keys.permute(0, 2, 1).reshape(n_keys * n_pos, -1)  # (T*P, C)
    flat_labels = key_labels.permute(0, 2, 1).reshape(n_keys * n_pos, -1)  # (T*P, K)
    k = min(cfg.topk, n_keys * n_pos)
    out = []
    for start in range(0, n_pos, cfg.query_chunk):
        q = query[:, start : start + cfg.query_chunk]  # (C, B)
        aff = (flat_keys @ q).view(n_keys, n_pos, -1)  # (T, P, B)
        far = ~local[:, start : start + cfg.query_chunk]  # (P, B)
        aff[1:].masked_fill_(far[None], float("-inf"))
        aff = aff.view(n_keys * n_pos, -1) / cfg.temperature
        weights, idx = torch.topk(aff, k, dim=0)  # (k, B)
        weights = torch.softmax(weights, dim=0)
        out.append((flat_labels[idx] * weights[..., None]).sum(0).T)  # (K, B)
    return torch.cat(out, dim=1)


def window_tiles(h: int, w: int, radius: float, tile: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """(query cells, key cells) per ``tile`` x ``tile`` block of queries: the keys are every cell that can lie
    within ``radius`` of some query of the block (|dy|, |dx| <= ceil(radius) - 1), as flat indices."""
    reach = math.ceil(radius) - 1
    grid = torch.arange(h * w).view(h, w)
    for y0 in range(0, h, tile):
        for x0 in range(0, w, tile):
            queries = grid[y0 : y0 + tile, x0 : x0 + tile].flatten()
            keys = grid[
                max(0, y0 - reach) : y0 + tile + reach, max(0, x0 - reach) : x0 + tile + reach
            ].flatten()
            yield queries, keys


def propagate_step_windowed(
    query: torch.Tensor,
    keys: torch.Tensor,
    key_labels: torch.Tensor,
    local: torch.Tensor,
    cfg: PropagationConfig,
    size: tuple[int, int],
) -> torch.Tensor:
    """`propagate_step` computed per query tile against only the short-term keys inside the radius window
    (the others are masked anyway), so the affinity costs O(P * (P + T * window)) instead of O(T * P^2).
    Same arguments and result; ``size`` is the (h, w) of the feature grid."""
    n_keys, _, n_pos = keys.shape
    out = torch.empty(key_labels.shape[1], n_pos, dtype=key_labels.dtype, device=key_labels.device)
    first_keys, first_labels = keys[0].T, key_labels[0].T  # (P, C), (P, K): frame 0 is never masked
    for q_idx, k_idx in window_tiles(*size, cfg.radius, cfg.tile):
        q_idx, k_idx = q_idx.to(keys.device), k_idx.to(keys.device)
        q = query[:, q_idx]  # (C, B)
        near = torch.einsum("tcw,cb->twb", keys[1:, :, k_idx], q)  # (T-1, W, B)
        near.masked_fill_(~local[k_idx][:, q_idx][None], float("-inf"))
        aff = torch.cat([first_keys @ q, near.reshape(-1, q.shape[1])]) / cfg.temperature
        labels = torch.cat(
            [first_labels, key_labels[1:, :, k_idx].permute(0, 2, 1).reshape(-1, out.shape[0])]
        )
        weights, idx = torch.topk(aff, min(cfg.topk, aff.shape[0]), dim=0)
        weights = torch.softmax(weights, dim=0)
        out[:, q_idx] = (labels[idx] * weights[..., None]).sum(0).T
    return out


def propagate_labels(
    features: torch.Tensor, first_labels: torch.Tensor, cfg: PropagationConfig, device: str = "cpu"
) -> torch.Tensor:
    """Propagate the first frame's soft labels through a video.

    features: (T, C, h, w) dense features (L2-normalised here along C); first_labels: (K, h, w) soft labels of
    frame 0 at feature resolution. Returns (T, K, h, w) soft labels on the CPU; frame 0 is the given labels.
    The affinities are computed on ``device`` (a GPU makes 480p sequences fast).
    """
    n_frames, _, h, w = features.shape
    feats = F.normalize(features.to(device).float(), dim=1).flatten(2)  # (T, C, P)
    labels = torch.zeros(n_frames, first_labels.shape[0], h * w, device=device)
    labels[0] = first_labels.to(device).flatten(1).float()
    local = radius_mask(h, w, cfg.radius).to(device)
    for t in range(1, n_frames):
        ctx = context_frames(t, cfg.n_context)
        labels[t] = propagate_step_windowed(feats[t], feats[ctx], labels[ctx], local, cfg, (h, w))
    return labels.view(n_frames, -1, h, w).cpu()


def onehot_masks(index_map: torch.Tensor, object_ids: list[int]) -> torch.Tensor:
    """(H, W) integer map -> (len(object_ids), H, W) channel i =  ``index_map == object_ids[i]``."""
    return torch.stack([(index_map == i).float() for i in object_ids])
