"""What `configure()` and the run's config set for dsrun.checkpointing.checkpoint, and the note on what they cannot.

Three layers, the later winning: the run config's `activation_checkpointing` section (dsrun.initialize hands it over
through `configure_from`), the section of a config the script gives `configure()` itself, and `configure()`'s
explicit arguments. DeepSpeed reads the section only inside `configure(deepspeed_config=...)`, so a section in the
run's config does nothing there unless the script calls it (users trip on this: Lightning#18732,
transformers#32409). Here it takes effect either way, and the script's own `configure()` still has the last word.

Settings dsrun cannot honour (activation partitioning over model-parallel ranks, its contiguous buffer, per-call
profiling) get one warning line on rank 0, with the reason the config declaration gives for the same key.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from typing import Any, Mapping

from dsrun.config import load_config, parse_run_config
from dsrun.config.checks import Check, boolean
from dsrun.config.parallel_sections import ActivationCheckpointingConfig
from dsrun.console import say
from dsrun.errors import UsageError

SECTION = "activation_checkpointing"

# configure()'s arguments that dsrun does not act on -> the config key declaring the same setting (and its reason).
_UNACTED_ARGUMENTS = {
    "partition_activations": "partition_activations",
    "contiguous_checkpointing": "contiguous_memory_optimization",
    "num_checkpoints": "number_checkpoints",
    "profile": "profile",
}


@dataclass(frozen=True)
class Settings:
    """What dsrun.checkpointing.checkpoint does besides recomputing the function in the backward."""

    cpu_checkpointing: bool = False  # the checkpointed function's saved inputs stay in CPU memory
    synchronize: bool = False  # torch.cuda.synchronize() at each checkpoint boundary, when CUDA is in use


@dataclass
class _State:
    run: Settings | None = None  # the run config's section, from configure_from
    script: Settings | None = None  # the section of the config the script gave configure()
    overrides: dict[str, bool] = field(default_factory=dict)  # configure()'s explicit arguments
    configured: bool = False  # the script called configure(): DeepSpeed's is_configured()
    mpu: Any = None  # the model-parallel unit the script gave configure(), kept as DeepSpeed keeps it
    active: Settings = field(default_factory=Settings)


_STATE = _State()


def active_settings() -> Settings:
    """The settings checkpoint() uses now (dsrun's; DeepSpeed keeps them in module globals)."""
    return _STATE.active


def is_configured() -> bool:
    """Whether the script called configure(), as in DeepSpeed.

    The run config's section (configure_from) applies without making this true: scripts ask is_configured() to
    choose DeepSpeed's checkpoint and RNG tracker over their own (Megatron does), and switching them to a tracker
    nobody seeded would break their dropout.
    """
    return _STATE.configured


def reset() -> None:
    """DeepSpeed frees its contiguous checkpoint buffers and drains its CPU offload engine here (Megatron calls it
    after evaluation, whose forwards have no backward to free them). dsrun keeps nothing between calls: what torch's
    checkpoint saves lives in the autograd graph and goes with it. So there is nothing to free, and the
    configuration stays, as in DeepSpeed."""


def configure_from(section: ActivationCheckpointingConfig) -> None:
    """Apply the run config's `activation_checkpointing` section (dsrun.initialize calls this with
    `cfg.activation_checkpointing`), so that the section takes effect when the script never calls configure().

    Only attribute reads of the section: the acted-keys test hands in a recorder that stands in for it. The notes
    on the section's keys dsrun does not act on came with the config parse, which initialize prints.
    """
    _STATE.run = _settings_from(section)
    _settle()


def configure(
    mpu_: Any,
    deepspeed_config: str | os.PathLike[str] | Mapping[str, Any] | None = None,
    partition_activations: bool | None = None,
    contiguous_checkpointing: bool | None = None,
    num_checkpoints: int | None = None,
    checkpoint_in_cpu: bool | None = None,
    synchronize: bool | None = None,
    profile: bool | None = None,
) -> None:
    """DeepSpeed's `deepspeed.checkpointing.configure`: the `activation_checkpointing` section of `deepspeed_config`
    (a dict, or a JSON/YAML path), then the explicit arguments over it. Each call replaces the previous call's
    settings, as in DeepSpeed. Without `deepspeed_config`, the run config's section (configure_from) is the base
    where DeepSpeed would take its defaults.

    `checkpoint_in_cpu` keeps the checkpointed functions' saved inputs in CPU memory; `synchronize` waits for the GPU
    at each checkpoint boundary. The others need model parallelism, which dsrun does not have: they get one warning
    line on rank 0 (those in the run's own config file get the config notes instead, printed at launch and by
    initialize). `mpu_` is accepted (Megatron passes one): its tensor-parallel rank offsets the seed of
    model_parallel_cuda_manual_seed as in DeepSpeed, and nothing is partitioned over it.
    """
    script, unacted = None, {}
    if deepspeed_config is not None:
        section, written = _read_section(deepspeed_config)
        script = _settings_from(section)
        if not _is_the_run_config(deepspeed_config):  # the run config's notes are printed at launch and initialize
            unacted = {key: (f"{SECTION}.{key}", value) for key, value in written.items()
                       if key in ActivationCheckpointingConfig.unacted and value is not None}
    given = {"partition_activations": partition_activations, "contiguous_checkpointing": contiguous_checkpointing,
             "num_checkpoints": num_checkpoints, "profile": profile}
    for argument, value in given.items():
        if value is not None:
            unacted[_UNACTED_ARGUMENTS[argument]] = (argument, value)  # an argument overrides its config key
    unacted = {key: (shown, _declared_check(key)(shown, value)) for key, (shown, value) in unacted.items()}
    overrides = {name: boolean(argument, value) for name, argument, value in (
        ("cpu_checkpointing", "checkpoint_in_cpu", checkpoint_in_cpu), ("synchronize", "synchronize", synchronize))
        if value is not None}

    if mpu_ is not None:
        _STATE.mpu = mpu_
    _STATE.script, _STATE.overrides, _STATE.configured = script, overrides, True
    _settle()
    note = no_effect_note(unacted, mpu_given=mpu_ is not None)
    if note and _is_rank0():
        say(f"warning: {note}")


def no_effect_note(unacted: Mapping[str, tuple[str, Any]], *, mpu_given: bool) -> str | None:
    """One line naming the settings that do nothing here and why; `unacted` maps a config key to (the spelling the
    script used, its checked value). False asks for nothing; a number of checkpoints is named whenever given."""
    by_reason: dict[str, list[str]] = {}
    for key, (shown, value) in unacted.items():
        if value is False:
            continue
        by_reason.setdefault(ActivationCheckpointingConfig.unacted[key].reason, []).append(f"{shown}={value!r}")
    parts = [f"{' and '.join(names)} {'has' if len(names) == 1 else 'have'} no effect: {reason}"
             for reason, names in by_reason.items()]
    if mpu_given:
        parts.append("the mpu is accepted, but no activations are partitioned over its model-parallel group (dsrun"
                     " has no model parallelism)")
    return "checkpointing.configure: " + "; ".join(parts) if parts else None


def tensor_model_parallel_rank() -> int:
    """The mpu's tensor-parallel rank (DeepSpeed's backward-compatible lookup), 0 without an mpu."""
    mpu = _STATE.mpu
    if mpu is None:
        return 0
    for name in ("get_tensor_model_parallel_rank", "get_slice_parallel_rank", "get_model_parallel_rank"):
        if hasattr(mpu, name):
            return int(getattr(mpu, name)())
    raise UsageError("the mpu given to dsrun.checkpointing.configure has no get_tensor_model_parallel_rank()")


def restore_defaults() -> None:
    """Forget every configuration (not in DeepSpeed, whose reset() keeps it): for tests."""
    global _STATE
    _STATE = _State()


def _declared_check(key: str) -> Check:
    """The check the config declares for an unacted key: the same value rules for the argument as for the key."""
    entry = ActivationCheckpointingConfig.unacted[key].entry
    assert callable(entry), f"{SECTION}.{key} is declared as a value"
    return entry


def _settings_from(section: ActivationCheckpointingConfig) -> Settings:
    return Settings(cpu_checkpointing=bool(section.cpu_checkpointing),
                    synchronize=bool(section.synchronize_checkpoint_boundary))


def _settle() -> None:
    base = _STATE.script or _STATE.run or Settings()
    _STATE.active = replace(base, **_STATE.overrides)


def _read_section(config: str | os.PathLike[str] | Mapping[str, Any]) -> tuple[ActivationCheckpointingConfig,
                                                                                Mapping[str, Any]]:
    """The typed section and the section as written (the keys dsrun does not act on are only there)."""
    if isinstance(config, Mapping):
        raw, source = dict(config), "configure(deepspeed_config=...)"
    elif isinstance(config, str | os.PathLike):
        raw, source = load_config(config), os.fspath(config)
    else:
        raise UsageError(f"dsrun.checkpointing.configure(deepspeed_config=...) takes a config dict or the path of a"
                         f" JSON/YAML file, got {type(config).__name__}")
    cfg = parse_run_config(raw, source=source)
    written = raw.get(SECTION)
    return cfg.activation_checkpointing, written if isinstance(written, Mapping) else {}


def _is_the_run_config(config: str | os.PathLike[str] | Mapping[str, Any]) -> bool:
    """Whether `config` is the file the launcher gave this run (DSRUN_CONFIG), as Megatron passes the same path."""
    run_config = os.environ.get("DSRUN_CONFIG")
    if run_config is None or isinstance(config, Mapping):
        return False
    try:
        return os.path.samefile(config, run_config)
    except OSError:
        return False


def _is_rank0() -> bool:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank() == 0
    return int(os.environ.get("RANK", "0")) == 0
