"""parse_run_config: a raw DeepSpeed config dict -> a typed, validated RunConfig, or one UsageError.

Order: expand DeepSpeed's legacy forms, check every key and value against the catalogue (unknown keys get a
"did you mean"), build the typed sections with DeepSpeed 0.19.8's defaults, then reject combinations that cannot
run together. Every key present that dsrun does not act on produces one line in `warnings`. No torch here: the
launcher parses configs on login nodes too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from dsrun.config.acted import unacted_warnings
from dsrun.config.batch import BatchMath, check_batch_keys, resolve_batch
from dsrun.config.checks import show
from dsrun.config.keys import BATCH_KEYS
from dsrun.config.optim_section import OptimizerConfig, SchedulerConfig, build_optimizer, build_scheduler
from dsrun.config.sections import (
    AmpConfig,
    BF16Config,
    CheckpointConfig,
    FP16Config,
    MonitorConfig,
    WandbConfig,
    build_amp,
    build_bf16,
    build_checkpoint,
    build_fp16,
    build_monitor,
    build_wandb,
)
from dsrun.config.validate import auto_paths, validate
from dsrun.config.zero_section import ZeroConfig, build_zero, expand_legacy_zero
from dsrun.errors import UsageError

DEFAULT_GRADIENT_CLIPPING = 1.0  # DeepSpeed 0.19's default (0.16 had 0.0): clipping is on unless set to 0


@dataclass(frozen=True)
class RunConfig:
    raw: Mapping[str, Any]
    source: str
    warnings: tuple[str, ...]
    optimizer: OptimizerConfig | None
    scheduler: SchedulerConfig | None
    fp16: FP16Config
    bf16: BF16Config
    amp: AmpConfig
    gradient_clipping: float
    zero: ZeroConfig
    steps_per_print: int | None
    wall_clock_breakdown: bool
    dump_state: bool
    seed: int | None
    dataloader_drop_last: bool
    zero_allow_untested_optimizer: bool
    prescale_gradients: bool
    gradient_predivide_factor: float
    communication_data_type: str | None  # "fp16" | "bf16" | "fp32"; None: reduce in fp32
    tensorboard: MonitorConfig
    csv_monitor: MonitorConfig
    wandb: WandbConfig
    checkpoint: CheckpointConfig

    def batch(self, world_size: int) -> BatchMath:
        """The batch math for `world_size` data-parallel ranks; a combination that does not divide is a UsageError."""
        try:
            return resolve_batch(self.raw, world_size)
        except UsageError as err:
            raise UsageError(f"{self.source}: {err}") from None


def parse_run_config(raw: Mapping[str, Any], *, source: str = "config") -> RunConfig:
    """Validate `raw` (a DeepSpeed config as loaded from JSON/YAML) and build its typed view.

    Any problem is one UsageError whose message starts with `source` (e.g. the file name).
    """
    try:
        return _parse(raw, source)
    except UsageError as err:
        raise UsageError(f"{source}: {err}") from None


def _parse(raw: Mapping[str, Any], source: str) -> RunConfig:
    if not isinstance(raw, Mapping):
        raise UsageError(f"the config must be a mapping of keys to values, got {show(raw)}")
    expanded, legacy_note = expand_legacy_zero(raw)
    clean = validate(expanded)
    check_batch_keys(raw)
    notes: list[str] = [legacy_note] if legacy_note else []
    notes.extend(unacted_warnings(clean))
    auto = [path for path in auto_paths(raw) if path not in BATCH_KEYS]  # the batch math derives those itself
    if auto:
        shown = ", ".join(auto[:4]) + (f" and {len(auto) - 4} more" if len(auto) > 4 else "")
        notes.append(f'"auto" in {shown}: the script must fill these in before initialize() (Hugging Face\'s Trainer'
                     " does); left \"auto\", a setting takes DeepSpeed's default, and a schedule length stops the run")
    bf16, bf16_note = build_bf16(clean)
    if bf16_note:
        notes.append(bf16_note)
    # Builders append their own notes (deprecations, settings with no effect), so they run before the tuple is made.
    optimizer = build_optimizer(clean.get("optimizer", {}), raw.get("optimizer"), notes)
    scheduler = build_scheduler(clean.get("scheduler", {}), raw.get("scheduler"), notes)
    zero = build_zero(clean.get("zero_optimization", {}), notes)
    if zero.stage == 3 and (clean.get("prescale_gradients") or clean.get("gradient_predivide_factor", 1.0) != 1.0):
        notes.append("prescale_gradients / gradient_predivide_factor are accepted but dsrun does not act on them at"
                     " ZeRO stage 3: FSDP2 averages in the collective itself (with communication_data_type fp16 it"
                     " divides by about sqrt(world) before the sum and the rest after)")
    config = RunConfig(
        raw=raw,
        source=source,
        warnings=tuple(notes),
        optimizer=optimizer,
        scheduler=scheduler,
        fp16=build_fp16(clean.get("fp16", {})),
        bf16=bf16,
        amp=build_amp(clean.get("amp", {})),
        gradient_clipping=clean.get("gradient_clipping", DEFAULT_GRADIENT_CLIPPING),
        zero=zero,
        steps_per_print=clean.get("steps_per_print"),
        wall_clock_breakdown=clean.get("wall_clock_breakdown", False),
        dump_state=clean.get("dump_state", False),
        seed=clean.get("seed"),
        dataloader_drop_last=clean.get("dataloader_drop_last", False),
        zero_allow_untested_optimizer=clean.get("zero_allow_untested_optimizer", False),
        prescale_gradients=clean.get("prescale_gradients", False),
        gradient_predivide_factor=clean.get("gradient_predivide_factor", 1.0),
        communication_data_type=clean.get("communication_data_type"),
        tensorboard=build_monitor(clean.get("tensorboard", {})),
        csv_monitor=build_monitor(clean.get("csv_monitor", {})),
        wandb=build_wandb(clean.get("wandb", {})),
        checkpoint=build_checkpoint(clean.get("checkpoint", {})),
    )
    _reject_contradictions(config)
    return config


def _reject_contradictions(config: RunConfig) -> None:
    if config.fp16.enabled and config.bf16.enabled:
        raise UsageError("fp16.enabled and bf16.enabled are both true: train in one precision, set the other to false")
    if not config.amp.enabled:
        return
    if config.zero.stage >= 1:
        raise UsageError(
            f"amp.enabled does not combine with ZeRO (zero_optimization.stage is {config.zero.stage}):"
            " use bf16 or fp16 instead of amp, or set the stage to 0"
        )
    for other, section in (("fp16", config.fp16), ("bf16", config.bf16)):
        if section.enabled:
            raise UsageError(
                f"amp.enabled and {other}.enabled are both true: amp already picks the precision (from"
                f" amp.opt_level); keep one of them"
            )
