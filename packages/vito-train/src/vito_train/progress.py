"""What the training loop reports: metrics rows every ``log_every`` steps, the kNN monitor every
``monitor_every``, the progress bar, throughput.

Every rank calls ``after_step`` (the loss and the counters are reduced over ranks at a logging step,
a collective); only rank 0 writes ``metrics.jsonl``, measures the monitor and shows the bar. The loss
is read from the device (``.item()``, a host sync) only at a logging step, never per step.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import torch

from vito_train.distributed import DistEnv, all_reduce_mean, all_reduce_sum
from vito_train.ema import ema_decay
from vito_train.metrics import MetricsLog, plot_loss_curve
from vito_train.monitor import KnnMonitor


class TrainProgress:
    """Throughput window, last logged loss, metrics file, kNN monitor and bar of one ``train`` invocation."""

    def __init__(
        self,
        config: Any,
        run_dir: Path,
        env: DistEnv,
        start_step: int,
        end_step: int,
        *,
        bar: bool,
        knn_monitor: KnnMonitor | None = None,
    ) -> None:
        self.config, self.run_dir, self.env, self.end_step = config, run_dir, env, end_step
        self.knn_monitor = knn_monitor
        self.metrics = MetricsLog(run_dir, start_step) if env.is_main else None
        self.bar = None
        if bar and env.is_main:
            from tqdm import tqdm

            self.bar = tqdm(total=end_step, initial=start_step, unit="step", dynamic_ncols=True)
        self.window_start, self.window_pairs, self.last_loss = time.perf_counter(), 0, math.nan

    def after_step(
        self, state: Any, batch: dict[str, Any], loss: torch.Tensor, counts: list[int], batches: Any
    ) -> None:
        """Count the step's pairs; at a logging step (or the last) reduce, record and show."""
        self.window_pairs += sum(counts)
        step, config, env = state.step, self.config, self.env
        if step % config.log_every == 0 or step == self.end_step:
            self.last_loss = all_reduce_mean(loss.item(), weight=counts[env.rank], env=env)  # global mean
            failed_clips = all_reduce_sum(state.failed_clips, env)
            dropped = all_reduce_sum(batch["dropped"], env)
            now = time.perf_counter()
            pairs_per_s = self.window_pairs / max(now - self.window_start, 1e-9)
            self.window_start, self.window_pairs = now, 0
            if self.metrics is not None:
                self.metrics.log(
                    {
                        "step": step,
                        "loss": self.last_loss,
                        "lr": state.optimizer.param_groups[0]["lr"],
                        "ema_decay": ema_decay(step - 1, config.max_steps, config.ema_base),
                        "pairs_per_s": pairs_per_s,
                        "failed_clips": failed_clips,
                        "dropped_samples": dropped,
                        "loader_worker_deaths": batches.worker_deaths,
                        "skipped_steps": batches.skipped_steps,
                        "bad_cache_shards": batches.bad_cache_shards,
                    }
                )
            if self.bar is not None:
                self.bar.set_postfix(loss=f"{self.last_loss:.3f}", pairs_s=f"{pairs_per_s:.1f}")
        if step % config.monitor_every == 0 or step == self.end_step:
            self.measure_knn(state, state.device)
        if self.bar is not None:
            self.bar.update(1)

    def measure_knn(self, state: Any, device: torch.device) -> None:
        """One kNN monitor measurement of the online encoder (rank 0, when a monitor is set)."""
        if self.knn_monitor is None or self.metrics is None:
            return
        row = self.knn_monitor.measure(state.online.encoder.backbone, device)
        self.window_start += row["monitor_s"]  # throughput counts training time only
        self.metrics.log({"step": state.step, **row})
        if self.bar is not None:
            self.bar.set_postfix(knn20=f"{row['knn20_top1']:.1f}", refresh=False)

    def close(self) -> None:
        if self.metrics is not None:
            self.metrics.close()
            plot_loss_curve(self.run_dir)
        if self.bar is not None:
            self.bar.close()
