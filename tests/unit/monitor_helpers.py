"""Shared pieces of the monitor tests: a config whose monitors write under a temporary directory, fake steps."""

from __future__ import annotations

import math

import torch

from dsrun.config import parse_run_config
from dsrun.runtime.distributed import Placement
from dsrun.runtime.monitor import build_monitor
from dsrun.runtime.progress import StepStats

BATCH = {"train_micro_batch_size_per_gpu": 4, "gradient_accumulation_steps": 2}  # 16 samples a step on 2 ranks


def config(root, *, csv=True, tensorboard=False, wandb=False, job="job", **extra):
    raw = {**BATCH, **extra}
    if csv:
        raw["csv_monitor"] = {"enabled": True, "output_path": str(root), "job_name": job}
    if tensorboard:
        raw["tensorboard"] = {"enabled": True, "output_path": str(root), "job_name": job}
    if wandb:
        raw["wandb"] = {"enabled": True, "project": "proj", "group": "grp", "team": "team"}
    return parse_run_config(raw)


def placement(rank=0, world_size=2):
    return Placement(rank=rank, local_rank=rank, world_size=world_size, device=torch.device("cpu"), backend="gloo")


def step(n, *, loss=None, applied=True, breakdown=False, loss_scale=None):
    """Step n of a run at 16 samples a step and 0.5 s a step; the loss falls with n unless given."""
    return StepStats(
        step=n, samples=16 * n, loss=loss if loss is not None else 2.0 / n, lr=1e-3 * n, grad_norm=0.5 + n,
        loss_scale=loss_scale, applied=applied, skipped_steps=0 if applied else 1, step_time_s=0.5,
        samples_per_sec=32.0, forward_ms=10.0 * n if breakdown else None, backward_ms=20.0 if breakdown else None,
        optimizer_ms=3.0 if breakdown else None,
    )


def close_enough(a, b):
    return math.isclose(a, b, rel_tol=1e-6)


def build(monitors, cfg, **kwargs):
    monitor = build_monitor(cfg, placement(), plot=False, **kwargs)
    monitors.append(monitor)
    return monitor
