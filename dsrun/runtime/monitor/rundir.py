"""Where a monitored run writes its files: DeepSpeed's `<output_path>/<job_name>` of each enabled monitor section.

Rule: every distinct directory named by an enabled `csv_monitor` or `tensorboard` section is a run directory and
gets the whole run record (training_metrics.csv, summary.json, config_resolved.json, training_curves.png);
TensorBoard's event files go only to the tensorboard section's directory. DeepSpeed's `wandb` section has no
output_path/job_name, so with wandb alone the run directory is DeepSpeed's default, `./DeepSpeedJobName`. Relative
paths are taken from rank 0's working directory when the engine is built (as DeepSpeed does) and made absolute then,
so a script that changes directory later still writes to the same place.
"""

from __future__ import annotations

from pathlib import Path

from dsrun.config import MonitorConfig
from dsrun.config.run_config import RunConfig
from dsrun.errors import UsageError


def section_dir(section: MonitorConfig) -> Path:
    return (Path(section.output_path or ".") / section.job_name).absolute()


def run_dirs(cfg: RunConfig) -> list[Path]:
    """The run directories of `cfg`, first the csv_monitor's, then the tensorboard's; empty if none is enabled."""
    sections = [section for section in (cfg.csv_monitor, cfg.tensorboard) if section.enabled]
    if not sections and cfg.wandb.enabled:
        sections = [MonitorConfig()]  # DeepSpeed's defaults: output_path "", job_name "DeepSpeedJobName"
    dirs: list[Path] = []
    for section in sections:
        path = section_dir(section)
        if path not in dirs:
            dirs.append(path)
    return dirs


def make_dirs(dirs: list[Path]) -> None:
    for path in dirs:
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise UsageError(f"cannot create the run directory {path} ({err.strerror}): change the monitor's"
                             " output_path/job_name in the config") from None
