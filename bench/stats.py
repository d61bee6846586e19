"""Summaries of repeated timings: median for the typical value, min and max so the spread stays visible."""

from __future__ import annotations

import statistics
from collections.abc import Sequence


def summary(values: Sequence[float]) -> dict[str, float | int]:
    # The median, not the mean: one run disturbed by another process on a 2-core machine should not move the figure.
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "n": len(values)}


def paired_ratios(numerators: Sequence[float], denominators: Sequence[float]) -> list[float]:
    """Ratio per repetition: A and B ran back to back, so slow drift of the machine cancels inside each pair."""
    if len(numerators) != len(denominators):
        raise ValueError(f"unpaired samples: {len(numerators)} vs {len(denominators)}")
    return [a / b for a, b in zip(numerators, denominators, strict=True)]
