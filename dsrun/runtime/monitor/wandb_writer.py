"""Weights & Biases through the optional `wandb` package: online with an API key, otherwise offline (no network)."""

from __future__ import annotations

import importlib.util
import netrc
import os
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from dsrun.config import WandbConfig
from dsrun.console import say
from dsrun.errors import UsageError
from dsrun.runtime.monitor.scalars import SAMPLES_PREFIX, step_scalars

_DEFAULT_HOST = "https://api.wandb.ai"


def require_wandb() -> None:
    """Checked on every rank, so a missing package stops all of them with the same message."""
    if importlib.util.find_spec("wandb") is None:
        raise UsageError("wandb.enabled is true but the wandb package is not installed: pip install wandb"
                         " (or pip install 'dsrun[monitor]')")


def _has_api_key() -> bool:
    """WANDB_API_KEY, or the netrc entry `wandb login` writes for the server."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = urlparse(os.environ.get("WANDB_BASE_URL", _DEFAULT_HOST)).hostname or ""
    try:
        return netrc.netrc(os.environ.get("NETRC")).authenticators(host) is not None
    except (OSError, netrc.NetrcParseError):
        return False


def wandb_mode() -> str | None:
    """WANDB_MODE when set; "offline" without an API key, so a run never stops to ask for a login; else wandb's own."""
    explicit = os.environ.get("WANDB_MODE")
    if explicit:
        return explicit
    return None if _has_api_key() else "offline"


class WandbWriter:
    def __init__(self, section: WandbConfig, run_dir: Path, config: dict):
        require_wandb()
        import wandb

        mode = wandb_mode()
        options: dict[str, Any] = {"project": section.project, "group": section.group, "entity": section.team,
                                   "mode": mode, "config": config}
        if not os.environ.get("WANDB_DIR"):  # keep wandb's files with the run's other files unless told otherwise
            options["dir"] = str(run_dir)
        self._run = wandb.init(**options)
        if mode == "offline" and not os.environ.get("WANDB_MODE"):
            say(f"wandb: no API key (WANDB_API_KEY or `wandb login`), logging offline to {self._run.dir};"
                " upload it later with `wandb sync`")

    def log(self, stats) -> None:
        values = {SAMPLES_PREFIX + name: value for name, value in step_scalars(stats).items()}
        values["Train/step"] = stats.step
        self._run.log(values, step=stats.samples)  # DeepSpeed's x-axis: global samples

    def close(self) -> None:
        self._run.finish()
