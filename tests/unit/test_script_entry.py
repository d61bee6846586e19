"""Entry points DeepSpeed scripts call: add_config_arguments (DeepSpeed's flags only; --local_rank accepted whether or
not the script declares it) and init_distributed."""

import argparse

import pytest

import dsrun


def test_a_script_may_declare_local_rank_after_the_call():
    parser = dsrun.add_config_arguments(argparse.ArgumentParser())
    parser.add_argument("--local_rank", type=int, default=-1)  # DeepSpeed's examples do this
    assert parser.parse_args(["--local_rank=3"]).local_rank == 3


def test_local_rank_is_accepted_when_the_script_never_declares_it(monkeypatch):
    monkeypatch.setenv("LOCAL_RANK", "5")
    parser = dsrun.add_config_arguments(argparse.ArgumentParser())
    assert parser.parse_args(["--local_rank=2"]).local_rank == 2
    assert parser.parse_args([]).local_rank == 5
    assert parser.parse_known_args(["--local-rank", "1", "x"])[0].local_rank == 1


def test_deepspeed_flags_and_the_deprecated_deepscale_ones():
    parser = dsrun.add_config_arguments(argparse.ArgumentParser())
    args = parser.parse_args(["--deepspeed", "--deepspeed_config", "ds.json", "--deepscale", "--deepscale_config", "o"])
    got = (args.deepspeed, args.deepspeed_config, args.deepscale, args.deepscale_config)
    assert got == (True, "ds.json", True, "o")
    assert parser.parse_args(["--config", "c.json"]).deepspeed_config == "c.json"


def test_a_script_owning_config_keeps_it():
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", default="model.yaml")
    dsrun.add_config_arguments(parser)
    args = parser.parse_args(["--config", "m.yaml", "--deepspeed_config", "ds.json"])
    assert (args.config, args.deepspeed_config) == ("m.yaml", "ds.json")


def test_deepscale_config_is_read_as_the_config(single_process, tmp_path):
    config = tmp_path / "ds.json"
    config.write_text('{"train_micro_batch_size_per_gpu": 1}')
    args = argparse.Namespace(deepspeed_config=None, deepscale_config=str(config))
    engine, *_ = dsrun.initialize(args=args, model=__import__("torch").nn.Linear(2, 1))
    assert engine.train_micro_batch_size_per_gpu() == 1


@pytest.mark.parametrize("flag", ["--deepspeed_mpi", "--dsrun"])
def test_nothing_else_is_added(flag):
    parser = dsrun.add_config_arguments(argparse.ArgumentParser())
    assert flag not in parser._option_string_actions


def test_nccl_asked_on_a_cpu_worker_runs_on_gloo_with_a_note(single_process, capsys):
    placement = dsrun.init_distributed(dist_backend="nccl")
    assert placement.backend == "gloo"
    assert "dist_backend 'nccl' needs GPUs" in capsys.readouterr().err


def test_a_child_parser_built_from_the_dsrun_parser_accepts_local_rank():
    parent = dsrun.add_config_arguments(argparse.ArgumentParser(add_help=False))
    child = argparse.ArgumentParser(parents=[parent])
    assert child.parse_args(["--local_rank=3", "--deepspeed"]).local_rank == 3
    unrelated = argparse.ArgumentParser()  # parsers without dsrun's arguments are left alone
    with pytest.raises(SystemExit):
        unrelated.parse_args(["--local_rank=3"])
