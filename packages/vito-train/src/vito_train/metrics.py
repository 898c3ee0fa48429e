"""What a run records: metrics.jsonl, TensorBoard events, a loss-curve PNG."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from videonet_curate.storage import atomic_path, atomic_write_text, json_safe

log = logging.getLogger(__name__)

METRICS_FILE = "metrics.jsonl"
LOSS_PNG = "loss.png"


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    path = Path(run_dir) / METRICS_FILE
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:  # a line cut by a crash
            continue
    return rows


class MetricsLog:
    """Appends one JSON object per logged step; on resume, drops rows past the resumed step."""

    def __init__(self, run_dir: Path, start_step: int, *, tensorboard: bool = True) -> None:
        self.path = Path(run_dir) / METRICS_FILE
        kept = [r for r in read_metrics(run_dir) if r.get("step", 0) <= start_step]
        atomic_write_text(self.path, "".join(json.dumps(json_safe(r), allow_nan=False) + "\n" for r in kept))
        self.handle = self.path.open("a")
        self.writer = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(Path(run_dir) / "tb"), purge_step=start_step + 1)

    def log(self, row: dict[str, Any]) -> None:
        self.handle.write(json.dumps(json_safe(row), allow_nan=False) + "\n")  # NaN -> null
        self.handle.flush()
        if self.writer is not None:
            for key, value in row.items():
                if key != "step" and isinstance(value, int | float):
                    self.writer.add_scalar(f"train/{key}", value, row["step"])

    def close(self) -> None:
        self.handle.close()
        if self.writer is not None:
            self.writer.close()


def plot_loss_curve(run_dir: Path) -> Path | None:
    """loss.png from metrics.jsonl (raw and a running mean); None when nothing was logged."""
    all_rows = read_metrics(run_dir)
    rows = [r for r in all_rows if "loss" in r]
    monitor = [r for r in all_rows if "knn20_top1" in r]
    if not rows:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    steps = np.array([r["step"] for r in rows])
    loss = np.array([r["loss"] for r in rows])
    window = max(1, len(loss) // 20)
    smooth = np.convolve(loss, np.ones(window) / window, mode="valid")
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(steps, loss, alpha=0.35, label="loss")
    ax.plot(steps[window - 1 :], smooth, label=f"running mean ({window})")
    ax.set_xlabel("step")
    ax.set_ylabel("InfoNCE (sum over views and scales)")
    ax.set_title(Path(run_dir).name)
    handles, labels = ax.get_legend_handles_labels()
    if monitor:  # the online kNN monitor, on its own axis
        ax2 = ax.twinx()
        (line,) = ax2.plot(
            [r["step"] for r in monitor], [r["knn20_top1"] for r in monitor], "o-", color="tab:green"
        )
        ax2.set_ylabel("kNN-20 top-1 (%)")
        handles, labels = [*handles, line], [*labels, "kNN-20 top-1 (monitor)"]
    ax.legend(handles, labels)
    fig.tight_layout()
    out = Path(run_dir) / LOSS_PNG
    with atomic_path(out) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
    return out
