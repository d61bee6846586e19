"""The `zero_optimization` section: stage, offload, bucket sizes, and DeepSpeed's deprecated spellings of them.

Defaults are DeepSpeed 0.19.8's: offload `pin_memory` true, 5e8-element buckets.
Deprecated forms are mapped the way DeepSpeed maps them and noted in a warning:
`"zero_optimization": true` is stage 1 (and `false` stage 0), `cpu_offload: true` is `offload_optimizer` on the CPU,
`cpu_offload_param: true` is `offload_param` on the CPU. `cpu_offload_use_pin_memory`, which DeepSpeed 0.19 reads but
ignores, sets `pin_memory` of the offload dicts that do not set it themselves, as it did when it was current.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from dsrun.errors import UsageError

DEFAULT_BUCKET_SIZE = 500_000_000
DEFAULT_PREFETCH_BUCKET_SIZE = 50_000_000  # DeepSpeed's stage3_prefetch_bucket_size
ZERO = "zero_optimization"


@dataclass(frozen=True)
class OffloadConfig:
    device: str = "none"  # "none" | "cpu" | "nvme"
    pin_memory: bool = True
    nvme_path: str | None = None


@dataclass(frozen=True)
class ZeroConfig:
    stage: int = 0
    offload_optimizer: OffloadConfig | None = None
    offload_param: OffloadConfig | None = None
    reduce_bucket_size: int = DEFAULT_BUCKET_SIZE
    allgather_bucket_size: int = DEFAULT_BUCKET_SIZE
    prefetch_bucket_size: int = DEFAULT_PREFETCH_BUCKET_SIZE
    ignore_unused_parameters: bool = True
    gather_16bit_weights_on_model_save: bool = False  # stage 3: whether save_16bit_model writes a file


def expand_legacy_zero(raw: Mapping[str, Any]) -> tuple[Mapping[str, Any], str | None]:
    """Rewrite DeepSpeed's oldest form, `"zero_optimization": true|false`, as a section; returns the note to show."""
    value = raw.get(ZERO)
    if not isinstance(value, bool):
        return raw, None
    stage = 1 if value else 0
    section: dict[str, Any] = {"stage": stage}
    if stage and "allgather_size" in raw:
        section["allgather_bucket_size"] = raw["allgather_size"]
    expanded = {**raw, ZERO: section}
    note = (f'"{ZERO}": {str(value).lower()} is deprecated: dsrun reads it as {{"stage": {stage}}};'
            f' write "{ZERO}": {{"stage": {stage}}} instead')
    return expanded, note


def _offload(section: Mapping[str, Any] | None, pin_default: bool) -> OffloadConfig | None:
    if section is None:
        return None
    return OffloadConfig(
        device=section.get("device", "none"),
        pin_memory=section.get("pin_memory", pin_default),
        nvme_path=section.get("nvme_path"),
    )


def _from_deprecated(zero: Mapping[str, Any], old: str, new: str, notes: list[str]) -> Mapping[str, Any] | None:
    """The offload dict, taken from `new` or mapped from the deprecated boolean `old`."""
    if old not in zero:
        return zero.get(new)
    if new in zero:
        raise UsageError(f"{ZERO}.{old} and {ZERO}.{new} are both set: remove the deprecated {old}")
    if zero[old]:
        notes.append(f'{ZERO}.{old} is deprecated: dsrun reads it as {new} {{"device": "cpu"}}; write that instead')
        return {"device": "cpu"}
    notes.append(f"{ZERO}.{old} is deprecated: false means no {new}, as dsrun reads it; remove the key")
    return None


def build_zero(zero: Mapping[str, Any], notes: list[str]) -> ZeroConfig:
    """ZeroConfig from the clean `zero_optimization` section; deprecation and no-effect notes go to `notes`."""
    stage = zero.get("stage", 0)
    optimizer_dict = _from_deprecated(zero, "cpu_offload", "offload_optimizer", notes)
    param_dict = _from_deprecated(zero, "cpu_offload_param", "offload_param", notes)
    pin_default = True
    if "cpu_offload_use_pin_memory" in zero:
        pin_default = zero["cpu_offload_use_pin_memory"]
        notes.append(f"{ZERO}.cpu_offload_use_pin_memory is deprecated: dsrun reads it as pin_memory of the offload"
                     " dicts; write pin_memory inside offload_optimizer / offload_param instead")
    config = ZeroConfig(
        stage=stage,
        offload_optimizer=_offload(optimizer_dict, pin_default),
        offload_param=_offload(param_dict, pin_default),
        reduce_bucket_size=zero.get("reduce_bucket_size", DEFAULT_BUCKET_SIZE),
        allgather_bucket_size=zero.get("allgather_bucket_size", DEFAULT_BUCKET_SIZE),
        prefetch_bucket_size=_stage3_setting(zero, "prefetch_bucket_size", DEFAULT_PREFETCH_BUCKET_SIZE),
        ignore_unused_parameters=zero.get("ignore_unused_parameters", True),
        gather_16bit_weights_on_model_save=_stage3_setting(
            zero, "gather_16bit_weights_on_model_save", zero.get("stage3_gather_fp16_weights_on_model_save", False)),
    )
    _check_offload_against_stage(config, optimizer_dict, notes)
    if stage == 3 and not config.ignore_unused_parameters:
        notes.append(f"{ZERO}.ignore_unused_parameters false is accepted but dsrun does not act on it at stage 3:"
                     " FSDP2 reduces a zero gradient for a parameter a forward left unused")
    return config


def _stage3_setting(zero: Mapping[str, Any], name: str, default: Any) -> Any:
    """A stage-3 setting DeepSpeed accepts as `stage3_<name>` or `<name>`; both with different values is an error."""
    prefixed = f"stage3_{name}"
    if prefixed in zero and name in zero and zero[prefixed] != zero[name]:
        raise UsageError(f"{ZERO}.{prefixed} ({zero[prefixed]}) and {ZERO}.{name} ({zero[name]}) are two spellings"
                         " of one setting with different values: keep one")
    return zero.get(prefixed, zero.get(name, default))


def _check_offload_against_stage(config: ZeroConfig, optimizer_dict: Mapping[str, Any] | None,
                                 notes: list[str]) -> None:
    stage = config.stage
    if config.offload_param is not None and config.offload_param.device != "none" and stage < 3:
        notes.append(f"{ZERO}.offload_param is accepted but dsrun does not act on it: only stage 3 partitions"
                     f" parameters, and stage is {stage} (DeepSpeed ignores it there too)")
    ratio = (optimizer_dict or {}).get("ratio", 1.0)
    if ratio < 1 and stage < 3:
        raise UsageError(
            f"{ZERO}.offload_optimizer.ratio {ratio:g} offloads only part of the optimizer, which needs stage 3,"
            f" but stage is {stage}: set stage to 3 or set ratio to 1"
        )
    optimizer = config.offload_optimizer
    if optimizer is not None and optimizer.device != "none" and stage == 0:
        notes.append(f"{ZERO}.offload_optimizer is accepted but dsrun does not act on it: offloading needs ZeRO"
                     " stage 1-3, and stage is 0 (DeepSpeed ignores it there too)")
    for name, offload in (("offload_optimizer", optimizer), ("offload_param", config.offload_param)):
        if offload is not None and offload.device == "nvme":
            notes.append(f'{ZERO}.{name}.device "nvme" is accepted but dsrun does not act on it: dsrun offloads to'
                         ' CPU memory only, so "nvme" offloads to the CPU')
