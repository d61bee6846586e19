"""TensorBoard event files through torch's SummaryWriter, with DeepSpeed's tags (x-axis: global samples)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from dsrun.errors import UsageError
from dsrun.runtime.monitor.scalars import SAMPLES_PREFIX, STEPS_PREFIX, step_scalars

_INSTALL = "pip install tensorboard (or pip install 'dsrun[monitor]')"


def require_tensorboard() -> None:
    """Checked on every rank, so a missing package stops all of them with the same message, not rank 0 alone."""
    if importlib.util.find_spec("tensorboard") is None:
        raise UsageError(f"tensorboard.enabled is true but the tensorboard package is not installed: {_INSTALL}")


class TensorBoardWriter:
    def __init__(self, log_dir: Path):
        require_tensorboard()
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as err:  # installed but unusable, e.g. a version torch refuses
            raise UsageError(f"tensorboard.enabled is true but torch cannot use the tensorboard package ({err}):"
                             f" {_INSTALL}") from None
        self.log_dir = log_dir
        self._writer = SummaryWriter(log_dir=str(log_dir))

    def log(self, stats) -> None:
        for name, value in step_scalars(stats).items():
            self._writer.add_scalar(SAMPLES_PREFIX + name, value, stats.samples)
            self._writer.add_scalar(STEPS_PREFIX + name, value, stats.step)
        # As DeepSpeed does: every step reaches the file, so a crash or a kill keeps what was logged.
        self._writer.flush()

    def close(self) -> None:
        self._writer.close()
