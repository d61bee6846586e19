"""Reading and checking the run's config (DeepSpeed JSON, or YAML). Nothing here imports torch."""

from dsrun.config.batch import BatchMath, resolve_batch
from dsrun.config.loader import find_config_in_args, load_config

__all__ = ["BatchMath", "resolve_batch", "find_config_in_args", "load_config"]
