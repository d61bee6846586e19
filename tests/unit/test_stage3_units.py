"""Which modules ZeRO stage 3 shards together: runs of sibling blocks up to stage3_prefetch_bucket_size elements."""

import torch
from torch import nn

import dsrun
from dsrun.runtime.strategies.fully_sharded import block_runs, group_units


def linears(*widths):
    return [nn.Linear(w, 1, bias=False) for w in widths]  # w parameter elements each


def test_consecutive_blocks_fill_units_up_to_the_cap():
    blocks = linears(3, 3, 3, 5, 1)
    units = group_units([blocks], max_elements=6)
    assert units == [blocks[0:2], blocks[2:3], blocks[3:5]]


def test_a_block_over_the_cap_is_a_unit_by_itself_and_zero_means_one_block_per_unit():
    blocks = linears(2, 10, 2)
    assert group_units([blocks], max_elements=4) == [[blocks[0]], [blocks[1]], [blocks[2]]]
    assert group_units([blocks], max_elements=0) == [[b] for b in blocks]


def test_units_never_span_two_containers():
    first, second = linears(1, 1), linears(1, 1)
    assert group_units([first, second], max_elements=100) == [first, second]


class EncoderDecoder(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(10, 4)
        self.encoder = nn.Module()
        self.encoder.layers = nn.ModuleList([nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 4)])
        self.decoder = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4))
        self.head = nn.Linear(4, 10)


def test_block_runs_are_the_outermost_containers_entries_with_parameters():
    model = EncoderDecoder()
    layers = model.encoder.layers
    assert block_runs(model) == [[layers[0], layers[2]], list(model.decoder)]
    assert block_runs(model.decoder) == [list(model.decoder)]
    assert block_runs(nn.Linear(2, 2)) == []


class Stack(nn.Module):
    def __init__(self):
        super().__init__()
        self.blocks = nn.ModuleList(nn.Linear(16, 16) for _ in range(3))  # 272 elements each

    def forward(self, x):
        for block in self.blocks:
            x = block(x)
        return x


def fsdp_state_ids(prefetch):
    config = {"train_micro_batch_size_per_gpu": 2, "optimizer": {"type": "AdamW", "params": {"lr": 1e-2}},
              "zero_optimization": {"stage": 3, **prefetch}}
    engine, *_ = dsrun.initialize(model=Stack(), config=config)
    loss = engine(torch.randn(2, 16)).pow(2).mean()
    engine.backward(loss)
    engine.step()
    return [id(block._get_fsdp_state()) for block in engine.module.blocks]


def test_the_engine_shards_blocks_together_by_the_configured_bucket(single_process):
    state = fsdp_state_ids({"stage3_prefetch_bucket_size": 600})
    assert state[0] == state[1] != state[2]  # 272 + 272 fit in 600, the third block starts a new unit


def test_by_default_a_small_model_is_one_unit(single_process):
    state = fsdp_state_ids({})
    assert state[0] == state[1] == state[2]
