"""What the config's ZeRO section turns into for the strategies: offload, pinning, unused parameters (typed values,
never the raw dict: "false" as a string once read as true)."""

import torch

from dsrun.config import parse_run_config
from dsrun.runtime.distributed import Placement
from dsrun.runtime.initialize import _strategy_context
from dsrun.runtime.precision import choose_precision


def context(device: str, zero: dict):
    cfg = parse_run_config({"train_micro_batch_size_per_gpu": 1, "zero_optimization": zero})
    placement = Placement(0, 0, 2, torch.device(device), "gloo")
    return _strategy_context(cfg, placement, choose_precision(cfg, torch.device("cpu")))


def test_offload_pin_memory_is_honoured_where_pinning_exists():
    offload = {"stage": 2, "offload_optimizer": {"device": "cpu"}}
    assert context("cuda", offload).offload_pinned  # DeepSpeed's default pin_memory: true
    assert not context("cuda", {**offload, "offload_optimizer": {"device": "cpu", "pin_memory": False}}).offload_pinned
    assert not context("cpu", offload).offload_pinned  # pinned memory needs a GPU
    assert not context("cuda", {"stage": 0, "offload_optimizer": {"device": "cpu"}}).offload_pinned


def test_ignore_unused_parameters_is_the_typed_value():
    assert context("cpu", {"stage": 2}).allow_unused
    assert not context("cpu", {"stage": 2, "ignore_unused_parameters": "false"}).allow_unused


def test_an_auto_schedule_length_nobody_filled_in_is_one_line(single_process, capsys):
    import pytest

    import dsrun

    config = {"train_micro_batch_size_per_gpu": 1, "optimizer": {"type": "SGD", "params": {"lr": 0.1}},
              "scheduler": {"type": "WarmupDecayLR", "params": {"total_num_steps": "auto", "warmup_num_steps": 2}}}
    with pytest.raises(SystemExit) as stopped:
        dsrun.initialize(model=torch.nn.Linear(2, 1), config=config)
    assert stopped.value.code == 2
    assert 'scheduler.params.total_num_steps is "auto", and nothing filled it in' in capsys.readouterr().err
