"""The key catalogue and the acted-on table agree, and the value checks read values the way DeepSpeed does."""

import math

import pytest

from dsrun.config import acted
from dsrun.config.checks import boolean, choice, integer, number, show, strings
from dsrun.config.keys import iter_paths
from dsrun.errors import UsageError

CATALOGUE = dict(iter_paths())


def test_every_acted_on_key_is_in_the_catalogue():
    assert sorted(path for path in acted.ACTED_ON if path not in CATALOGUE) == []


def test_every_reason_names_a_catalogued_key():
    assert sorted(path for path in acted.REASONS if path not in CATALOGUE) == []


def test_every_key_is_acted_on_or_has_a_reason():
    unexplained = [
        path for path in CATALOGUE
        if not acted.is_acted_on(path) and not acted.holds_acted_keys(path) and acted.reason_for(path) is None
    ]  # fmt: skip
    assert unexplained == []


def test_catalogue_holds_deepspeed_sections_and_deprecated_keys():
    for path in ("zero_optimization.cpu_offload", "fp16.fp16_master_weights_and_grads", "prescale_gradients",
                 "zero_optimization.allgather_partitions", "zero_optimization.reduce_scatter", "comms_logger.prof_ops",
                 "flops_profiler.detailed", "activation_checkpointing.cpu_checkpointing", "aio.queue_depth",
                 "compile.deepcompile", "autotuning.model_info.num_layers", "pipeline.stages",
                 "data_types.grad_accum_dtype", "torch_autocast.dtype", "communication_data_type",
                 "zero_optimization.stage3_max_live_parameters", "zero_optimization.max_live_parameters",
                 "zero_optimization.offload_optimizer.ratio", "checkpoint.writer.type", "wandb.team", "comet.api_key",
                 "bfloat16.enabled", "amp.opt_level", "elasticity", "nebula"):
        assert path in CATALOGUE, path


def test_unacted_warnings_one_line_per_key_and_one_per_section():
    clean = {"zero_optimization": {"stage": 2, "overlap_comm": True, "offload_optimizer": {"device": "cpu",
                                                                                            "fast_init": True}},
             "flops_profiler": {"enabled": True, "profile_step": 3, "detailed": False},
             "autotuning": {"enabled": False, "fast": True},
             "steps_per_print": 10}
    lines = acted.unacted_warnings(clean)
    assert [line.split(" ", 1)[0] for line in lines] == [
        "zero_optimization.overlap_comm", "zero_optimization.offload_optimizer.fast_init", "flops_profiler"]
    assert lines[0] == ("zero_optimization.overlap_comm is accepted but dsrun does not act on it: "
                        + acted.REASONS["zero_optimization.overlap_comm"])


@pytest.mark.parametrize(("value", "expected"), [
    (True, True), (False, False), (1, True), (0, False), (1.0, True), ("true", True), ("FALSE", False),
    ("yes", True), ("off", False), (" on ", True),
])  # fmt: skip
def test_boolean_accepts_what_pydantic_accepts(value, expected):
    assert boolean("k", value) is expected


@pytest.mark.parametrize("value", [2, -1, 0.5, "maybe", None, [True]])
def test_boolean_refuses(value):
    with pytest.raises(UsageError, match=r"^k must be true or false, got "):
        boolean("k", value)


@pytest.mark.parametrize(("value", "expected"), [(5, 5), (5e8, 500_000_000), ("5e8", 500_000_000), (" 7 ", 7),
                                                 (3.0, 3), (2**70, 2**70)])
def test_integer_normalises(value, expected):
    result = integer()("k", value)
    assert result == expected and type(result) is int


@pytest.mark.parametrize("value", [True, 2.5, "2.5", "x", math.nan, math.inf, "inf", None, [1]])
def test_integer_refuses(value):
    with pytest.raises(UsageError, match="^k must be an integer, got"):
        integer()("k", value)


def test_integer_and_number_ranges_in_messages():
    with pytest.raises(UsageError, match="^k must be a non-negative integer, got -1$"):
        integer(minimum=0)("k", -1)
    with pytest.raises(UsageError, match="^k must be a number from 0 to 1, got 1.5$"):
        number(minimum=0, maximum=1)("k", 1.5)
    with pytest.raises(UsageError, match="^k must be a positive number, got 0$"):
        number(positive=True)("k", 0)
    assert number()("k", "1e-4") == 1e-4 and type(number()("k", 3)) is float


def test_choice_canonical_spelling_and_suggestion():
    mode = choice("Ignore", "Warn", "Fail", fold_case=True)
    assert mode("k", "WARN") == "Warn"
    with pytest.raises(UsageError, match='^k must be one of "Ignore", "Warn", "Fail", got "Fial": did you mean "Fail"'):
        mode("k", "Fial")
    with pytest.raises(UsageError, match='got "cpu"$'):
        choice("none", "nvme")("k", "cpu")


def test_strings_and_show():
    assert strings("k", ["a", "b"]) == ["a", "b"]
    with pytest.raises(UsageError, match=r"^k must be a list of strings, got \['a', 1\]"):
        strings("k", ["a", 1])
    assert show(None) == "null" and show(True) == "true" and show("x") == '"x"'
    assert len(show("y" * 500)) == 60

