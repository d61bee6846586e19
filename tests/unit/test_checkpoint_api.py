"""Checkpoint API edge cases in one process (world size 1): what is loaded when nothing or the wrong thing is there,
tag names, keep_last, and the on-disk layout's crash-safety helpers."""


import re

import pytest
import torch
from torch import nn

import dsrun
from dsrun.runtime.checkpoint import layout


@pytest.fixture
def engine_factory(single_process):
    def make(**config):
        torch.manual_seed(0)
        cfg = {"train_micro_batch_size_per_gpu": 2, "optimizer": {"type": "AdamW", "params": {"lr": 1e-2}}, **config}
        engine, *_ = dsrun.initialize(model=nn.Linear(4, 2), config=cfg)
        return engine

    return make


def train_one_step(engine):
    loss = engine(torch.randn(2, 4)).pow(2).mean()
    engine.backward(loss)
    engine.step()


def test_nothing_to_load_returns_none_with_a_warning(engine_factory, tmp_path, capsys):
    engine = engine_factory()
    assert engine.load_checkpoint(tmp_path / "empty") == (None, None)
    assert "no checkpoint to load" in capsys.readouterr().err


def fails_with_one_line(capsys, message: str, call) -> None:
    """A mistake in a checkpoint call ends the worker with one line and exit code 2, as initialize's do."""
    with pytest.raises(SystemExit) as stopped:
        call()
    assert stopped.value.code == 2
    assert re.search(message, capsys.readouterr().err)


def test_missing_named_tag_is_an_error_listing_what_exists(engine_factory, tmp_path, capsys):
    engine = engine_factory()
    train_one_step(engine)
    engine.save_checkpoint(tmp_path, tag="first")
    fails_with_one_line(capsys, r"tag 'second' not found .*available: first",
                        lambda: engine.load_checkpoint(tmp_path, tag="second"))


def test_default_tag_latest_and_client_state(engine_factory, tmp_path):
    engine = engine_factory()
    train_one_step(engine)
    engine.save_checkpoint(tmp_path, client_state={"epoch": 3})
    assert layout.read_latest(tmp_path) == "global_step1"
    weight = engine.module.weight.detach().clone()
    train_one_step(engine)
    path, client = engine.load_checkpoint(tmp_path)
    assert path.endswith("global_step1") and client == {"epoch": 3}
    assert torch.equal(engine.module.weight, weight) and engine.global_steps == 1


def test_keep_last_prunes_older_checkpoints(engine_factory, tmp_path):
    engine = engine_factory(checkpoint={"keep_last": 2})
    for _ in range(4):
        train_one_step(engine)
        engine.save_checkpoint(tmp_path)
    assert layout.available_tags(tmp_path) == ["global_step3", "global_step4"]


def test_saving_the_same_tag_again_replaces_it(engine_factory, tmp_path):
    engine = engine_factory()
    train_one_step(engine)
    engine.save_checkpoint(tmp_path, tag="last")
    train_one_step(engine)
    engine.save_checkpoint(tmp_path, tag="last")
    assert layout.available_tags(tmp_path) == ["last"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


@pytest.mark.parametrize("tag", ["../escape", ".hidden", "a/b", ""])
def test_bad_tags(engine_factory, tmp_path, tag, capsys):
    engine = engine_factory()
    fails_with_one_line(capsys, "must be a plain name", lambda: engine.save_checkpoint(tmp_path, tag=tag))


def test_a_deepspeed_checkpoint_is_named_as_such(engine_factory, tmp_path, capsys):
    engine = engine_factory()
    (tmp_path / "global_step5").mkdir()
    (tmp_path / "global_step5" / "mp_rank_00_model_states.pt").write_bytes(b"")
    fails_with_one_line(capsys, "DeepSpeed checkpoint", lambda: engine.load_checkpoint(tmp_path, tag="global_step5"))


def test_a_tag_replaced_when_the_save_was_killed_is_still_found(tmp_path):
    replaced = layout.replaced_dir(tmp_path, "t", "abc")
    replaced.mkdir()
    assert layout.find_tag_dir(tmp_path, "t") == replaced


@pytest.mark.parametrize("load_rng_state", [True, False])
def test_rng_states_are_restored_unless_the_config_says_not_to(engine_factory, tmp_path, load_rng_state):
    engine = engine_factory(checkpoint={"load_rng_state": load_rng_state})
    train_one_step(engine)
    engine.save_checkpoint(tmp_path)
    at_save = torch.rand(1)
    torch.manual_seed(123)
    after_seed = torch.rand(1)
    torch.manual_seed(123)
    engine.load_checkpoint(tmp_path)
    # Restored: the next draw continues from the save; left alone (DeepSpeed's way): it continues from the seed.
    assert torch.equal(torch.rand(1), at_save if load_rng_state else after_seed)
