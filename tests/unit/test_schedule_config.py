"""build_scheduler as the config drives it: type lookup, torch fallback, the errors of a bad `scheduler` section."""

import pytest
import torch

from dsrun.errors import UsageError
from dsrun.runtime.schedules import build_scheduler


def sgd(lr=0.1):
    return torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)


def test_torch_scheduler_by_exact_class_name():
    opt = sgd(0.1)
    schedule = build_scheduler(opt, "StepLR", {"step_size": 2, "gamma": 0.5})
    assert isinstance(schedule, torch.optim.lr_scheduler.StepLR)
    lrs = []
    for _ in range(5):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        schedule.step()
    assert lrs == pytest.approx([0.1, 0.1, 0.05, 0.05, 0.025])


def test_params_may_be_absent():
    opt = sgd()
    build_scheduler(opt, "LRRangeTest", None)
    assert opt.param_groups[0]["lr"] == 1e-3


@pytest.mark.parametrize(
    ("type_name", "params", "message"),
    [
        # unknown names, with a suggestion when one is close
        ("WarmupLR", {"warmup_num_step": 5},
         r"scheduler WarmupLR has no parameter 'warmup_num_step' \(did you mean \"warmup_num_steps\"\?\); "
         r"valid parameters: warmup_min_lr, warmup_max_lr, warmup_num_steps, warmup_type, last_batch_iteration$"),
        ("OneCycle", {"cycle_min_lr": 0.1, "cycle_max_lr": 1, "Cycle_Momentum": True},
         r"no parameter 'Cycle_Momentum' \(did you mean \"cycle_momentum\"\?\)"),
        ("LRRangeTest", {"colour": 1}, r"scheduler LRRangeTest has no parameter 'colour'; valid parameters: "),
        # required parameters
        ("WarmupDecayLR", {}, r"scheduler WarmupDecayLR needs params.total_num_steps; add it"),
        ("WarmupCosineLR", {"warmup_num_steps": 5}, r"WarmupCosineLR needs params.total_num_steps"),
        ("OneCycle", {"cycle_max_lr": 0.1}, r"scheduler OneCycle needs params.cycle_min_lr"),
        ("OneCycle", {"cycle_min_lr": 0.1}, r"scheduler OneCycle needs params.cycle_max_lr"),
        # non-positive step counts
        ("WarmupLR", {"warmup_num_steps": 0},
         r"^scheduler WarmupLR: set params.warmup_num_steps to a positive integer \(got 0\)$"),
        ("WarmupDecayLR", {"total_num_steps": -3}, r"params.total_num_steps to a positive integer \(got -3\)"),
        ("WarmupCosineLR", {"total_num_steps": 0}, r"WarmupCosineLR: set params.total_num_steps to a positive"),
        ("OneCycle", {"cycle_min_lr": 0, "cycle_max_lr": 1, "cycle_first_step_size": 0},
         r"OneCycle: set params.cycle_first_step_size to a positive integer"),
        ("OneCycle", {"cycle_min_lr": 0, "cycle_max_lr": 1, "cycle_second_step_size": -1},
         r"params.cycle_second_step_size to a positive integer"),
        ("LRRangeTest", {"lr_range_test_step_size": 0}, r"params.lr_range_test_step_size to a positive integer"),
        # wrong types and values
        ("WarmupLR", {"warmup_num_steps": 10.5}, r"warmup_num_steps to a positive integer \(got 10.5\)"),
        ("WarmupLR", {"warmup_num_steps": True}, r"warmup_num_steps to a positive integer \(got True\)"),
        ("WarmupLR", {"warmup_max_lr": "auto"}, r"set params.warmup_max_lr to a number >= 0 \(got 'auto'\)"),
        ("WarmupLR", {"warmup_min_lr": -0.1}, r"set params.warmup_min_lr to a number >= 0"),
        ("WarmupLR", {"warmup_min_lr": [0.1, 0.2]},
         r"warmup_min_lr to one number or a list of 1 \(one per param group\) \(got \[0.1, 0.2\]\)"),
        ("WarmupLR", {"warmup_type": "Linear"},
         r"set params.warmup_type to \"log\" or \"linear\" \(got 'Linear'\) \(did you mean \"linear\"\?\)"),
        ("WarmupLR", {"warmup_type": "cosine"}, r"warmup_type to \"log\" or \"linear\" \(got 'cosine'\)$"),
        ("WarmupLR", {"last_batch_iteration": -2}, r"params.last_batch_iteration to an integer >= -1"),
        ("WarmupCosineLR", {"total_num_steps": 10, "cos_min_ratio": "0.1"}, r"params.cos_min_ratio to a number"),
        ("OneCycle", {"cycle_min_lr": 0, "cycle_max_lr": 1, "cycle_momentum": "yes"},
         r"params.cycle_momentum to true or false"),
        ("OneCycle", {"cycle_min_lr": 0, "cycle_max_lr": 1, "cycle_first_stair_count": -1},
         r"params.cycle_first_stair_count to an integer >= 0"),
        ("OneCycle", {"cycle_min_lr": 0, "cycle_max_lr": 1, "cycle_max_mom": 1.5},
         r"params.cycle_max_mom to a number in \[0, 1\)"),
        ("LRRangeTest", {"lr_range_test_staircase": 1}, r"params.lr_range_test_staircase to true or false"),
        ("LRRangeTest", {"lr_range_test_step_rate": float("nan")}, r"lr_range_test_step_rate to a number >= 0"),
    ],
)
def test_bad_deepspeed_scheduler_params(type_name, params, message):
    with pytest.raises(UsageError, match=message):
        build_scheduler(sgd(), type_name, params)


@pytest.mark.parametrize(
    ("type_name", "params", "message"),
    [
        ("StepLR", {}, r"scheduler StepLR needs params.step_size"),
        ("StepLR", {"step_size": 2, "gama": 0.5}, r"StepLR has no parameter 'gama' \(did you mean \"gamma\"\?\)"),
        ("StepLR", {"step_size": "2"}, r"scheduler StepLR: set params.step_size to a value of type int \(got '2'\)"),
        ("StepLR", {"step_size": 2, "gamma": True}, r"params.gamma to a value of type float \(got True\)"),
        ("CyclicLR", {"base_lr": 0.01, "max_lr": 0.1, "mode": "sideways"}, r"scheduler CyclicLR rejects its params: "),
        ("LambdaLR", {"lr_lambda": "x"}, r"LambdaLR needs a Python function.*to initialize\(\) as lr_scheduler"),
        ("ReduceLROnPlateau", {}, r"ReduceLROnPlateau needs a validation metric"),
        ("SequentialLR", {}, r"SequentialLR needs other scheduler objects"),
    ],
)
def test_bad_torch_scheduler_params(type_name, params, message):
    with pytest.raises(UsageError, match=message):
        build_scheduler(sgd(), type_name, params)


@pytest.mark.parametrize(
    ("type_name", "hint"),
    [("warmuplr", ' (did you mean "WarmupLR"?)'), ("steplr", ' (did you mean "StepLR"?)'),
     ("OneCycleLRX", ' (did you mean "OneCycleLR"?)'), ("Banana", ""), (None, "")],
)
def test_unknown_type_lists_the_choices(type_name, hint):
    with pytest.raises(UsageError) as caught:
        build_scheduler(sgd(), type_name, {})
    message = str(caught.value)
    assert message.startswith(f"unknown scheduler type {type_name!r}{hint}; choose one of WarmupLR, "
                              "WarmupDecayLR, WarmupCosineLR, OneCycle, LRRangeTest or a torch.optim.lr_scheduler "
                              "class (exact case): ")
    assert "StepLR" in message and "CosineAnnealingLR" in message
    assert "LambdaLR" not in message and "_LRScheduler" not in message and "\n" not in message


def test_params_must_be_a_mapping():
    with pytest.raises(UsageError, match=r"scheduler WarmupLR: params must be an object .* got list"):
        build_scheduler(sgd(), "WarmupLR", [1, 2])


def test_the_config_table_of_deepspeed_schedules_matches_their_classes():
    """The config checks scheduler params without torch, from its own table; the classes' signatures are the truth."""
    import inspect

    from dsrun.config.optim_section import DEEPSPEED_SCHEDULERS
    from dsrun.runtime.schedules.build import DEEPSPEED_SCHEDULES

    assert set(DEEPSPEED_SCHEDULERS) == set(DEEPSPEED_SCHEDULES)
    for name, cls in DEEPSPEED_SCHEDULES.items():
        params = [p for p in inspect.signature(cls).parameters.values() if p.name != "optimizer"]
        required = tuple(p.name for p in params if p.default is inspect.Parameter.empty)
        optional = tuple(p.name for p in params if p.default is not inspect.Parameter.empty)
        assert DEEPSPEED_SCHEDULERS[name] == (required, optional), name
