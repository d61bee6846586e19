"""The run config's top level, declared key by key, and parse_run_config: a raw DeepSpeed config dict -> a typed,
validated RunConfig, or one UsageError.

Order: expand DeepSpeed's legacy forms, check every key and value against the catalogue derived from the
declarations (unknown keys get a "did you mean"), build the typed sections with DeepSpeed 0.19.8's defaults, then
reject combinations that cannot run together. Every key present that dsrun does not act on produces one line in
`warnings`. No torch here: the launcher parses configs on login nodes too.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, ClassVar, Mapping

from dsrun.config.batch import ACCUM, MICRO, TRAIN, BatchMath, batch_size, resolve_batch
from dsrun.config.checks import boolean, choice, integer, number, show
from dsrun.config.declare import Section, Unacted, build, catalogue, key, section, unacted_notes
from dsrun.config.optim_section import OptimizerConfig, SchedulerConfig, missing_type_note
from dsrun.config.parallel_sections import ActivationCheckpointingConfig, PipelineConfig
from dsrun.config.sections import AmpConfig, BF16Config, CheckpointConfig, FP16Config, MonitorConfig, WandbConfig
from dsrun.config.unacted_top import UNACTED_TOP_LEVEL
from dsrun.config.validate import auto_paths, validate
from dsrun.config.zero_section import ZeroConfig, expand_legacy_zero
from dsrun.errors import UsageError


@dataclass(frozen=True)
class RunConfig(Section):
    """The whole config: every top-level key dsrun acts on, and (not keys) where it came from and its notes."""

    train_batch_size: int | None = key(batch_size, None, auto=True)  # None: derived by the batch math
    train_micro_batch_size_per_gpu: int | None = key(batch_size, None, auto=True)
    gradient_accumulation_steps: int | None = key(batch_size, None, auto=True)
    optimizer: OptimizerConfig | None = section(OptimizerConfig, optional=True)
    scheduler: SchedulerConfig | None = section(SchedulerConfig, optional=True)
    fp16: FP16Config = section(FP16Config)
    bf16: BF16Config = section(BF16Config, aliases=("bfloat16",), alias_loses=True)  # DeepSpeed's older name
    amp: AmpConfig = section(AmpConfig)  # removed from DeepSpeed 0.19; dsrun maps it to torch autocast
    # DeepSpeed 0.19's default (0.16 had 0.0): clipping is on unless set to 0.
    gradient_clipping: float = key(number(minimum=0), 1.0, auto=True)
    zero: ZeroConfig = section(ZeroConfig, name="zero_optimization")
    zero_allow_untested_optimizer: bool = key(boolean, False)
    prescale_gradients: bool = key(boolean, False)
    gradient_predivide_factor: float = key(number(positive=True), 1.0)
    # "fp16" | "bf16" | "fp32"; None: reduce in fp32.
    communication_data_type: str | None = key(choice("fp16", "bf16", "fp32", fold_case=True), None)
    steps_per_print: int | None = key(integer(minimum=1), None)
    wall_clock_breakdown: bool = key(boolean, False)
    dump_state: bool = key(boolean, False)
    dataloader_drop_last: bool = key(boolean, False)
    # MoE: lay expert-data-parallel ranks out before expert-parallel ones (DeepSpeed's D+E layout).
    use_data_before_expert_parallelism: bool = key(boolean, False)
    seed: int | None = key(integer(minimum=0, maximum=2**32 - 1), None)  # dsrun's own: seeds Python, NumPy, torch
    tensorboard: MonitorConfig = section(MonitorConfig)
    csv_monitor: MonitorConfig = section(MonitorConfig)
    wandb: WandbConfig = section(WandbConfig)
    checkpoint: CheckpointConfig = section(CheckpointConfig)
    pipeline: PipelineConfig = section(PipelineConfig)
    activation_checkpointing: ActivationCheckpointingConfig = section(ActivationCheckpointingConfig)

    raw: Mapping[str, Any] = field(default_factory=dict)  # as written, for the records a run keeps
    source: str = "config"
    warnings: tuple[str, ...] = ()

    unacted: ClassVar[Mapping[str, Unacted]] = UNACTED_TOP_LEVEL

    def batch(self, world_size: int) -> BatchMath:
        """The batch math for `world_size` data-parallel ranks; a combination that does not divide is a UsageError."""
        given = {TRAIN: self.train_batch_size, MICRO: self.train_micro_batch_size_per_gpu,
                 ACCUM: self.gradient_accumulation_steps}
        try:
            return resolve_batch(given, world_size)
        except UsageError as err:
            raise UsageError(f"{self.source}: {err}") from None

    def settle(self, clean: Mapping[str, Any], notes: list[str]) -> RunConfig:
        config = self
        if config.optimizer is not None and not config.optimizer.type:
            notes.append(missing_type_note("optimizer"))
            config = replace(config, optimizer=None)
        if config.scheduler is not None and not config.scheduler.type:
            notes.append(missing_type_note("scheduler"))
            config = replace(config, scheduler=None)
        if config.zero.stage == 3 and (config.prescale_gradients or config.gradient_predivide_factor != 1.0):
            notes.append("prescale_gradients / gradient_predivide_factor are accepted but dsrun does not act on them"
                         " at ZeRO stage 3: FSDP2 averages in the collective itself (with communication_data_type"
                         " fp16 it divides by about sqrt(world) before the sum and the rest after)")
        _reject_contradictions(config)
        return config


CATALOGUE = catalogue(RunConfig)
BATCH_KEYS = (TRAIN, MICRO, ACCUM)


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
    clean = validate(expanded, CATALOGUE)
    notes: list[str] = [legacy_note] if legacy_note else []
    notes.extend(unacted_notes(RunConfig, clean))
    auto = [path for path in auto_paths(raw) if path not in BATCH_KEYS]  # the batch math derives those itself
    if auto:
        shown = ", ".join(auto[:4]) + (f" and {len(auto) - 4} more" if len(auto) > 4 else "")
        notes.append(f'"auto" in {shown}: the script must fill these in before initialize() (Hugging Face\'s Trainer'
                     " does); left \"auto\", a setting takes DeepSpeed's default, and a schedule length stops the run")
    config = build(RunConfig, clean, notes)  # builders append their own notes (deprecations, no-effect settings)
    return replace(config, raw=raw, source=source, warnings=tuple(notes))


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
    for other, block in (("fp16", config.fp16), ("bf16", config.bf16)):
        if block.enabled:
            raise UsageError(
                f"amp.enabled and {other}.enabled are both true: amp already picks the precision (from"
                f" amp.opt_level); keep one of them"
            )
