"""RepeatingLoader: a loader iterated forever, as DeepSpeed's pipeline examples use it."""

from __future__ import annotations

from typing import Iterable, Iterator


class RepeatingLoader:
    """Iterate a loader forever, restarting it at the end of each pass (for step-counted training loops)."""

    def __init__(self, loader: Iterable):
        self.loader = loader
        self._iterator: Iterator = iter(loader)

    def __iter__(self) -> RepeatingLoader:
        return self

    def __next__(self):
        try:
            return next(self._iterator)
        except StopIteration:
            self._iterator = iter(self.loader)
            return next(self._iterator)
