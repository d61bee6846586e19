"""DeepSpeed's five schedules against their formulas, written out here independently of the module."""

import logging
import math

import pytest
import torch

from dsrun.runtime.schedules import build_scheduler


def optimizer(*lrs, cls=torch.optim.SGD, **defaults):
    """An optimizer with one param group per lr."""
    groups = [{"params": [torch.nn.Parameter(torch.zeros(1))], "lr": lr} for lr in lrs]
    return cls(groups, **defaults)


def lrs_at(opt, schedule, iterations):
    """{iteration: lr of group 0} for the listed iterations, stepping the schedule forward one at a time."""
    found = {}
    for iteration in range(-1, max(iterations) + 1):
        if iteration >= 0:
            schedule.step()
        assert schedule.last_batch_iteration == iteration
        if iteration in iterations:
            found[iteration] = opt.param_groups[0]["lr"]
    return found


def check_values(type_name, params, expected, opt=None):
    opt = opt or optimizer(0.5)
    schedule = build_scheduler(opt, type_name, params)
    found = lrs_at(opt, schedule, set(expected))
    for iteration, lr in expected.items():
        assert found[iteration] == pytest.approx(lr, rel=1e-12, abs=1e-15), f"iteration {iteration}"


# ---- WarmupLR ----

def test_warmup_lr_log():
    low, high, steps = 0.01, 0.1, 10
    expected = {-1: low, 0: low, 1: low + (high - low) * math.log(2) / math.log(10),
                5: low + (high - low) * math.log(6) / math.log(10), 9: high, 10: high, 500: high}
    check_values("WarmupLR", dict(warmup_min_lr=low, warmup_max_lr=high, warmup_num_steps=steps), expected)


def test_warmup_lr_linear():
    expected = {-1: 0.0, 0: 0.0, 1: 0.01, 7: 0.07, 9: 0.09, 10: 0.1, 11: 0.1}
    check_values("WarmupLR", dict(warmup_max_lr=0.1, warmup_num_steps=10, warmup_type="linear"), expected)


def test_warmup_lr_uses_at_least_two_warmup_steps():
    expected = {0: 0.0, 1: 0.05, 2: 0.1}
    check_values("WarmupLR", dict(warmup_max_lr=0.1, warmup_num_steps=1, warmup_type="linear"), expected)


def test_warmup_lr_defaults_reach_each_groups_own_lr():
    opt = optimizer(0.1, 0.4)
    schedule = build_scheduler(opt, "WarmupLR", {})
    assert [g["lr"] for g in opt.param_groups] == [0.0, 0.0]
    schedule.step(499)
    assert schedule.get_last_lr() == pytest.approx([0.1 * math.log(500) / math.log(1000),
                                                    0.4 * math.log(500) / math.log(1000)])
    schedule.step(1000)
    assert [g["lr"] for g in opt.param_groups] == [0.1, 0.4]


def test_warmup_lr_per_group_lists():
    opt = optimizer(1.0, 1.0)
    schedule = build_scheduler(opt, "WarmupLR", dict(warmup_min_lr=[0.0, 0.1], warmup_max_lr=[0.2, 0.5],
                                                     warmup_num_steps=4, warmup_type="linear"))
    assert schedule.get_last_lr() == [0.0, 0.1]
    schedule.step(2)
    assert schedule.get_lr() == pytest.approx([0.1, 0.3])


# ---- WarmupDecayLR ----

def test_warmup_decay_lr():
    low, high, warm, total = 0.0, 0.1, 10, 30
    expected = {-1: low, 4: high * 4 / warm, 10: high, 15: high * (total - 15) / (total - warm),
                29: high * 1 / 20, 30: low, 45: low}
    check_values("WarmupDecayLR", dict(total_num_steps=total, warmup_min_lr=low, warmup_max_lr=high,
                                       warmup_num_steps=warm, warmup_type="linear"), expected)


def test_warmup_decay_lr_default_peak_is_0_001():
    opt = optimizer(0.5)
    schedule = build_scheduler(opt, "WarmupDecayLR", dict(total_num_steps=4000))
    schedule.step(1000)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.001 * 3000 / 3000)
    schedule.step(2500)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.001 * 1500 / 3000)


def test_warmup_decay_lr_warns_when_total_is_shorter_than_warmup(caplog):
    with caplog.at_level(logging.WARNING):
        build_scheduler(optimizer(0.1), "WarmupDecayLR", dict(total_num_steps=5, warmup_num_steps=10))
    assert "total_num_steps 5 is less than warmup_num_steps 10" in caplog.text


# ---- WarmupCosineLR ----

def test_warmup_cosine_lr():
    base, warm, total, start, floor = 0.5, 10, 30, 0.1, 0.01

    def cosine(iteration):
        progress = min(1.0, (iteration - warm + 1) / (total - warm))
        return base * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress)))

    expected = {-1: 0.0, 0: base * start, 5: base * (start + (1 - start) * 0.5), 9: base * (start + (1 - start) * 0.9),
                10: cosine(10), 19: cosine(19), 29: base * floor, 40: base * floor}
    params = dict(total_num_steps=total, warmup_min_ratio=start, warmup_num_steps=warm, cos_min_ratio=floor,
                  warmup_type="linear")
    check_values("WarmupCosineLR", params, expected, opt=optimizer(base))
    assert cosine(19) == pytest.approx(base * (floor + (1 - floor) * 0.5))  # half way down at iteration 19


def test_warmup_cosine_lr_log_warmup_and_default_floor():
    expected = {3: 0.2 * math.log(4) / math.log(8), 8: 0.2 * (1e-4 + (1 - 1e-4) * 0.5 * (1 + math.cos(math.pi / 8)))}
    check_values("WarmupCosineLR", dict(total_num_steps=16, warmup_num_steps=8), expected, opt=optimizer(0.2))


# ---- OneCycle ----

ONE_CYCLE = dict(cycle_min_lr=0.01, cycle_max_lr=0.1, cycle_first_step_size=4, cycle_second_step_size=6)


def one_cycle_scale(iteration, first=4, second=6):
    """Up over `first` iterations, down over `second`, indexed by b = iteration + 1."""
    b = iteration + 1
    return b / first if b <= first else (first + second - b) / second


def test_one_cycle_lr_through_the_cycle():
    expected = {it: 0.01 + 0.09 * one_cycle_scale(it) for it in (-1, 0, 2, 3, 4, 6, 8, 9)}
    assert expected[3] == pytest.approx(0.1) and expected[9] == pytest.approx(0.01)  # peak at b = first, end at S
    check_values("OneCycle", ONE_CYCLE, expected)


def test_one_cycle_decay_after_the_cycle():
    params = dict(ONE_CYCLE, decay_lr_rate=0.5, decay_step_size=2)
    expected = {it: 0.01 / (1 + 0.5 * (it - 9) / 2) for it in (10, 11, 20)}
    check_values("OneCycle", params, expected)
    check_values("OneCycle", dict(ONE_CYCLE, decay_lr_rate=0.5), {10: 0.01, 30: 0.01})  # decay_step_size 0
    check_values("OneCycle", dict(ONE_CYCLE, decay_step_size=2), {10: 0.01, 30: 0.01})  # decay_lr_rate 0


def test_one_cycle_second_half_defaults_to_the_first():
    expected = {0: 0.01 + 0.09 / 4, 3: 0.1, 5: 0.01 + 0.09 * 2 / 4, 7: 0.01}
    check_values("OneCycle", dict(cycle_min_lr=0.01, cycle_max_lr=0.1, cycle_first_step_size=4), expected)


def test_one_cycle_stairs():
    # 4 iterations up in 2 stairs, 6 down in 3 stairs: floor(position · stairs) / stairs
    params = dict(ONE_CYCLE, cycle_first_stair_count=2, cycle_second_stair_count=3)
    scales = {0: 0.0, 1: 0.5, 2: 0.5, 3: 1.0, 4: 2 / 3, 5: 2 / 3, 6: 1 / 3, 7: 1 / 3, 8: 0.0}
    check_values("OneCycle", params, {it: 0.01 + 0.09 * s for it, s in scales.items()})


def test_one_cycle_second_stair_count_defaults_to_the_first():
    params = dict(cycle_min_lr=0.0, cycle_max_lr=1.0, cycle_first_step_size=4, cycle_first_stair_count=2)
    check_values("OneCycle", params, {0: 0.0, 1: 0.5, 2: 0.5, 3: 1.0, 4: 0.5, 5: 0.5, 6: 0.0})


def test_one_cycle_momentum_moves_against_the_lr():
    opt = optimizer(0.5, cls=torch.optim.Adam, betas=(0.5, 0.5))
    schedule = build_scheduler(opt, "OneCycle", dict(ONE_CYCLE, decay_mom_rate=0.1, decay_step_size=2))
    assert opt.param_groups[0]["betas"] == (0.8, 0.99)  # the constructor writes the minimum momentum...
    assert schedule.get_mom() == [(0.9, 0.99)]  # ...and reports the cycle's value at its start, as DeepSpeed does
    for iteration in range(12):
        schedule.step()
        beta1, beta2 = opt.param_groups[0]["betas"]
        if iteration < 10:
            assert beta1 == pytest.approx(0.9 - 0.1 * one_cycle_scale(iteration)), iteration
        else:
            assert beta1 == pytest.approx(0.9 * (1 + 0.1 * (iteration - 9) / 2)), iteration
        assert beta2 == 0.99
        assert schedule.get_mom() == [opt.param_groups[0]["betas"]]


def test_one_cycle_momentum_stays_at_max_after_the_cycle_without_decay():
    opt = optimizer(0.5, cls=torch.optim.AdamW)
    schedule = build_scheduler(opt, "OneCycle", ONE_CYCLE)
    schedule.step(25)
    assert opt.param_groups[0]["betas"] == (0.9, 0.99)


def test_one_cycle_momentum_disabled_without_betas(caplog):
    opt = optimizer(0.5, momentum=0.3)
    with caplog.at_level(logging.WARNING):
        schedule = build_scheduler(opt, "OneCycle", ONE_CYCLE)
    assert "cycle_momentum is disabled because SGD has no betas" in caplog.text
    schedule.step()
    assert schedule.get_mom() is None
    assert "betas" not in opt.param_groups[0] and opt.param_groups[0]["momentum"] == 0.3


def test_one_cycle_per_group_lrs():
    opt = optimizer(1.0, 1.0)
    schedule = build_scheduler(opt, "OneCycle", dict(ONE_CYCLE, cycle_min_lr=[0.0, 0.1], cycle_max_lr=[1.0, 0.5]))
    schedule.step(1)
    assert schedule.get_last_lr() == pytest.approx([0.5, 0.1 + 0.4 * 0.5])


# ---- LRRangeTest ----

def test_lr_range_test_continuous_and_staircase():
    base, size, rate = 0.001, 4, 2.0
    continuous = {it: base * (1 + rate * (it + 1) / size) for it in (-1, 0, 2, 5, 11)}
    check_values("LRRangeTest", dict(lr_range_test_min_lr=base, lr_range_test_step_size=size,
                                     lr_range_test_step_rate=rate), continuous)
    staircase = {-1: base, 2: base, 3: base * 3, 6: base * 3, 7: base * 5}
    check_values("LRRangeTest", dict(lr_range_test_min_lr=base, lr_range_test_step_size=size,
                                     lr_range_test_step_rate=rate, lr_range_test_staircase=True), staircase)


def test_lr_range_test_defaults():
    check_values("LRRangeTest", {}, {-1: 1e-3, 1999: 2e-3, 3999: 3e-3})


# ---- timing, resuming, optimizer details ----

def test_update_n_runs_with_the_lr_of_iteration_n_minus_2():
    # LRRangeTest with step size 1 has lr(it) = base·(it + 2), so update n should move the weight by base·n.
    base = 0.01
    weight = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([weight], lr=1.0)
    schedule = build_scheduler(opt, "LRRangeTest", dict(lr_range_test_min_lr=base, lr_range_test_step_size=1))
    for update in range(1, 8):
        before = weight.item()
        weight.grad = torch.ones(1)
        opt.step()
        schedule.step()  # after the update, as the engine does
        assert before - weight.item() == pytest.approx(base * update), f"update {update}"


SCHEDULES = {
    "WarmupLR": dict(warmup_min_lr=0.01, warmup_max_lr=0.1, warmup_num_steps=8),
    "WarmupDecayLR": dict(total_num_steps=20, warmup_num_steps=5, warmup_type="linear"),
    "WarmupCosineLR": dict(total_num_steps=20, warmup_num_steps=5, warmup_min_ratio=0.1),
    "OneCycle": dict(cycle_min_lr=0.01, cycle_max_lr=0.1, cycle_first_step_size=3, cycle_first_stair_count=2,
                     decay_lr_rate=0.1, decay_step_size=2, decay_mom_rate=0.01),
    "LRRangeTest": dict(lr_range_test_step_size=3, lr_range_test_staircase=True),
}


def group_state(opt):
    return [(g["lr"], g["betas"]) for g in opt.param_groups]


@pytest.mark.parametrize("type_name", list(SCHEDULES))
def test_state_dict_resume_gives_the_same_next_lrs(type_name):
    first_opt = optimizer(0.3, 0.6, cls=torch.optim.Adam)
    first = build_scheduler(first_opt, type_name, SCHEDULES[type_name])
    for _ in range(6):
        first.step()
    state = first.state_dict()
    assert state == {"last_batch_iteration": 5}

    resumed_opt = optimizer(0.3, 0.6, cls=torch.optim.Adam)
    resumed = build_scheduler(resumed_opt, type_name, SCHEDULES[type_name])
    resumed.load_state_dict(state)
    assert group_state(resumed_opt) == group_state(first_opt)
    for _ in range(10):
        first.step()
        resumed.step()
        assert group_state(resumed_opt) == group_state(first_opt)
        assert resumed.get_last_lr() == first.get_last_lr()


@pytest.mark.parametrize("type_name", list(SCHEDULES))
def test_constructor_writes_the_first_lr_and_get_lr_agrees(type_name):
    opt = optimizer(0.3, 0.6, cls=torch.optim.Adam)
    schedule = build_scheduler(opt, type_name, SCHEDULES[type_name])
    assert schedule.last_batch_iteration == -1
    assert schedule.get_last_lr() == [g["lr"] for g in opt.param_groups] == schedule.get_lr()
    schedule.step()
    assert schedule.last_batch_iteration == 0
    assert schedule.get_last_lr() == [g["lr"] for g in opt.param_groups] == schedule.get_lr()


def test_constructing_mid_run_keeps_the_optimizers_lr():
    opt = optimizer(0.123)
    schedule = build_scheduler(opt, "WarmupLR", dict(warmup_max_lr=0.1, warmup_num_steps=10,
                                                     warmup_type="linear", last_batch_iteration=6))
    assert opt.param_groups[0]["lr"] == 0.123 and schedule.get_last_lr() == [0.123]
    schedule.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(0.07)


def test_tensor_lr_is_updated_in_place():
    lr = torch.tensor(0.5)
    opt = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=lr, foreach=False)
    schedule = build_scheduler(opt, "WarmupLR", dict(warmup_max_lr=0.1, warmup_num_steps=10, warmup_type="linear"))
    assert opt.param_groups[0]["lr"] is lr and lr.item() == 0.0
    schedule.step(3)
    assert opt.param_groups[0]["lr"] is lr and lr.item() == pytest.approx(0.03)


def test_a_wrapped_optimizer_is_unwrapped():
    class Wrapper:
        def __init__(self, inner):
            self.optimizer = inner

    opt = optimizer(0.5)
    schedule = build_scheduler(Wrapper(opt), "LRRangeTest", dict(lr_range_test_min_lr=0.02))
    assert schedule.optimizer is opt and opt.param_groups[0]["lr"] == 0.02
