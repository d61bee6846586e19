"""Monitoring: DeepSpeed's `csv_monitor`, `tensorboard` and `wandb` sections, plus the run record.

`monitor_enabled(cfg)` is the same on every rank (it decides whether each step's loss is all-reduced);
`build_monitor(cfg, placement)` returns rank 0's Monitor, or None on other ranks and when no section is enabled.
Where the files go is decided in `rundir.py`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from dsrun.config.run_config import RunConfig
from dsrun.runtime.monitor.csv_writer import CsvWriter
from dsrun.runtime.monitor.monitor import Monitor, Writer
from dsrun.runtime.monitor.rundir import make_dirs, run_dirs, section_dir
from dsrun.runtime.monitor.summary import CONFIG_JSON, RunSummary, config_sha256, resolved_config, write_json

if TYPE_CHECKING:
    from dsrun.runtime.distributed import Placement  # imports torch, which the monitor never needs

__all__ = ["Monitor", "build_monitor", "monitor_enabled"]


def monitor_enabled(cfg: RunConfig) -> bool:
    return cfg.csv_monitor.enabled or cfg.tensorboard.enabled or cfg.wandb.enabled


def build_monitor(cfg: RunConfig, placement: Placement, *, plot: bool = True) -> Monitor | None:
    """Rank 0's Monitor for `cfg` (its writers open, its exit hooks installed), else None.

    Missing optional packages are reported on every rank, so all ranks stop together with the same message.
    """
    if not monitor_enabled(cfg):
        return None
    if cfg.tensorboard.enabled:
        from dsrun.runtime.monitor.tensorboard_writer import require_tensorboard

        require_tensorboard()
    if cfg.wandb.enabled:
        from dsrun.runtime.monitor.wandb_writer import require_wandb

        require_wandb()
    if placement.rank != 0:
        return None
    dirs = run_dirs(cfg)
    make_dirs(dirs)
    batch = cfg.batch(placement.world_size)
    # Written now rather than at the end, so a run killed outright still has its config next to its rows.
    for run_dir in dirs:
        write_json(run_dir / CONFIG_JSON, resolved_config(cfg.raw, batch))
    writers: list[Writer] = []
    try:
        writers.extend(CsvWriter(run_dir) for run_dir in dirs)
        if cfg.tensorboard.enabled:
            from dsrun.runtime.monitor.tensorboard_writer import TensorBoardWriter

            writers.append(TensorBoardWriter(section_dir(cfg.tensorboard)))
        if cfg.wandb.enabled:
            from dsrun.runtime.monitor.wandb_writer import WandbWriter

            writers.append(WandbWriter(cfg.wandb, dirs[0], resolved_config(cfg.raw, batch)))
    except BaseException:
        for writer in writers:
            writer.close()
        raise
    monitor = Monitor(run_dirs=dirs, writers=writers, summary=RunSummary(batch.train_batch_size),
                      device=placement.device, config_hash=config_sha256(cfg.raw), world_size=placement.world_size,
                      plot=plot)
    monitor.install_exit_hooks()  # after the writers: atexit runs last-registered first, so before wandb's own hook
    return monitor
