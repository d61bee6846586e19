"""The small DeepSpeed helpers real scripts import: seeding, logging, memory lines, OnDevice, DeepSpeedConfig,
zero.GatheredParameters, the version parts."""

import logging
import random

import numpy
import pytest
import torch

import dsrun
from dsrun.runtime.utils import see_memory_usage, set_random_seed
from dsrun.utils import log_dist


def test_set_random_seed_seeds_python_numpy_and_torch():
    set_random_seed(7)
    first = (random.random(), numpy.random.rand(), torch.rand(1).item())
    set_random_seed(7)
    assert (random.random(), numpy.random.rand(), torch.rand(1).item()) == first


def test_log_dist_logs_before_the_process_group_and_on_listed_ranks(capsys):
    log_dist("hello", ranks=[0], level=logging.WARNING)
    out = capsys.readouterr().out
    assert "[Rank 0] hello" in out and "test_deepspeed_helpers.py" in out  # the caller's file, not the helper's


def test_see_memory_usage_prints_only_when_forced(capsys):
    see_memory_usage("quiet")
    assert "quiet" not in capsys.readouterr().out
    see_memory_usage("loud", force=True)
    out = capsys.readouterr().out
    assert "loud | CPU used" in out and "process RSS" in out


def test_on_device_builds_on_meta_in_the_dtype_and_restores_the_default():
    with dsrun.OnDevice(dtype=torch.float16, device="meta"):
        layer = torch.nn.Linear(4, 4)
    assert layer.weight.is_meta and layer.weight.dtype == torch.float16
    assert torch.get_default_dtype() == torch.float32 and torch.empty(1).device.type == "cpu"
    with dsrun.OnDevice(device="meta", enabled=False):
        assert not torch.nn.Linear(2, 2).weight.is_meta


def test_deepspeed_config_reads_a_config_outside_initialize(tmp_path, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "4")
    path = tmp_path / "ds.json"
    path.write_text('{"train_batch_size": 32, "gradient_accumulation_steps": 2, "fp16": {"enabled": true},'
                    ' "optimizer": {"type": "Lamb", "params": {"lr": 0.1}}, "zero_optimization": {"stage": 1}}')
    config = dsrun.DeepSpeedConfig(str(path))
    assert (config.train_batch_size, config.train_micro_batch_size_per_gpu, config.gradient_accumulation_steps) == (
        32, 4, 2)
    assert config.fp16_enabled and config.zero_enabled and config.zero_optimization_stage == 1
    assert config.optimizer_name == "lamb" and config.optimizer_params == {"lr": 0.1}


def test_gathered_parameters_is_a_no_op_for_whole_parameters():
    layer = torch.nn.Linear(2, 2)
    with dsrun.zero.GatheredParameters(layer.parameters(), modifier_rank=0):
        layer.weight.data.fill_(1.0)
    with dsrun.zero.GatheredParameters(layer.weight, enabled=False):
        pass
    assert torch.equal(layer.weight, torch.ones(2, 2))


def test_zero_init_names_the_meta_device_instead():
    with pytest.raises(RuntimeError, match="deepspeed.zero.Init is not provided by dsrun: build the model on the meta"):
        dsrun.zero.Init()


def test_version_parts():
    assert (dsrun.__version_major__, dsrun.__version_minor__, dsrun.__version_patch__) == tuple(
        int(p) for p in dsrun.__version__.split("."))
    assert dsrun.__git_hash__ is None or len(dsrun.__git_hash__) == 40
