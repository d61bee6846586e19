"""dsrun.checkpointing.configure / configure_from: the `activation_checkpointing` section from a dict or a file, the
explicit arguments over it, the run config's section when the script never configures, is_configured and reset as
in DeepSpeed, one warning line for what dsrun cannot do, and the `deepspeed.*` names scripts import it by."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

import dsrun.checkpointing as ckpt
from dsrun.checkpointing import Settings
from dsrun.checkpointing import settings as settings_module
from dsrun.config import parse_run_config
from dsrun.config.parallel_sections import ActivationCheckpointingConfig
from dsrun.errors import UsageError

BOTH_ON = {"train_micro_batch_size_per_gpu": 1,
           "activation_checkpointing": {"cpu_checkpointing": True, "synchronize_checkpoint_boundary": True}}


@pytest.fixture(autouse=True)
def fresh(monkeypatch):
    monkeypatch.delenv("RANK", raising=False)
    monkeypatch.delenv("DSRUN_CONFIG", raising=False)
    settings_module.restore_defaults()
    yield
    settings_module.restore_defaults()


def run_section(section: dict) -> ActivationCheckpointingConfig:
    return parse_run_config({"activation_checkpointing": section}).activation_checkpointing


def test_unconfigured_is_plain_recomputation():
    assert not ckpt.is_configured()
    assert ckpt.active_settings() == Settings(cpu_checkpointing=False, synchronize=False)


def test_configure_from_a_dict():
    ckpt.configure(None, deepspeed_config=BOTH_ON)
    assert ckpt.is_configured()
    assert ckpt.active_settings() == Settings(cpu_checkpointing=True, synchronize=True)


@pytest.mark.parametrize("name, text", [
    ("ds.json", '{\n  // hjson, as DeepSpeed reads it\n  "activation_checkpointing": {"cpu_checkpointing": true,'
                ' "synchronize_checkpoint_boundary": "true"},\n}'),
    ("ds.yaml", "activation_checkpointing:\n  cpu_checkpointing: true\n  synchronize_checkpoint_boundary: true\n"),
])
def test_configure_from_a_path(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    ckpt.configure(None, deepspeed_config=str(path))
    assert ckpt.active_settings() == Settings(cpu_checkpointing=True, synchronize=True)
    settings_module.restore_defaults()
    ckpt.configure(None, deepspeed_config=path)  # a Path too
    assert ckpt.active_settings() == Settings(cpu_checkpointing=True, synchronize=True)


def test_explicit_arguments_override_the_config():
    ckpt.configure(None, deepspeed_config=BOTH_ON, checkpoint_in_cpu=False)
    assert ckpt.active_settings() == Settings(cpu_checkpointing=False, synchronize=True)
    ckpt.configure(None, deepspeed_config={"activation_checkpointing": {}}, synchronize=True)
    assert ckpt.active_settings() == Settings(cpu_checkpointing=False, synchronize=True)


def test_each_configure_replaces_the_previous_one():
    ckpt.configure(None, checkpoint_in_cpu=True, synchronize=True)
    ckpt.configure(None)
    assert ckpt.active_settings() == Settings()


def test_the_run_config_section_applies_without_configure_and_configure_still_wins():
    ckpt.configure_from(run_section({"cpu_checkpointing": True}))
    assert ckpt.active_settings() == Settings(cpu_checkpointing=True)
    # Scripts take is_configured() to mean "the script set DeepSpeed's checkpointing up" (Megatron then swaps in
    # DeepSpeed's RNG tracker): the run's section must not claim that.
    assert not ckpt.is_configured()
    ckpt.configure(None, synchronize=True)  # no config of its own: the run's section stays the base
    assert ckpt.active_settings() == Settings(cpu_checkpointing=True, synchronize=True)
    ckpt.configure(None, deepspeed_config={"activation_checkpointing": {"synchronize_checkpoint_boundary": True}})
    assert ckpt.active_settings() == Settings(synchronize=True)  # the script's own config replaces the run's section


def test_configure_before_initialize_keeps_its_arguments():
    # Megatron configures in initialize_megatron, before deepspeed.initialize hands over the run's section.
    ckpt.configure(object(), checkpoint_in_cpu=False, synchronize=True)
    ckpt.configure_from(run_section({"cpu_checkpointing": True, "synchronize_checkpoint_boundary": False}))
    assert ckpt.active_settings() == Settings(cpu_checkpointing=False, synchronize=True)
    assert ckpt.is_configured()


def test_reset_keeps_the_configuration_as_deepspeed_does():
    # Megatron calls reset() after evaluation; training goes on with the same settings.
    ckpt.configure(None, checkpoint_in_cpu=True)
    ckpt.reset()
    assert ckpt.is_configured() and ckpt.active_settings() == Settings(cpu_checkpointing=True)


def warning_lines(capsys) -> list[str]:
    captured = capsys.readouterr()
    return [line for line in (captured.out + captured.err).splitlines() if line.strip()]


def reason(key: str) -> str:
    return ActivationCheckpointingConfig.unacted[key].reason


def test_partition_activations_without_mpu_is_one_warning_line(capsys):
    ckpt.configure(None, partition_activations=True)
    [line] = warning_lines(capsys)
    assert line.startswith("dsrun: warning: checkpointing.configure: partition_activations=True has no effect: ")
    assert reason("partition_activations") in line and "model parallelism" in line
    assert ckpt.is_configured()


def test_every_setting_dsrun_cannot_do_is_named_in_one_line(capsys):
    ckpt.configure(None, contiguous_checkpointing=True, num_checkpoints=0, profile=True)
    [line] = warning_lines(capsys)
    assert "contiguous_checkpointing=True and num_checkpoints=0 have no effect: " in line
    assert reason("number_checkpoints") in line
    assert "profile=True has no effect: " + reason("profile") in line


def test_settings_from_the_config_are_named_too_and_arguments_override_them(capsys):
    config = {"activation_checkpointing": {"partition_activations": True, "profile": "false"}}
    ckpt.configure(None, deepspeed_config=config)
    [line] = warning_lines(capsys)
    assert "activation_checkpointing.partition_activations=True has no effect" in line and "profile" not in line
    ckpt.configure(None, deepspeed_config=config, partition_activations=False)
    assert warning_lines(capsys) == []


def test_the_run_config_file_is_not_noted_twice(tmp_path, capsys, monkeypatch):
    # Megatron passes the run's config file: the launcher and initialize print its notes already.
    path = tmp_path / "ds.json"
    path.write_text(json.dumps({"activation_checkpointing": {"partition_activations": True, "profile": True}}))
    monkeypatch.setenv("DSRUN_CONFIG", str(path))
    ckpt.configure(None, deepspeed_config=str(path), num_checkpoints=4)
    [line] = warning_lines(capsys)
    assert "num_checkpoints=4" in line and "partition_activations" not in line and "profile" not in line
    other = tmp_path / "other.json"
    other.write_text(path.read_text())
    ckpt.configure(None, deepspeed_config=other)
    [line] = warning_lines(capsys)
    assert "activation_checkpointing.partition_activations=True" in line and "activation_checkpointing.profile" in line


def test_nothing_asked_for_is_silent(capsys):
    ckpt.configure(None, partition_activations=False, contiguous_checkpointing=False, checkpoint_in_cpu=True,
                   synchronize=False, profile=False)
    ckpt.configure_from(run_section({"partition_activations": True}))  # initialize printed the config's note
    assert warning_lines(capsys) == []


def test_an_mpu_is_accepted_with_a_note(capsys):
    ckpt.configure(object(), partition_activations=True)
    [line] = warning_lines(capsys)
    assert "partition_activations=True has no effect" in line
    assert "the mpu is accepted, but no activations are partitioned over its model-parallel group" in line


def test_only_rank_0_warns(capsys, monkeypatch):
    monkeypatch.setenv("RANK", "1")
    ckpt.configure(None, partition_activations=True)
    assert warning_lines(capsys) == []


@pytest.mark.parametrize("kwargs, named", [
    ({"deepspeed_config": {"activation_checkpointing": {"cpu_checkpointing": 3}}},
     "activation_checkpointing.cpu_checkpointing"),
    ({"deepspeed_config": 42}, "takes a config dict or the path"),
    ({"checkpoint_in_cpu": "maybe"}, "checkpoint_in_cpu"),
    ({"num_checkpoints": -1}, "num_checkpoints"),
])
def test_bad_values_are_usage_errors_naming_them(kwargs, named):
    with pytest.raises(UsageError, match=named):
        ckpt.configure(None, **kwargs)
    assert not ckpt.is_configured()


def test_the_deepspeed_module_names_scripts_import(tmp_path):
    script = tmp_path / "script.py"
    script.write_text(textwrap.dedent("""
        import json
        import deepspeed
        lazy = deepspeed.checkpointing.checkpoint  # an attribute of the package, before any import names it
        from deepspeed.runtime.activation_checkpointing import checkpointing  # before the dotted import sets it
        import deepspeed.runtime.activation_checkpointing.checkpointing as ds_checkpointing  # Megatron-DeepSpeed
        from deepspeed.checkpointing import checkpoint, configure
        import dsrun.checkpointing
        print(json.dumps([ds_checkpointing is dsrun.checkpointing, checkpointing is dsrun.checkpointing,
                          deepspeed.checkpointing is dsrun.checkpointing, checkpoint is dsrun.checkpointing.checkpoint,
                          configure is dsrun.checkpointing.configure, lazy is checkpoint]))
    """))
    result = subprocess.run([sys.executable, "-m", "dsrun.alias", str(script)], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.splitlines()[-1]) == [True] * 6
