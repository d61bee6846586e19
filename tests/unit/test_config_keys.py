"""The key declarations are consistent, and the value checks read values the way DeepSpeed does."""

import dataclasses
import math
import operator

import pytest

from dsrun.config import parse_run_config
from dsrun.config.checks import boolean, choice, integer, number, show, strings
from dsrun.config.declare import Section, acted_paths, declared_keys, iter_paths, unacted_notes
from dsrun.config.run_config import CATALOGUE, RunConfig
from dsrun.config.zero_section import ZeroConfig
from dsrun.errors import UsageError

PATHS = dict(iter_paths(CATALOGUE))


def sections(cls=RunConfig):
    yield cls
    for _spelling, _item, declaration in declared_keys(cls):
        if declaration.section is not None:
            yield from sections(declaration.section)


@pytest.mark.parametrize("cls", sorted(set(sections()), key=operator.attrgetter("__name__")))
def test_each_key_is_declared_once_per_section(cls):
    spellings = [spelling for spelling, _item, _declaration in declared_keys(cls)]
    listed = spellings + list(cls.mapped) + list(cls.unacted)
    assert sorted(name for name in set(listed) if listed.count(name) > 1) == []


def test_mapped_keys_name_the_attribute_they_become():
    config = parse_run_config({"zero_optimization": {"stage": 1, "offload_optimizer": {}, "offload_param": {}}})
    for cls in sections():
        for name, mapped in cls.mapped.items():
            target = config.zero if cls is ZeroConfig else config
            assert operator.attrgetter(mapped.onto)(target) is not None, name


def test_every_field_of_the_typed_config_is_a_declared_key_or_one_of_four_records():
    assert sorted(path for path, _attribute in acted_paths(RunConfig) if path not in PATHS) == []
    undeclared = {item.name for cls in sections() for item in dataclasses.fields(cls) if not item.metadata}
    assert undeclared == {"raw", "source", "warnings", "auto_params"}


def test_catalogue_holds_deepspeed_sections_and_deprecated_keys():
    for path in ("zero_optimization.cpu_offload", "fp16.fp16_master_weights_and_grads", "prescale_gradients",
                 "zero_optimization.allgather_partitions", "zero_optimization.reduce_scatter", "comms_logger.prof_ops",
                 "flops_profiler.detailed", "activation_checkpointing.cpu_checkpointing", "aio.queue_depth",
                 "compile.deepcompile", "autotuning.model_info.num_layers", "pipeline.stages",
                 "data_types.grad_accum_dtype", "torch_autocast.dtype", "communication_data_type",
                 "zero_optimization.stage3_max_live_parameters", "zero_optimization.max_live_parameters",
                 "zero_optimization.offload_optimizer.ratio", "checkpoint.writer.type", "wandb.team", "comet.api_key",
                 "bfloat16.enabled", "amp.opt_level", "elasticity", "nebula"):
        assert path in PATHS, path


def test_unacted_notes_one_line_per_key_and_one_per_section():
    clean = {"zero_optimization": {"stage": 2, "overlap_comm": True, "offload_optimizer": {"device": "cpu",
                                                                                            "fast_init": True}},
             "flops_profiler": {"enabled": True, "profile_step": 3, "detailed": False},
             "autotuning": {"enabled": False, "fast": True},
             "steps_per_print": 10}
    lines = unacted_notes(RunConfig, clean)
    assert [line.split(" ", 1)[0] for line in lines] == [
        "zero_optimization.overlap_comm", "zero_optimization.offload_optimizer.fast_init", "flops_profiler"]
    assert lines[0] == ("zero_optimization.overlap_comm is accepted but dsrun does not act on it: "
                        + ZeroConfig.unacted["overlap_comm"].reason)


def test_auto_only_where_something_fills_it_in():
    hf = parse_run_config({"train_batch_size": "auto", "train_micro_batch_size_per_gpu": 2, "gradient_clipping": "auto",
                           "fp16": {"enabled": "auto"}, "zero_optimization": {
                               "stage": "auto", "reduce_bucket_size": "auto", "stage3_prefetch_bucket_size": "auto",
                               "stage3_param_persistence_threshold": "auto",
                               "stage3_gather_16bit_weights_on_model_save": "auto",
                               "offload_optimizer": {"device": "auto"}}})
    assert hf.gradient_clipping == 1.0 and hf.zero.stage == 0 and hf.zero.offload_optimizer.device == "none"
    for raw, path in (({"steps_per_print": "auto"}, "steps_per_print"),
                      ({"fp16": {"enabled": True, "loss_scale_window": "auto"}}, "fp16.loss_scale_window"),
                      ({"zero_optimization": {"overlap_comm": "auto"}}, "zero_optimization.overlap_comm"),
                      ({"checkpoint": {"tag_validation": "auto"}}, "checkpoint.tag_validation")):
        with pytest.raises(UsageError, match=f'^config: {path} cannot be "auto": nothing fills it in'):
            parse_run_config(raw)


def test_sections_are_frozen_dataclasses():
    for cls in sections():
        assert issubclass(cls, Section) and dataclasses.is_dataclass(cls) and cls.__dataclass_params__.frozen


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

