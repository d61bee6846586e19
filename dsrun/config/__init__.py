"""Reading and checking the run's config (DeepSpeed JSON, or YAML). Nothing here imports torch."""

from dsrun.config.batch import BatchMath, resolve_batch
from dsrun.config.loader import find_config_in_args, load_config
from dsrun.config.optim_section import OptimizerConfig, SchedulerConfig
from dsrun.config.run_config import RunConfig, parse_run_config
from dsrun.config.sections import AmpConfig, BF16Config, CheckpointConfig, FP16Config, MonitorConfig, WandbConfig
from dsrun.config.zero_section import OffloadConfig, ZeroConfig

__all__ = [
    "BatchMath", "resolve_batch", "find_config_in_args", "load_config",
    "parse_run_config", "RunConfig", "OptimizerConfig", "SchedulerConfig", "FP16Config", "BF16Config", "AmpConfig",
    "ZeroConfig", "OffloadConfig", "MonitorConfig", "WandbConfig", "CheckpointConfig",
]
