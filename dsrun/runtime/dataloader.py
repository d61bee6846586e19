"""The loader `initialize(training_data=...)` returns: this rank's share of the data, micro-batch by micro-batch.

It remembers how far the current pass has got, so a checkpoint can resume the data order exactly: after a load,
the next pass continues the interrupted one (same shuffle, skipping the batches already consumed).
"""

from __future__ import annotations

from typing import Any, Iterator

from torch.utils.data import DataLoader, DistributedSampler, Sampler


class _ResumableSampler(Sampler):
    """The DistributedSampler's order for the current epoch, optionally starting a number of samples in."""

    def __init__(self, inner: DistributedSampler):
        self.inner = inner
        self.skip = 0

    def __iter__(self) -> Iterator[int]:
        indices = list(self.inner)[self.skip:]
        self.skip = 0
        return iter(indices)

    def __len__(self) -> int:
        return len(self.inner) - self.skip


class DistributedLoader:
    """A DataLoader over a DistributedSampler that reshuffles each pass (set_epoch), like DeepSpeed's loader."""

    def __init__(self, dataset, *, batch_size: int, rank: int, world_size: int, seed: int, drop_last: bool,
                 collate_fn=None, pin_memory: bool = False):
        self.batch_size = batch_size
        self.sampler = DistributedSampler(dataset, num_replicas=world_size, rank=rank, shuffle=True, seed=seed,
                                          drop_last=drop_last)
        self._resumable = _ResumableSampler(self.sampler)
        self.loader = DataLoader(dataset, batch_size=batch_size, sampler=self._resumable, collate_fn=collate_fn,
                                 drop_last=drop_last, pin_memory=pin_memory)
        self.epoch = 0  # the epoch the next pass will use
        self._current = (0, 0)  # (epoch, batches handed out) of the pass in progress
        self._resume_at = 0

    def __iter__(self):
        epoch, skip = self.epoch, self._resume_at
        self.sampler.set_epoch(epoch)
        self._resumable.skip = skip * self.batch_size
        self.epoch, self._resume_at = epoch + 1, 0
        self._current = (epoch, skip)
        for batch in self.loader:
            self._current = (epoch, self._current[1] + 1)
            yield batch

    def __len__(self) -> int:
        return len(self.loader)

    def state_dict(self) -> dict[str, Any]:
        epoch, consumed = self._current
        return {"epoch": epoch, "batches_consumed": consumed}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """The next pass continues epoch `epoch` after its first `batches_consumed` batches."""
        self.epoch, self._resume_at = state["epoch"], state["batches_consumed"]
        self._current = (self.epoch, self._resume_at)
