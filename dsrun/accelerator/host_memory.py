"""This process's memory as the CPU accelerator reports it: resident set size (RSS) now and at its peak.

On a CPU the "device memory" a training script asks about is the process's RSS (as in DeepSpeed's CPU accelerator).
DeepSpeed's peak is the largest RSS it happened to sample, which misses every spike between two calls. On Linux
the kernel keeps the true peak (VmHWM in /proc/self/status) and lets the process reset it (writing 5 to
/proc/self/clear_refs), so the peak here is exact there; sampling remains the fallback elsewhere.
"""

from __future__ import annotations

from pathlib import Path

import psutil

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


def _kernel_peak() -> int | None:
    """Peak RSS in bytes since start or the last reset, as the kernel counts it; None where it is not exposed."""
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024  # the kernel prints kB
    except (OSError, ValueError, IndexError):
        return None
    return None


class ProcessMemory:
    """RSS of this process now, its peak, and a reset of the peak (like torch.cuda's peak statistics)."""

    def __init__(self) -> None:
        self._process = psutil.Process()
        self._exact_peak = _kernel_peak() is not None
        # Until the first reset, the peak counts from process start (when the kernel keeps it), as CUDA's does.
        self._sampled_peak = 0
        self.current()

    def current(self) -> int:
        rss = self._process.memory_info().rss
        # Every RSS reported counts toward the peak: the kernel's RSS counters are approximate per read (per-CPU
        # batches), so VmHWM can sit a few pages below an RSS read earlier, and a peak below a reported value is wrong.
        self._sampled_peak = max(self._sampled_peak, rss)
        return rss

    def peak(self) -> int:
        self.current()
        kernel = _kernel_peak() if self._exact_peak else None
        return max(kernel or 0, self._sampled_peak)

    def reset_peak(self) -> None:
        if self._exact_peak:
            try:
                _CLEAR_REFS.write_text("5")
            except OSError:
                # Without the reset the kernel's peak would predate it: from now on only sampling is honest.
                self._exact_peak = False
        self._sampled_peak = 0
        self.current()

    def stats(self) -> dict[str, int]:
        # torch.cuda.memory_stats keys, so code that reads them gets the RSS figures on CPU.
        current, peak = self.current(), self.peak()
        return {
            "allocated_bytes.all.current": current,
            "allocated_bytes.all.peak": peak,
            "reserved_bytes.all.current": current,
            "reserved_bytes.all.peak": peak,
        }

    @staticmethod
    def machine_total() -> int:
        return psutil.virtual_memory().total

    @staticmethod
    def machine_available() -> int:
        return psutil.virtual_memory().available
