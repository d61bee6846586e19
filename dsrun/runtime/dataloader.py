"""The loader `initialize(training_data=...)` returns: this rank's share of the data, micro-batch by micro-batch.

It remembers how far the current pass has got, so a checkpoint can resume the data order exactly: after a load,
the next pass continues the interrupted one (same shuffle, skipping the batches already consumed).
"""

from __future__ import annotations

from typing import Any, Iterator

import torch
from torch.utils.data import DataLoader, DistributedSampler, Sampler

from dsrun.utils.repeating_loader import RepeatingLoader  # noqa: F401 - where deepspeed.runtime.dataloader has it


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
    """A DataLoader over a DistributedSampler that reshuffles each pass (set_epoch), like DeepSpeed's loader (its
    pipeline engine's does not shuffle: `shuffle=False`)."""

    def __init__(self, dataset, *, batch_size: int, rank: int, world_size: int, seed: int, drop_last: bool,
                 collate_fn=None, pin_memory: bool = False, shuffle: bool = True):
        self.batch_size = batch_size
        self.world_size = world_size
        self.sampler: DistributedSampler = DistributedSampler(dataset, num_replicas=world_size, rank=rank,
                                                              shuffle=shuffle, seed=seed, drop_last=drop_last)
        self._resumable = _ResumableSampler(self.sampler)
        # Each pass's iterator draws a base seed for worker processes. From torch's global generator that draw would
        # shift every random number after it (dropout masks), and a resumed run, which starts a fresh pass at the
        # checkpoint's step, would part from the uninterrupted one: so it comes from a generator of its own, seeded
        # by the pass, the same in both.
        self._seed = seed
        self._worker_seeds = torch.Generator()
        self.loader = DataLoader(dataset, batch_size=batch_size, sampler=self._resumable, collate_fn=collate_fn,
                                 drop_last=drop_last, pin_memory=pin_memory, generator=self._worker_seeds)
        self.epoch = 0  # the epoch the next pass will use
        self._current = (0, 0)  # (epoch, batches handed out) of the pass in progress
        self._resume_at = 0  # samples of this rank's share to skip in the next pass

    def __iter__(self):
        epoch, skip = self.epoch, self._resume_at
        self.sampler.set_epoch(epoch)
        self._worker_seeds.manual_seed(self._seed + epoch)
        self._resumable.skip = skip
        self.epoch, self._resume_at = epoch + 1, 0
        self._current = (epoch, skip // self.batch_size)
        for batch in self.loader:
            self._current = (epoch, self._current[1] + 1)
            yield batch

    def __len__(self) -> int:
        return len(self.loader)

    def state_dict(self) -> dict[str, Any]:
        epoch, batches = self._current
        # The sampler deals the epoch's shuffled order out round-robin, so after `batches` batches on every rank
        # exactly the first batches × batch_size × world_size samples of that order have been used.
        return {"epoch": epoch, "samples_consumed": batches * self.batch_size * self.world_size}

    def load_state_dict(self, state: dict[str, Any]) -> str | None:
        """The next pass continues epoch `epoch` after the samples already used; at another world size each rank
        skips its share of them. Returns a note when that share is not whole (a few samples repeat or drop)."""
        consumed = state["samples_consumed"]
        self.epoch, self._resume_at = state["epoch"], consumed // self.world_size
        self._current = (self.epoch, self._resume_at // self.batch_size)
        if consumed % self.world_size:
            return (f"the checkpoint had used {consumed} samples of epoch {self.epoch}, which {self.world_size}"
                    f" ranks cannot split evenly: up to {self.world_size - 1} samples repeat or are skipped")
        return None
