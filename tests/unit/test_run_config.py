"""parse_run_config on realistic DeepSpeed configs: typed values, defaults, warnings, and every refusal's message."""

import re
from pathlib import Path

import pytest

from dsrun.config import RunConfig, load_config, parse_run_config
from dsrun.errors import UsageError

NOT_ACTED = "is accepted but dsrun does not act on it"
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def warned_paths(config: RunConfig) -> set[str]:
    """The key paths the not-acted-on warnings name."""
    return {line.split(" ", 1)[0] for line in config.warnings if NOT_ACTED in line}


# ZeRO-3 with CPU offload of optimizer and parameters, as DeepSpeed's ZeRO-Infinity tutorial sets it up.
ZERO3_OFFLOAD = {
    "train_batch_size": 64,
    "train_micro_batch_size_per_gpu": 4,
    "optimizer": {"type": "Adam", "params": {"lr": 1e-4, "betas": [0.9, 0.999], "eps": 1e-8, "weight_decay": 3e-7}},
    "fp16": {"enabled": True},
    "zero_optimization": {
        "stage": 3,
        "offload_optimizer": {"device": "cpu", "pin_memory": True},
        "offload_param": {"device": "cpu", "pin_memory": False},
        "overlap_comm": True,
        "contiguous_gradients": True,
        "sub_group_size": 1e9,
        "reduce_bucket_size": 1e6,
        "stage3_prefetch_bucket_size": 0.94e6,
        "stage3_param_persistence_threshold": 1e4,
        "stage3_max_live_parameters": 1e9,
        "stage3_max_reuse_distance": 1e9,
        "stage3_gather_16bit_weights_on_model_save": True,
    },
}


def test_zero3_offload_example():
    config = parse_run_config(ZERO3_OFFLOAD)
    zero = config.zero
    assert zero.stage == 3
    assert (zero.offload_optimizer.device, zero.offload_optimizer.pin_memory) == ("cpu", True)
    assert (zero.offload_param.device, zero.offload_param.pin_memory) == ("cpu", False)
    assert zero.reduce_bucket_size == 1_000_000 and isinstance(zero.reduce_bucket_size, int)
    assert zero.allgather_bucket_size == 500_000_000
    assert zero.prefetch_bucket_size == 940_000
    assert parse_run_config({"zero_optimization": {"prefetch_bucket_size": 7}}).zero.prefetch_bucket_size == 7
    assert config.optimizer.type == "Adam" and config.optimizer.params["betas"] == [0.9, 0.999]
    assert config.fp16.enabled and config.fp16.initial_scale_power == 16 and config.fp16.hysteresis == 2
    assert config.gradient_clipping == 1.0  # DeepSpeed 0.19's default
    assert warned_paths(config) == {
        f"zero_optimization.{key}" for key in (
            "overlap_comm", "contiguous_gradients", "sub_group_size", "stage3_param_persistence_threshold",
            "stage3_max_live_parameters", "stage3_max_reuse_distance")
    }  # fmt: skip
    assert config.zero.gather_16bit_weights_on_model_save  # read by engine.save_16bit_model
    assert config.batch(8).gradient_accumulation_steps == 2
    assert config.raw is ZERO3_OFFLOAD


def test_fp16_with_every_key():
    raw = {
        "train_micro_batch_size_per_gpu": 2,
        "fp16": {
            "enabled": True, "auto_cast": True, "loss_scale": 0, "initial_scale_power": 12, "loss_scale_window": 500,
            "hysteresis": 3, "consecutive_hysteresis": True, "min_loss_scale": 0.5,
            "fp16_master_weights_and_grads": False,
        },
        "zero_optimization": {"stage": 2},
    }  # fmt: skip
    fp16 = parse_run_config(raw).fp16
    assert (fp16.enabled, fp16.loss_scale, fp16.initial_scale_power) == (True, 0.0, 12)
    assert (fp16.loss_scale_window, fp16.hysteresis, fp16.consecutive_hysteresis, fp16.min_loss_scale) == (
        500, 3, True, 0.5)
    assert warned_paths(parse_run_config(raw)) == {"fp16.fp16_master_weights_and_grads", "fp16.auto_cast"}


def test_bf16_warmup_decay_tensorboard():
    raw = {
        "train_batch_size": 32,
        "gradient_accumulation_steps": 4,
        "bf16": {"enabled": True},
        "optimizer": {"type": "AdamW", "params": {"lr": 3e-4, "weight_decay": 0.1}},
        "scheduler": {"type": "WarmupDecayLR", "params": {
            "total_num_steps": 10000, "warmup_min_lr": 0, "warmup_max_lr": 3e-4, "warmup_num_steps": 500,
            "warmup_type": "linear"}},
        "tensorboard": {"enabled": True, "output_path": "runs/", "job_name": "gpt-small"},
        "steps_per_print": 100,
        "wall_clock_breakdown": True,
    }  # fmt: skip
    config = parse_run_config(raw)
    assert config.bf16.enabled and not config.fp16.enabled
    assert config.scheduler.type == "WarmupDecayLR" and config.scheduler.params["total_num_steps"] == 10000
    assert config.tensorboard.enabled and config.tensorboard.output_path == "runs/"
    assert config.tensorboard.job_name == "gpt-small"
    assert not config.csv_monitor.enabled and not config.wandb.enabled
    assert (config.steps_per_print, config.wall_clock_breakdown) == (100, True)
    assert config.warnings == ()
    assert config.batch(2).train_micro_batch_size_per_gpu == 4


# Hugging Face Transformers' ZeRO-3 template: the Trainer fills every "auto" before DeepSpeed sees it.
HF_ZERO3_AUTO = {
    "fp16": {"enabled": "auto", "loss_scale": 0, "loss_scale_window": 1000, "initial_scale_power": 16,
             "hysteresis": 2, "min_loss_scale": 1},
    "bf16": {"enabled": "auto"},
    "optimizer": {"type": "AdamW", "params": {"lr": "auto", "betas": "auto", "eps": "auto", "weight_decay": "auto"}},
    "scheduler": {"type": "WarmupDecayLR", "params": {"warmup_min_lr": "auto", "warmup_max_lr": "auto",
                                                      "warmup_num_steps": "auto", "total_num_steps": "auto"}},
    "zero_optimization": {
        "stage": 3, "offload_optimizer": {"device": "cpu", "pin_memory": True},
        "offload_param": {"device": "cpu", "pin_memory": True}, "overlap_comm": True, "contiguous_gradients": True,
        "sub_group_size": 1e9, "reduce_bucket_size": "auto", "stage3_prefetch_bucket_size": "auto",
        "stage3_param_persistence_threshold": "auto", "stage3_max_live_parameters": 1e9,
        "stage3_max_reuse_distance": 1e9, "stage3_gather_16bit_weights_on_model_save": True,
    },
    "gradient_accumulation_steps": "auto",
    "gradient_clipping": "auto",
    "steps_per_print": 2000,
    "train_batch_size": "auto",
    "train_micro_batch_size_per_gpu": "auto",
    "wall_clock_breakdown": False,
}  # fmt: skip


def test_hf_all_auto_template():
    config = parse_run_config(HF_ZERO3_AUTO)
    assert not config.fp16.enabled and not config.bf16.enabled
    assert config.optimizer.params == {} and config.optimizer.auto_params == ("lr", "betas", "eps", "weight_decay")
    assert config.scheduler.auto_params == ("warmup_min_lr", "warmup_max_lr", "warmup_num_steps", "total_num_steps")
    assert config.gradient_clipping == 1.0
    assert config.zero.reduce_bucket_size == 500_000_000
    assert config.zero.prefetch_bucket_size == 50_000_000  # "auto" is DeepSpeed's default
    # "auto" values ask for nothing, so they draw no warning; the 1e9 settings and the flags do.
    assert warned_paths(config) == {
        f"zero_optimization.{key}" for key in (
            "overlap_comm", "contiguous_gradients", "sub_group_size", "stage3_max_live_parameters",
            "stage3_max_reuse_distance")
    }  # fmt: skip
    with pytest.raises(UsageError, match="sets neither train_batch_size nor train_micro_batch_size_per_gpu"):
        config.batch(2)


def test_defaults_of_an_empty_config():
    config = parse_run_config({})
    assert (config.optimizer, config.scheduler, config.steps_per_print, config.seed) == (None, None, None, None)
    assert config.zero.stage == 0 and config.zero.offload_optimizer is None
    assert config.amp.opt_level == "O1" and not config.amp.enabled
    assert config.checkpoint.tag_validation == "Warn" and config.checkpoint.keep_last is None
    assert config.wandb.project == "deepspeed" and config.gradient_predivide_factor == 1.0
    assert config.warnings == ()


def test_deprecated_forms_are_mapped_with_a_note():
    config = parse_run_config({"zero_optimization": True, "allgather_size": 2e8})
    assert config.zero.stage == 1 and config.zero.allgather_bucket_size == 200_000_000
    assert any('"zero_optimization": true is deprecated' in line for line in config.warnings)

    config = parse_run_config({"zero_optimization": {
        "stage": 3, "cpu_offload": True, "cpu_offload_param": True, "cpu_offload_use_pin_memory": False}})
    assert (config.zero.offload_optimizer.device, config.zero.offload_optimizer.pin_memory) == ("cpu", False)
    assert (config.zero.offload_param.device, config.zero.offload_param.pin_memory) == ("cpu", False)
    deprecated = [line.split(" ", 1)[0] for line in config.warnings if "deprecated" in line]
    assert deprecated == ["zero_optimization.cpu_offload", "zero_optimization.cpu_offload_param",
                          "zero_optimization.cpu_offload_use_pin_memory"]
    assert warned_paths(config) == set()


def test_bfloat16_alias_and_amp():
    assert parse_run_config({"bfloat16": {"enabled": True}}).bf16.enabled
    both = parse_run_config({"bf16": {"enabled": False}, "bfloat16": {"enabled": True}})
    assert not both.bf16.enabled and warned_paths(both) == {"bfloat16"}
    amp = parse_run_config({"amp": {"enabled": True, "opt_level": "o2", "keep_batchnorm_fp32": True}}).amp
    assert (amp.enabled, amp.opt_level) == (True, "O2")
    assert warned_paths(parse_run_config({"amp": {"enabled": True, "verbosity": 0}})) == {"amp.verbosity"}


def test_monitors_checkpoint_and_dsrun_keys():
    config = parse_run_config({
        "wandb": {"enabled": True, "project": "p", "group": "g", "team": "t"},
        "csv_monitor": {"enabled": True, "output_path": "/tmp/csv", "job_name": "j"},
        "comet": {"enabled": True, "project": "x"},
        "comms_logger": {"enabled": False, "verbose": True},
        "flops_profiler": {"enabled": True, "profile_step": 5},
        "checkpoint": {"tag_validation": "fail", "keep_last": 3, "load_universal": True},
        "seed": 1234,
        "dataloader_drop_last": True,
        "prescale_gradients": True,
        "gradient_predivide_factor": 2,
        "zero_allow_untested_optimizer": True,
        "dump_state": True,
    })
    assert (config.wandb.project, config.wandb.group, config.wandb.team) == ("p", "g", "t")
    assert config.csv_monitor.output_path == "/tmp/csv" and config.csv_monitor.job_name == "j"
    assert (config.checkpoint.tag_validation, config.checkpoint.keep_last) == ("Fail", 3)
    assert (config.seed, config.dataloader_drop_last, config.prescale_gradients) == (1234, True, True)
    assert (config.gradient_predivide_factor, config.zero_allow_untested_optimizer, config.dump_state) == (
        2.0, True, True)
    # comms_logger is switched off, so DeepSpeed would ignore it too: no warning for it.
    assert warned_paths(config) == {"comet", "flops_profiler", "checkpoint.load_universal"}


def test_communication_data_type_and_the_stage_3_scaling_note():
    config = parse_run_config({"communication_data_type": "BF16", "zero_optimization": {"stage": 2},
                               "gradient_predivide_factor": 4})
    assert config.communication_data_type == "bf16" and config.warnings == ()
    assert parse_run_config({}).communication_data_type is None
    stage3 = parse_run_config({"prescale_gradients": True, "zero_optimization": {"stage": 3}})
    assert stage3.warnings == ("prescale_gradients / gradient_predivide_factor are accepted but dsrun does not act on"
                               " them at ZeRO stage 3: FSDP2 averages in the collective itself (with"
                               " communication_data_type fp16 it divides by about sqrt(world) before the sum and the"
                               " rest after)",)


def test_removed_deepspeed_sections_load_with_a_warning():
    config = parse_run_config({"elasticity": {"enabled": True, "max_train_batch_size": 64},
                               "sparse_attention": {"mode": "fixed"},
                               "zero_optimization": {"stage": 1, "mics_shard_size": 8}})
    assert warned_paths(config) == {"elasticity", "sparse_attention", "zero_optimization.mics_shard_size"}
    assert all("removed in DeepSpeed 0.19" in line for line in config.warnings)


def test_lax_values_as_deepspeed_reads_them():
    config = parse_run_config({"fp16": {"enabled": "true", "loss_scale_window": "500"},
                               "zero_optimization": {"stage": 2.0, "reduce_bucket_size": "5e8"},
                               "gradient_clipping": 0})
    assert config.fp16.enabled is True and config.fp16.loss_scale_window == 500
    assert config.zero.stage == 2 and config.zero.reduce_bucket_size == 500_000_000
    assert config.gradient_clipping == 0.0


def test_offload_notes():
    stage0 = parse_run_config({"zero_optimization": {"offload_optimizer": {"device": "cpu"}}})
    assert warned_paths(stage0) == {"zero_optimization.offload_optimizer"}
    nvme = parse_run_config({"zero_optimization": {"stage": 3, "offload_param": {"device": "nvme",
                                                                                   "nvme_path": "/local"}}})
    assert nvme.zero.offload_param.device == "nvme"
    assert warned_paths(nvme) == {"zero_optimization.offload_param.device",
                                  "zero_optimization.offload_param.nvme_path"}


def test_optimizer_or_scheduler_without_type_builds_nothing():
    config = parse_run_config({"optimizer": {"params": {"lr": 0.1}}, "scheduler": {}})
    assert config.optimizer is None and config.scheduler is None
    assert warned_paths(config) == {"optimizer", "scheduler"}


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"fp16": {"enabled": True, "bf16": 1}}, "fp16.bf16 is not a DeepSpeed config key: did you mean bf16?"),
        ({"fp16": {"enabled": True}, "bf16": {"enabled": True}}, "fp16.enabled and bf16.enabled are both true"),
        ({"amp": {"enabled": True}, "zero_optimization": {"stage": 1}},
         r"amp.enabled does not combine with ZeRO \(zero_optimization.stage is 1\)"),
        ({"amp": {"enabled": True}, "bf16": {"enabled": True}}, "amp.enabled and bf16.enabled are both true"),
        ({"amp": {"enabled": True}, "fp16": {"enabled": True}}, "amp.enabled and fp16.enabled are both true"),
        ({"zero_optimization": {"stage": 1, "offload_optimizer": {"device": "cpu", "ratio": 0.3}}},
         "offload_optimizer.ratio 0.3 offloads only part .* needs stage 3, but stage is 1"),
        ({"optimizer": {"type": "AdamW", "params": {"max_grad_norm": 1.0}}},
         'optimizer.params.max_grad_norm is not an optimizer parameter: .* "gradient_clipping": 1.0'),
        ({"zero_optimization": {"stage": 3, "cpu_offload": True, "offload_optimizer": {"device": "cpu"}}},
         "cpu_offload and zero_optimization.offload_optimizer are both set: remove the deprecated cpu_offload"),
        ({"fp16": {"enabled": True, "loss_scale_window": 0}},
         "fp16.loss_scale_window must be a positive integer, got 0"),
        ({"fp16": {"enabled": True, "min_loss_scale": 0}}, "fp16.min_loss_scale must be a positive number, got 0"),
        ({"fp16": {"enabled": True, "hysteresis": 0}}, "fp16.hysteresis must be a positive integer, got 0"),
        ({"fp16": {"enabled": True, "initial_scale_power": 2000}}, "initial_scale_power must be an integer from 0"),
        ({"fp16": {"loss_scale": -1}}, "fp16.loss_scale must be a non-negative number, got -1"),
        ({"fp16": {"enabled": "sure"}}, 'fp16.enabled must be true or false, got "sure"'),
        ({"zero_optimization": {"stage": 4}}, "zero_optimization.stage must be an integer from 0 to 3, got 4"),
        ({"zero_optimization": {"reduce_bucket_size": 0}}, "reduce_bucket_size must be a positive integer, got 0"),
        ({"zero_optimization": {"offload_optimizer": {"device": "gpu"}}},
         'device must be one of "none", "cpu", "nvme", got "gpu": did you mean "cpu"\\?'),
        ({"train_batch_sz": 8}, "train_batch_sz is not a DeepSpeed config key: did you mean train_batch_size?"),
        ({"Train_Batch_Size": 8}, "did you mean train_batch_size?"),
        ({"stage": 2}, "stage is not a DeepSpeed config key: did you mean zero_optimization.stage?"),
        ({"zero_optimization": {"stage3_prefetch_bucket_size": 1e6, "prefetch_bucket_size": 2e6}},
         r"stage3_prefetch_bucket_size \(1000000\) and zero_optimization.prefetch_bucket_size \(2000000\) are two"
         " spellings of one setting with different values: keep one"),
        ({"zero_optimization": {"stage3_prefetch_bucket": 5}},
         "did you mean zero_optimization.stage3_prefetch_bucket_size"),
        ({"zero_optimization": {"offload_optimizer": {"pin_memroy": True}}},
         "did you mean zero_optimization.offload_optimizer.pin_memory"),
        ({"tensorboard": {"enable": True}}, "did you mean tensorboard.enabled"),
        ({"zero_optimization.offload_optimizer.device": "cpu"},
         'zero_optimization.offload_optimizer.device is not a DeepSpeed config key: nest it instead, as '
         '"zero_optimization": {"offload_optimizer": {"device": ...}}'),
        ({"zzzz": 1}, "zzzz is not a DeepSpeed config key: check its spelling and section, or remove it"),
        ({"scheduler": {"type": "WarmupLR", "params": {"warmup_num_step": 10}}},
         "scheduler.params.warmup_num_step is not a parameter of WarmupLR: "
         "did you mean scheduler.params.warmup_num_steps"),
        ({"scheduler": {"type": "warmupcosinelr"}}, 'did you mean "WarmupCosineLR"'),
        ({"scheduler": {"type": "OneCycle", "params": {"cycle_min_lr": 0.1}}},
         "OneCycle needs scheduler.params.cycle_max_lr"),
        ({"amp": {"opt_level": "01"}}, "the first character is the letter O, not zero"),
        ({"checkpoint": {"tag_validation": "Strict"}}, 'tag_validation must be one of "Ignore", "Warn", "Fail"'),
        ({"checkpoint": {"keep_last": 0}}, "checkpoint.keep_last must be a positive integer, got 0"),
        ({"seed": -1}, "seed must be an integer from 0 to 4294967295, got -1"),
        ({"steps_per_print": 0}, "steps_per_print must be a positive integer, got 0"),
        ({"gradient_clipping": True}, "gradient_clipping must be a non-negative number, got true"),
        ({"train_batch_size": 0}, "train_batch_size must be a positive integer, got 0"),
        ({"train_micro_batch_size_per_gpu": 2.5}, "train_micro_batch_size_per_gpu must be a positive integer"),
        ({"fp16": [True]}, r"fp16 must be a mapping of keys to values, got \[True\]"),
        ({"optimizer": {"type": "SGD", "params": [0.1]}}, "optimizer.params must be a mapping of names to values"),
        ({1: 2}, "the config has a key that is not a string, 1"),
        ({"fp16": {"a\nb": 1}}, r'^config: fp16\."a\\nb" is not a DeepSpeed config key'),
    ],
)
def test_refusals_name_the_key_and_the_fix(raw, message):
    with pytest.raises(UsageError, match=message):
        parse_run_config(raw)


def test_errors_start_with_the_source():
    with pytest.raises(UsageError, match=r"^ds\.json: zero_optimization\.stage must be"):
        parse_run_config({"zero_optimization": {"stage": "two"}}, source="ds.json")
    config = parse_run_config({"train_batch_size": 10, "train_micro_batch_size_per_gpu": 4}, source="ds.json")
    with pytest.raises(UsageError, match=r"^ds\.json: batch sizes do not divide"):
        config.batch(2)


def test_not_a_mapping():
    with pytest.raises(UsageError, match=re.escape("the config must be a mapping of keys to values, got [1, 2]")):
        parse_run_config([1, 2])


@pytest.mark.parametrize("name", ["ds_config.json", "ds_config.yaml"])
def test_bundled_examples(name):
    config = parse_run_config(load_config(EXAMPLES / name), source=name)
    assert config.optimizer is not None and config.warnings == ()
    assert config.batch(2).train_batch_size > 0


def test_keys_deepspeed_tolerates_are_accepted_with_the_right_note():
    def notes(raw):
        return parse_run_config({"train_micro_batch_size_per_gpu": 1, **raw}).warnings

    (note,) = notes({"optimizer": {"type": "Adam", "torch_adam": True, "params": {"torch_adam": True}}})
    assert note.startswith("optimizer.torch_adam is accepted but dsrun does not act on it: dsrun always steps torch's")
    for stage in (0, 2):  # DeepSpeed ignores offload_param below stage 3
        (note,) = notes({"zero_optimization": {"stage": stage, "offload_param": {"device": "cpu"}}})
        assert note.startswith("zero_optimization.offload_param is accepted but dsrun does not act on it")
        assert f"stage is {stage}" in note
    (note,) = notes({"zero_optimization": {"stage": 1, "cpu_offload": False}})
    assert "false means no offload_optimizer" in note and '"device": "cpu"' not in note
    # A disabled section's settings take no effect in DeepSpeed either: no note about them.
    assert notes({"fp16": {"enabled": False, "fp16_master_weights_and_grads": True}}) == ()
    assert notes({"fp16": {"enabled": True, "fp16_master_weights_and_grads": True}}) != ()


def test_keys_deepspeed_examples_carry_do_not_stop_a_run():
    # The shape of DeepSpeedExamples' training/imagenet/config/ds_fp16_z1_config.json.
    raw = {"train_batch_size": 256, "steps_per_print": 10, "optimizer": {"type": "Adam", "params": {"lr": 0.1}},
           "fp16": {"enabled": True}, "zero_optimization": {"stage": 1}, "cuda_visible_devices": 0}
    (note,) = parse_run_config(raw).warnings
    assert note.startswith("cuda_visible_devices is accepted but dsrun does not act on it") and "--include" in note
