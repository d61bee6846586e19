"""The engine's loader resumes an interrupted pass exactly, also at another world size (no process group needed)."""

import torch
from torch.utils.data import TensorDataset

from dsrun.runtime.dataloader import DistributedLoader

DATA = TensorDataset(torch.arange(40))


def loader(world, rank):
    return DistributedLoader(DATA, batch_size=2, rank=rank, world_size=world, seed=3, drop_last=False)


def items(batches):
    return [int(v) for batch in batches for v in batch[0]]


def test_same_world_size_continues_where_it_stopped():
    first = loader(2, 0)
    it = iter(first)
    seen = items(next(it) for _ in range(3))
    resumed = loader(2, 0)
    resumed.load_state_dict(first.state_dict())
    assert seen + items(resumed) == items(loader(2, 0))  # one uninterrupted pass


def test_two_ranks_resumed_on_one_use_every_sample_exactly_once():
    used = []
    states = []
    for rank in (0, 1):
        part = loader(2, rank)
        it = iter(part)
        used += items(next(it) for _ in range(3))
        states.append(part.state_dict())
    assert states[0] == states[1] == {"epoch": 0, "samples_consumed": 12}
    single = loader(1, 0)
    assert single.load_state_dict(states[0]) is None
    rest = items(single)
    assert sorted(used + rest) == list(range(40))
    assert items(single)  # the next pass is a new epoch, from its start
    assert single.state_dict()["epoch"] == 1


def test_an_uneven_split_is_reported():
    resumed = loader(3, 0)
    assert "cannot split evenly" in resumed.load_state_dict({"epoch": 0, "samples_consumed": 10})
