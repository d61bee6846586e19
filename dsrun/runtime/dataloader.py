"""The loader `initialize(training_data=...)` returns: this rank's share of the data, micro-batch by micro-batch."""

from __future__ import annotations

from torch.utils.data import DataLoader, DistributedSampler


class DistributedLoader:
    """A DataLoader over a DistributedSampler that reshuffles each pass (set_epoch), like DeepSpeed's loader."""

    def __init__(self, dataset, *, batch_size: int, rank: int, world_size: int, seed: int, drop_last: bool,
                 collate_fn=None, pin_memory: bool = False):
        self.sampler = DistributedSampler(dataset, num_replicas=world_size, rank=rank, shuffle=True, seed=seed,
                                          drop_last=drop_last)
        self.loader = DataLoader(dataset, batch_size=batch_size, sampler=self.sampler, collate_fn=collate_fn,
                                 drop_last=drop_last, pin_memory=pin_memory)
        self.epoch = 0

    def __iter__(self):
        self.sampler.set_epoch(self.epoch)
        self.epoch += 1
        return iter(self.loader)

    def __len__(self) -> int:
        return len(self.loader)
