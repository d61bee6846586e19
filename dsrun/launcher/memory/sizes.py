"""Reading the memory flags' numbers (parameter counts, byte sizes) and writing byte sizes for people."""

from __future__ import annotations

import math
import re

from dsrun.errors import UsageError

_COUNT_SUFFIX = {"": 1, "k": 10**3, "m": 10**6, "b": 10**9, "g": 10**9, "t": 10**12}
# Binary with an "i" and for a bare letter (as `free -g` and nvidia-smi's MiB); decimal when the "B" is spelled out
# without the "i" (disk makers' GB).
_BYTE_SUFFIX = {
    "": 1, "b": 1,
    "k": 2**10, "kib": 2**10, "kb": 10**3,
    "m": 2**20, "mib": 2**20, "mb": 10**6,
    "g": 2**30, "gib": 2**30, "gb": 10**9,
    "t": 2**40, "tib": 2**40, "tb": 10**12,
}
_NUMBER = re.compile(r"^\s*([0-9][0-9_]*(?:\.[0-9]*)?(?:e[+-]?[0-9]+)?)\s*([a-z]*)\s*$", re.IGNORECASE)


def _split(text: str, flag: str, suffixes: dict[str, int], example: str) -> float:
    match = _NUMBER.match(text)
    unit = match.group(2).lower() if match else ""
    if not match or unit not in suffixes:
        raise UsageError(f"{flag} {text!r} is not a number: write e.g. {example}")
    value = float(match.group(1).replace("_", "")) * suffixes[unit]
    if not math.isfinite(value):
        raise UsageError(f"{flag} {text!r} is too large to be a size: write e.g. {example}")
    if round(value) < 1:  # 0.1 parameters or 1e-3 bytes would silently count as none
        raise UsageError(f"{flag} {text!r} must be 1 or more: write e.g. {example}")
    return value


def parse_count(text: str, flag: str = "--model-params") -> int:
    """A parameter count: 7000000000, 7e9, 7B, 1.3b, 350M, 125k (B and G both mean 10**9)."""
    return round(_split(text, flag, _COUNT_SUFFIX, "7e9, 7B, 1.3B or 350M"))


def parse_bytes(text: str, flag: str = "--device-memory") -> int:
    """A byte size: 80GiB (or 80G: binary), 80GB (decimal), 81920MiB, or plain bytes."""
    return round(_split(text, flag, _BYTE_SUFFIX, "80GiB, 80G, 40GB or 81920MiB"))


def show_bytes(n: float) -> str:
    """Binary units with three significant digits: 1.50 GiB, 768 MiB, 12.0 KiB."""
    for unit, size in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= size:
            value = n / size
            return f"{value:#.3g} {unit}" if value < 100 else f"{value:.0f} {unit}"
    return f"{int(n)} B"


def show_count(n: int) -> str:
    """7000000000 -> '7.00B', 350000000 -> '350M'."""
    for unit, size in (("T", 10**12), ("B", 10**9), ("M", 10**6), ("k", 10**3)):
        if n >= size:
            value = n / size
            return f"{value:#.3g}{unit}" if value < 100 else f"{value:.0f}{unit}"
    return str(n)
