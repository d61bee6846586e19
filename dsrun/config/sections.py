"""The precision, monitor and checkpoint sections, declared key by key (see dsrun.config.declare).

Defaults are DeepSpeed 0.19.8's. Checks that depend on other keys (ranges that matter only when fp16 is on, for
instance) live in the section's `settle`, next to the values they guard.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Mapping

from dsrun.config.checks import anything, boolean, choice, integer, number, show, strict_boolean, string
from dsrun.config.declare import Section, Unacted, because, key
from dsrun.errors import UsageError

# Largest initial_scale_power whose 2**p is still a finite float (torch's scalers keep the scale as a float).
MAX_SCALE_POWER = 1023


@dataclass(frozen=True)
class FP16Config(Section):
    enabled: bool = key(boolean, False, auto=True)
    loss_scale: float = key(number(minimum=0), 0.0)  # 0 = dynamic loss scaling
    initial_scale_power: int = key(integer(), 16)
    loss_scale_window: int = key(integer(), 1000)
    hysteresis: int = key(integer(), 2)
    consecutive_hysteresis: bool = key(boolean, False)
    min_loss_scale: float = key(number(), 1.0)

    unacted: ClassVar[Mapping[str, Unacted]] = {
        "auto_cast": Unacted(boolean, "floating inputs are always cast to the half-precision parameters' dtype"
                             " before the forward (a half module fed fp32 tensors can only fail); inputs already in"
                             " half are left alone"),
        "fp16_master_weights_and_grads": Unacted(boolean, "dsrun keeps master weights in fp32"),
    }

    def settle(self, clean: Mapping[str, Any], notes: list[str]) -> FP16Config:
        if not self.enabled:
            return self  # like DeepSpeed, scaling settings are only judged when they take effect
        if not 0 <= self.initial_scale_power <= MAX_SCALE_POWER:
            raise UsageError(f"fp16.initial_scale_power must be an integer from 0 to {MAX_SCALE_POWER},"
                             f" got {self.initial_scale_power}")
        if self.hysteresis < 1:
            raise UsageError(f"fp16.hysteresis must be a positive integer, got {self.hysteresis}")
        if self.loss_scale == 0:
            if self.loss_scale_window < 1:
                raise UsageError(
                    f"fp16.loss_scale_window must be a positive integer, got {self.loss_scale_window}"
                    " (dynamic loss scaling doubles the scale after that many clean steps)"
                )
            if self.min_loss_scale <= 0:
                raise UsageError(f"fp16.min_loss_scale must be a positive number, got {self.min_loss_scale:g}")
        return self


@dataclass(frozen=True)
class BF16Config(Section):
    enabled: bool = key(boolean, False, auto=True)

    unacted: ClassVar[Mapping[str, Unacted]] = because(
        "dsrun keeps master weights and optimizer states in fp32 and reduces gradients in fp32 (or"
        " communication_data_type)",
        immediate_grad_update=boolean, check_grad_overflow=boolean, bf16_master_weights_and_grads=boolean,
        bf16_optimizer_states=boolean,
    )


AMP_OPT_LEVELS = ("O0", "O1", "O2", "O3")
_opt_level_choice = choice(*AMP_OPT_LEVELS, fold_case=True)


def opt_level(path: str, value: Any) -> str:
    """Apex's opt levels start with the letter O; "01" (zero-one) is the classic slip, so name it."""
    if isinstance(value, str) and value[:1] == "0" and f"O{value[1:]}" in AMP_OPT_LEVELS:
        raise UsageError(f'{path} must be one of "O0", "O1", "O2", "O3", got {show(value)}: the first character is'
                         f' the letter O, not zero ("O{value[1:]}")')
    return _opt_level_choice(path, value)


@dataclass(frozen=True)
class AmpConfig(Section):
    enabled: bool = key(boolean, False, auto=True)
    opt_level: str = key(opt_level, "O1", auto=True)

    # DeepSpeed 0.16 passed every `amp` key but `enabled` to apex.amp.initialize; these are the ones Apex takes.
    unacted: ClassVar[Mapping[str, Unacted]] = because(
        "these are Apex options; dsrun runs amp as torch autocast from amp.opt_level",
        **dict.fromkeys(("cast_model_type", "patch_torch_functions", "keep_batchnorm_fp32", "master_weights",
                         "loss_scale", "cast_model_outputs", "num_losses", "verbosity", "min_loss_scale",
                         "max_loss_scale"), anything),
    )


@dataclass(frozen=True)
class MonitorConfig(Section):
    enabled: bool = key(boolean, False)
    output_path: str = key(string, "")
    job_name: str = key(string, "DeepSpeedJobName")


@dataclass(frozen=True)
class WandbConfig(Section):
    enabled: bool = key(boolean, False)
    project: str = key(string, "deepspeed")
    group: str | None = key(string, None)
    team: str | None = key(string, None)


TAG_VALIDATION_MODES = ("Ignore", "Warn", "Fail")

_CHECKPOINT_WRITER = {
    "type": choice("MOCK", "PYTHON", "FAST", fold_case=True),
    "io_buffer_size": anything,
    "io_buffer_double": anything,
    "show_statistics": anything,
    "data_parallel": choice("REPLICA", "SOCKET", "MACHINE", fold_case=True),
    "decoupled": anything,
    "io_multiplier": anything,
}


@dataclass(frozen=True)
class CheckpointConfig(Section):
    tag_validation: str = key(choice(*TAG_VALIDATION_MODES, fold_case=True), "Warn")
    keep_last: int | None = key(integer(minimum=1), None)  # dsrun's own: how many tags to keep in the save directory
    # dsrun's own. Exact resume needs the saved random states; DeepSpeed leaves the generators alone (false).
    load_rng_state: bool = key(boolean, True)
    # dsrun's own, for jobs that survive failures and preemption (README "Fault tolerance"): where the engine saves
    # by itself, every save_interval optimizer steps and when SIGTERM asks it to stop; auto_resume loads the newest
    # complete checkpoint there at initialize (a restarted or requeued job goes on where it stopped).
    save_dir: str | None = key(string, None)
    save_interval: int | None = key(integer(minimum=1), None)
    auto_resume: bool = key(boolean, False)

    unacted: ClassVar[Mapping[str, Unacted]] = {
        "load_universal": Unacted(boolean, "dsrun's checkpoints (torch.distributed.checkpoint) load at any world"
                                  " size, so there is no separate universal format"),
        **because("dsrun writes checkpoints with torch.distributed.checkpoint, which has no such setting",
                  use_node_local_storage=boolean, parallel_write={"pipeline_stage": strict_boolean},
                  checkpoint_serialization=anything, writer=_CHECKPOINT_WRITER),
    }

    def settle(self, clean: Mapping[str, Any], notes: list[str]) -> CheckpointConfig:
        if self.save_dir is None:
            for name in ("save_interval", "auto_resume"):
                if clean.get(name) not in (None, False):
                    raise UsageError(f"checkpoint.{name} needs checkpoint.save_dir: the directory the engine saves"
                                     " to and resumes from")
        return self
