"""Batch math: train_batch_size = micro_batch_per_gpu × gradient_accumulation_steps × data-parallel size.

Same rules as DeepSpeed for which keys derive which, but exact: a combination that does not divide is an error
naming the numbers, where DeepSpeed floor-divides silently and fails later (or trains on a different batch).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from dsrun.errors import UsageError

TRAIN = "train_batch_size"
MICRO = "train_micro_batch_size_per_gpu"
ACCUM = "gradient_accumulation_steps"


@dataclass(frozen=True)
class BatchMath:
    train_batch_size: int
    train_micro_batch_size_per_gpu: int
    gradient_accumulation_steps: int
    data_parallel_size: int
    derived: tuple[str, ...]  # which of the three keys were computed rather than given

    def derivation(self) -> str:
        return (
            f"{TRAIN} {self.train_batch_size} = micro {self.train_micro_batch_size_per_gpu}"
            f" × accumulation {self.gradient_accumulation_steps}"
            f" × {self.data_parallel_size} data-parallel rank{'s' if self.data_parallel_size != 1 else ''}"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            TRAIN: self.train_batch_size,
            MICRO: self.train_micro_batch_size_per_gpu,
            ACCUM: self.gradient_accumulation_steps,
            "data_parallel_size": self.data_parallel_size,
            "derived": list(self.derived),
        }


def has_batch_keys(config: Mapping[str, Any]) -> bool:
    return any(config.get(key) is not None for key in (TRAIN, MICRO, ACCUM))


def batch_size(key: str, value: Any) -> int:
    """The check of a batch key's value (absent and "auto" mean "derive it" and never reach it)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise UsageError(f"{key} must be a positive integer or \"auto\", got {value!r}")
    if value <= 0:
        raise UsageError(f"{key} must be a positive integer, got {value}")
    return value


def _read(config: Mapping[str, Any], key: str) -> int | None:
    """A batch key's value: None when absent or "auto" (derive it); otherwise it must be a positive integer."""
    value = config.get(key)
    if value is None or value == "auto":
        return None
    return batch_size(key, value)


def _exact(numerator: int, denominator: int, t: int | None, m: int | None, g: int | None, w: int) -> int:
    if numerator % denominator:
        raise UsageError(
            f"batch sizes do not divide: {TRAIN}={_show(t)}, {MICRO}={_show(m)}, {ACCUM}={_show(g)}"
            f" with {w} data-parallel rank(s); need {TRAIN} = micro × accumulation × {w}"
        )
    return numerator // denominator


def _show(value: int | None) -> str:
    return "auto" if value is None else str(value)


def resolve_batch(config: Mapping[str, Any], data_parallel_size: int) -> BatchMath:
    """Fill in the missing batch keys from the given ones and the data-parallel size W."""
    if data_parallel_size <= 0:
        raise UsageError(f"data-parallel size must be positive, got {data_parallel_size}")
    t, m, g, w = _read(config, TRAIN), _read(config, MICRO), _read(config, ACCUM), data_parallel_size
    derived: list[str] = []
    if t is None and m is None:
        raise UsageError(f"config sets neither {TRAIN} nor {MICRO}: give at least one of them")
    if m is None:
        assert t is not None
        accum = g if g is not None else 1
        m = _exact(t, accum * w, t, None, g, w)
        derived.append(MICRO)
        if g is None:
            g = accum
            derived.append(ACCUM)
    elif t is None:
        if g is None:
            g = 1
            derived.append(ACCUM)
        t = m * g * w
        derived.append(TRAIN)
    elif g is None:
        g = _exact(t, m * w, t, m, None, w)
        derived.append(ACCUM)
    elif t != m * g * w:
        raise UsageError(
            f"batch sizes disagree: {TRAIN}={t} but micro {m} × accumulation {g} × {w} data-parallel rank(s)"
            f" = {m * g * w}; fix one of the three or set it to \"auto\""
        )
    return BatchMath(t, m, g, w, tuple(derived))
