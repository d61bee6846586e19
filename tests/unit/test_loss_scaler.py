import math

import pytest

from dsrun.errors import UsageError
from dsrun.runtime.loss_scaler import DynamicLossScaler, StaticLossScaler, make_loss_scaler

# The reference trace: initial_scale_power=4 (16), window 4; O = overflow at steps 0, 2 and 3, clean afterwards.
PATTERN = [True, False, True, True] + [False] * 9
TRACES = {
    "hysteresis=2": (dict(hysteresis=2), [16, 16, 8, 4, 4, 4, 4, 4, 8, 8, 8, 8, 16]),
    "hysteresis=2 consecutive": (dict(hysteresis=2, consecutive_hysteresis=True),
                                 [16, 16, 16, 8, 8, 8, 8, 8, 16, 16, 16, 16, 32]),
    "hysteresis=1": (dict(hysteresis=1), [8, 8, 4, 2, 2, 2, 2, 2, 4, 4, 4, 4, 8]),
}


def trace_scaler(**overrides):
    return make_loss_scaler(initial_scale_power=4, loss_scale_window=4, **overrides)


@pytest.mark.parametrize("case", list(TRACES))
def test_reference_trace_step_by_step(case):
    overrides, expected = TRACES[case]
    scaler = trace_scaler(**overrides)
    assert scaler.loss_scale == 16.0
    seen = []
    for overflow in PATTERN:
        scaler.update(overflow)
        seen.append(scaler.loss_scale)
    assert seen == expected


def test_hysteresis_counter_follows_the_trace():
    plain = trace_scaler(hysteresis=2)
    consecutive = trace_scaler(hysteresis=2, consecutive_hysteresis=True)
    plain_counts, consecutive_counts = [], []
    for overflow in PATTERN:
        plain.update(overflow)
        consecutive.update(overflow)
        plain_counts.append(plain.cur_hysteresis)
        consecutive_counts.append(consecutive.cur_hysteresis)
    # plain: spent at step 0, not refilled by halving (steps 2, 3), refilled only when the scale grows at step 8
    assert plain_counts[:9] == [1, 1, 1, 1, 1, 1, 1, 1, 2]
    # consecutive: every clean step refills it, so the overflow at 2 is absorbed and only the one at 3 halves
    assert consecutive_counts[:5] == [1, 2, 1, 1, 2]


def growth_indices(scaler, steps, overflow_at=()):
    grew = []
    for index in range(steps):
        before = scaler.loss_scale
        scaler.update(index in overflow_at)
        if scaler.loss_scale > before:
            grew.append(index)
    return grew


def test_grows_at_window_multiples_without_overflow():
    scaler = make_loss_scaler(loss_scale_window=1000)
    assert growth_indices(scaler, 2001) == [1000, 2000]
    assert scaler.loss_scale == 2.0**18


def test_grows_window_plus_one_after_an_overflow():
    scaler = make_loss_scaler(loss_scale_window=1000, hysteresis=1)
    assert growth_indices(scaler, 2010, overflow_at={5}) == [1006, 2006]
    assert scaler.loss_scale == 2.0**17  # halved once, doubled twice


def test_overflow_at_min_scale_stops_the_run():
    scaler = make_loss_scaler(initial_scale_power=1, hysteresis=1, min_loss_scale=1)
    scaler.update(True)
    assert scaler.loss_scale == 1.0
    with pytest.raises(RuntimeError, match=r"at min_loss_scale \(1\).*cannot continue.*bf16.*min_loss_scale"):
        scaler.update(True)


def test_hysteresis_is_spent_before_the_min_scale_error():
    scaler = make_loss_scaler(initial_scale_power=0, hysteresis=2, min_loss_scale=1)
    scaler.update(True)  # absorbed by hysteresis
    assert scaler.loss_scale == 1.0
    with pytest.raises(RuntimeError, match="min_loss_scale"):
        scaler.update(True)


def test_halving_is_clamped_to_the_floor_before_the_error():
    scaler = DynamicLossScaler(init_scale=3.0, scale_window=10, hysteresis=1, consecutive_hysteresis=False,
                               min_scale=2.0)
    scaler.update(True)
    assert scaler.loss_scale == 2.0
    with pytest.raises(RuntimeError):
        scaler.update(True)


def test_custom_scale_factor():
    scaler = DynamicLossScaler(init_scale=81.0, scale_window=2, hysteresis=1, consecutive_hysteresis=False,
                               min_scale=1.0, scale_factor=3.0)
    scaler.update(True)
    assert scaler.loss_scale == 27.0


@pytest.mark.parametrize("case", list(TRACES))
def test_state_dict_round_trip_mid_trace(case):
    overrides, expected = TRACES[case]
    first = trace_scaler(**overrides)
    for overflow in PATTERN[:5]:
        first.update(overflow)
    state = first.state_dict()
    resumed = trace_scaler(**overrides)
    resumed.load_state_dict(state)
    assert resumed.state_dict() == state
    seen = []
    for overflow in PATTERN[5:]:
        resumed.update(overflow)
        seen.append(resumed.loss_scale)
    assert seen == expected[5:]


def test_static_scale_never_changes():
    scaler = make_loss_scaler(loss_scale=128)
    assert isinstance(scaler, StaticLossScaler) and not scaler.dynamic
    for overflow in [True, True, False] * 700:
        scaler.update(overflow)
    assert scaler.loss_scale == 128.0
    again = make_loss_scaler(loss_scale=128)
    again.load_state_dict(scaler.state_dict())
    assert again.loss_scale == 128.0


def test_zero_loss_scale_means_dynamic_with_deepspeed_defaults():
    scaler = make_loss_scaler()
    assert isinstance(scaler, DynamicLossScaler) and scaler.dynamic
    assert (scaler.loss_scale, scaler.scale_window, scaler.hysteresis, scaler.min_scale) == (65536.0, 1000, 2, 1.0)
    assert scaler.consecutive_hysteresis is False


def test_checkpoint_of_the_other_kind_is_refused():
    with pytest.raises(UsageError, match="loss scale is dynamic but the config asks for a static.*loss_scale to 0"):
        make_loss_scaler(loss_scale=8).load_state_dict(make_loss_scaler().state_dict())
    with pytest.raises(UsageError, match="is static but the config asks for a dynamic.*loss_scale to 8"):
        make_loss_scaler().load_state_dict(make_loss_scaler(loss_scale=8).state_dict())


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(loss_scale=-1), r"fp16.loss_scale must be 0 \(dynamic scaling\) or a finite number > 0, got -1"),
        (dict(loss_scale=math.inf), "fp16.loss_scale must be"),
        (dict(loss_scale=True), "fp16.loss_scale must be"),
        (dict(loss_scale_window=0), "fp16.loss_scale_window must be a positive integer, got 0"),
        (dict(hysteresis=0), "fp16.hysteresis must be a positive integer, got 0"),
        (dict(min_loss_scale=0), "fp16.min_loss_scale must be a finite number > 0, got 0"),
        (dict(consecutive_hysteresis="yes"), "fp16.consecutive_hysteresis must be true or false"),
        (dict(initial_scale_power=2.5), "fp16.initial_scale_power must be an integer, got 2.5"),
        (dict(initial_scale_power=5000), "fp16.initial_scale_power 5000 is too large"),
        (dict(initial_scale_power=-2000), "initial fp16 loss scale must be a finite number > 0"),
        (dict(initial_scale_power=0, min_loss_scale=4), "initial fp16 loss scale 1 is below fp16.min_loss_scale 4"),
    ],
)
def test_bad_fp16_values_are_usage_errors(kwargs, message):
    with pytest.raises(UsageError, match=message):
        make_loss_scaler(**kwargs)
