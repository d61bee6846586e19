"""What a run leaves besides its per-step rows: summary.json (totals at the end) and config_resolved.json.

Nothing here imports torch at module level: the monitor's bookkeeping must work (and be tested) without it.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import resource
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Mapping

from dsrun import __version__
from dsrun.config.batch import ACCUM, MICRO, TRAIN

SUMMARY_JSON = "summary.json"
CONFIG_JSON = "config_resolved.json"


def canonical_json(config: Mapping[str, Any]) -> str:
    return json.dumps(config, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def config_sha256(config: Mapping[str, Any]) -> str:
    """Identifies the config as given: key order, whitespace and comments of the file do not change it."""
    return hashlib.sha256(canonical_json(config).encode()).hexdigest()


def resolved_config(config: Mapping[str, Any], batch) -> dict[str, Any]:
    """The config as given with the batch sizes this run used ("auto" and omitted ones filled in), so the file is a
    config that reproduces the run on the same number of ranks."""
    return {**config, TRAIN: batch.train_batch_size, MICRO: batch.train_micro_batch_size_per_gpu,
            ACCUM: batch.gradient_accumulation_steps}


def peak_memory(device) -> tuple[int, str]:
    """Rank 0's peak: allocated accelerator memory on CUDA, the process's peak resident set size otherwise."""
    if getattr(device, "type", "cpu") == "cuda":
        import torch

        return torch.cuda.max_memory_allocated(device), "torch.cuda.max_memory_allocated"
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return (peak if sys.platform == "darwin" else peak * 1024), "peak RSS (getrusage ru_maxrss)"


def write_json(path: Path, data: Any) -> None:
    """Write via a temporary file and a rename, so a reader never sees half a file."""
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(data, indent=2, allow_nan=False, default=str) + "\n")
    os.replace(partial, path)


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None  # JSON has no NaN/inf


class RunSummary:
    """Running totals over the logged steps: constant memory however long the run."""

    def __init__(self, train_batch_size: int):
        self.train_batch_size = train_batch_size
        self.started = time.time()
        self.steps_logged = 0
        self.last = None
        self.best_loss: float | None = None
        self.best_loss_step: int | None = None
        self.step_time_total = 0.0
        self.first_step_time = 0.0

    def update(self, stats) -> None:
        self.steps_logged += 1
        self.last = stats
        if self.steps_logged == 1:
            self.first_step_time = stats.step_time_s
        self.step_time_total += stats.step_time_s
        if math.isfinite(stats.loss) and (self.best_loss is None or stats.loss < self.best_loss):
            self.best_loss, self.best_loss_step = stats.loss, stats.step

    def _rate(self, steps: int, seconds: float) -> float | None:
        return steps * self.train_batch_size / seconds if steps and seconds > 0 else None

    def to_dict(self, *, ended_by: str, device, config_hash: str, world_size: int) -> dict[str, Any]:
        last = self.last
        memory, memory_source = peak_memory(device)
        ended = time.time()
        return {
            "steps": last.step if last else 0,
            "samples": last.samples if last else 0,
            "skipped_steps": last.skipped_steps if last else 0,
            "final_loss": _finite(last.loss) if last else None,
            "best_loss": self.best_loss,
            "best_loss_step": self.best_loss_step,
            "final_lr": last.lr if last else None,
            # The first step's time also holds start-up (data loader, lazy initialisation), hence both rates.
            "samples_per_sec": self._rate(self.steps_logged, self.step_time_total),
            "samples_per_sec_after_first_step": self._rate(self.steps_logged - 1,
                                                           self.step_time_total - self.first_step_time),
            "mean_step_time_s": self.step_time_total / self.steps_logged if self.steps_logged else None,
            "peak_memory_bytes": memory,
            "peak_memory_source": memory_source,
            "wall_time_s": ended - self.started,
            "started_at": datetime.fromtimestamp(self.started, UTC).isoformat(timespec="seconds"),
            "ended_at": datetime.fromtimestamp(ended, UTC).isoformat(timespec="seconds"),
            "ended_by": ended_by,
            "world_size": world_size,
            "train_batch_size": self.train_batch_size,
            "config_sha256": config_hash,
            "dsrun_version": __version__,
        }
