"""Atomic checkpoints of the whole training state, and their loading.

Checkpoints hold only tensors and plain Python values (the RNG states included), so they are read
with ``torch.load(weights_only=True)``: a file planted in a run directory, or passed to ``export`` or
``vito-eval --encoder``, cannot run code when it is opened.
"""

from __future__ import annotations

import io
import pickle
import random
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from videonet_curate.storage import atomic_write_bytes

LAST = "last.pt"


class CheckpointError(RuntimeError):
    """A checkpoint that is missing, unreadable, or of another model."""


def rng_state() -> dict[str, Any]:
    """Every global RNG's state as tensors and plain values (loadable with ``weights_only=True``)."""
    numpy_state = np.random.get_state(legacy=False)
    state = {
        "python": random.getstate(),  # (version, tuple of ints, gauss_next): plain values
        "numpy": {
            "bit_generator": numpy_state["bit_generator"],
            "key": torch.from_numpy(numpy_state["state"]["key"].astype(np.int64)),
            "pos": int(numpy_state["state"]["pos"]),
            "has_gauss": int(numpy_state["has_gauss"]),
            "gauss": float(numpy_state["gauss"]),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _numpy_state(saved: Any) -> Any:
    if not isinstance(saved, dict):  # checkpoints written before the tensor form: numpy's own tuple
        return saved
    return {
        "bit_generator": saved["bit_generator"],
        "state": {"key": saved["key"].numpy().astype(np.uint32), "pos": saved["pos"]},
        "has_gauss": saved["has_gauss"],
        "gauss": saved["gauss"],
    }


def restore_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(_numpy_state(state["numpy"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def _legacy_numpy_globals() -> list[Any]:
    """What unpickling a numpy uint32 array needs: checkpoints written before the RNG state was
    stored as a tensor hold numpy's MT19937 key as an ndarray. These build arrays only, never call
    arbitrary code."""
    from numpy._core.multiarray import _reconstruct

    # numpy 1.x pickles name the function under numpy.core
    legacy_name = (_reconstruct, "numpy.core.multiarray._reconstruct")
    return [_reconstruct, legacy_name, np.ndarray, np.dtype, type(np.dtype(np.uint32))]


def _refused_global(exc: BaseException) -> str | None:
    text = str(exc)
    match = re.search(r"GLOBAL\s+([\w.]+)", text) or re.search(r"Unsupported \w+:?\s+([\w.]+)", text)
    return match.group(1) if match else None


def read_torch_file(path: Path, map_location: str | torch.device = "cpu") -> Any:
    """``torch.load(weights_only=True)`` with one-line errors; the error names the file and, for a
    pickle that wants to build other objects (possibly code), the Python global it asked for."""
    try:
        with torch.serialization.safe_globals(_legacy_numpy_globals()):
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        wanted = _refused_global(exc)
        raise CheckpointError(
            f"refused to load {path}: it is a pickle that asks for "
            f"{wanted or 'Python objects other than tensors and plain values'}, which a checkpoint never "
            "holds (it may run code when opened); use only checkpoints written by vito-train or plain "
            "tensor files"
        ) from None
    except Exception as exc:  # torch raises many types for truncated or foreign files
        first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise CheckpointError(f"{path} is not a readable torch file: {first_line}") from None


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """A vito-train checkpoint (a dict with ``format: vito-train/N`` or an ``online`` state dict), read
    weights-only."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}")
    payload = read_torch_file(path, map_location)
    ours = isinstance(payload, dict) and (
        str(payload.get("format", "")).startswith("vito-train/") or isinstance(payload.get("online"), dict)
    )
    if not ours:
        if (
            isinstance(payload, dict)
            and payload
            and all(isinstance(v, torch.Tensor) for v in payload.values())
        ):
            raise CheckpointError(
                f"{path} is a plain state dict of {len(payload)} tensors, not a vito-train checkpoint; "
                "for vito-eval pass it as --encoder torchvision:ARCH:FILE (e.g. torchvision:resnet50:FILE)"
            )
        raise CheckpointError(f"{path} is not a vito-train checkpoint (no 'format: vito-train/N' entry)")
    return payload


def step_checkpoint_name(step: int) -> str:
    return f"step-{step:08d}.pt"
