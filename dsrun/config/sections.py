"""The typed sections of a run config, with DeepSpeed 0.19.8's defaults, built from a validated ("clean") config.

Builders read the clean dict from dsrun.config.validate: values already have their canonical types, and keys given
as null or "auto" are absent, so `.get(key, default)` is all a default needs. Checks that depend on other keys
(ranges that matter only when fp16 is on, for instance) live here, next to the values they guard.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from dsrun.errors import UsageError


@dataclass(frozen=True)
class FP16Config:
    enabled: bool = False
    loss_scale: float = 0.0  # 0 = dynamic loss scaling
    initial_scale_power: int = 16
    loss_scale_window: int = 1000
    hysteresis: int = 2
    consecutive_hysteresis: bool = False
    min_loss_scale: float = 1.0


@dataclass(frozen=True)
class BF16Config:
    enabled: bool = False


@dataclass(frozen=True)
class AmpConfig:
    enabled: bool = False
    opt_level: str = "O1"


@dataclass(frozen=True)
class MonitorConfig:
    enabled: bool = False
    output_path: str = ""
    job_name: str = "DeepSpeedJobName"


@dataclass(frozen=True)
class WandbConfig(MonitorConfig):
    project: str = "deepspeed"
    group: str | None = None
    team: str | None = None


@dataclass(frozen=True)
class CheckpointConfig:
    tag_validation: str = "Warn"  # "Ignore" | "Warn" | "Fail"
    keep_last: int | None = None
    # dsrun's own. Exact resume needs the saved random states; DeepSpeed leaves the generators alone (false).
    load_rng_state: bool = True


# Largest initial_scale_power whose 2**p is still a finite float (torch's scalers keep the scale as a float).
MAX_SCALE_POWER = 1023


def build_fp16(section: Mapping[str, Any]) -> FP16Config:
    config = FP16Config(**{key: section[key] for key in FP16Config.__dataclass_fields__ if key in section})
    if not config.enabled:
        return config  # like DeepSpeed, scaling settings are only judged when they take effect
    if not 0 <= config.initial_scale_power <= MAX_SCALE_POWER:
        raise UsageError(
            f"fp16.initial_scale_power must be an integer from 0 to {MAX_SCALE_POWER}, got {config.initial_scale_power}"
        )
    if config.hysteresis < 1:
        raise UsageError(f"fp16.hysteresis must be a positive integer, got {config.hysteresis}")
    if config.loss_scale == 0:
        if config.loss_scale_window < 1:
            raise UsageError(
                f"fp16.loss_scale_window must be a positive integer, got {config.loss_scale_window}"
                " (dynamic loss scaling doubles the scale after that many clean steps)"
            )
        if config.min_loss_scale <= 0:
            raise UsageError(f"fp16.min_loss_scale must be a positive number, got {config.min_loss_scale:g}")
    return config


def build_bf16(clean: Mapping[str, Any]) -> tuple[BF16Config, str | None]:
    """bf16 from `bf16`, or from its older name `bfloat16` when `bf16` is absent (as DeepSpeed reads them).

    Returns the section and, when both are given, the warning that `bfloat16` is ignored.
    """
    if "bf16" in clean:
        note = None
        if "bfloat16" in clean:
            note = "bfloat16 is accepted but dsrun does not act on it: bf16 is also given, and bf16 wins"
        return BF16Config(enabled=clean["bf16"].get("enabled", False)), note
    return BF16Config(enabled=clean.get("bfloat16", {}).get("enabled", False)), None


def build_amp(section: Mapping[str, Any]) -> AmpConfig:
    return AmpConfig(enabled=section.get("enabled", False), opt_level=section.get("opt_level", "O1"))


def build_monitor(section: Mapping[str, Any]) -> MonitorConfig:
    return MonitorConfig(**{key: section[key] for key in MonitorConfig.__dataclass_fields__ if key in section})


def build_wandb(section: Mapping[str, Any]) -> WandbConfig:
    return WandbConfig(**{key: section[key] for key in WandbConfig.__dataclass_fields__ if key in section})


def build_checkpoint(section: Mapping[str, Any]) -> CheckpointConfig:
    return CheckpointConfig(**{key: section[key] for key in CheckpointConfig.__dataclass_fields__ if key in section})
