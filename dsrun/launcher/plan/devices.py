"""The local machine's accelerators, found without importing torch.

A CUDA_VISIBLE_DEVICES set by the user *is* the GPU pool: its ids are the slots (DeepSpeed drops the variable and
then runs on the wrong GPUs). Otherwise GPUs are counted from the driver's /proc entries or `nvidia-smi -L`.
No GPU means CPU workers with gloo.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from dsrun.errors import UsageError

DEVICE_CHOICES = ("auto", "cuda", "cpu")
_PROC_GPUS = Path("/proc/driver/nvidia/gpus")


@dataclass(frozen=True)
class LocalDevices:
    kind: str  # "cuda" or "cpu"
    source: str  # how we know, shown by dry-run
    # slot id -> the token CUDA_VISIBLE_DEVICES needs for it (ids may be UUIDs or MIG names)
    tokens: dict[int, str] = field(default_factory=dict)

    @property
    def backend(self) -> str:
        return "nccl" if self.kind == "cuda" else "gloo"

    def visible_devices(self, slots: list[int]) -> str:
        return ",".join(self.tokens.get(slot, str(slot)) for slot in slots)


def _from_visible_devices(value: str) -> dict[int, str]:
    tokens = [t.strip() for t in value.split(",") if t.strip()]
    if not tokens or tokens == ["-1"]:
        return {}
    if all(t.isdigit() for t in tokens):
        if len(set(tokens)) != len(tokens):
            raise UsageError(f"CUDA_VISIBLE_DEVICES={value!r} names a GPU twice")
        return {int(t): t for t in tokens}
    return dict(enumerate(tokens))


def _count_gpus() -> int:
    if _PROC_GPUS.is_dir():
        count = sum(1 for _ in _PROC_GPUS.iterdir())
        if count:
            return count
    smi = shutil.which("nvidia-smi")
    if smi:
        try:
            out = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=10, check=False).stdout
        except (OSError, subprocess.TimeoutExpired):
            return 0
        return sum(1 for line in out.splitlines() if line.startswith("GPU "))
    return 0


def detect(device: str = "auto", environ: dict[str, str] | None = None) -> LocalDevices:
    """Decide what one local worker slot is: a GPU (and which) or a CPU process."""
    if device not in DEVICE_CHOICES:
        raise UsageError(f"--device must be one of {', '.join(DEVICE_CHOICES)}, got {device!r}")
    env = os.environ if environ is None else environ
    if device == "cpu":
        return LocalDevices("cpu", "--device cpu")
    visible = env.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        tokens = _from_visible_devices(visible)
        if tokens:
            return LocalDevices("cuda", f"CUDA_VISIBLE_DEVICES={visible}", tokens)
        if device == "cuda":
            raise UsageError(f"--device cuda, but CUDA_VISIBLE_DEVICES={visible!r} hides every GPU")
        return LocalDevices("cpu", f"CUDA_VISIBLE_DEVICES={visible!r} hides every GPU")
    count = _count_gpus()
    if count:
        return LocalDevices("cuda", f"{count} GPU(s) found by the NVIDIA driver", {i: str(i) for i in range(count)})
    if device == "cuda":
        raise UsageError("--device cuda, but no NVIDIA GPU was found (no /proc/driver/nvidia/gpus, no nvidia-smi)")
    return LocalDevices("cpu", "no GPU found")


def usable_cores() -> list[int]:
    """CPU ids this process may run on (respects taskset, cgroups cpusets and Slurm's binding)."""
    return sorted(os.sched_getaffinity(0))
