"""Fuzzing: nested configs built from real key names with arbitrary values fail only with a one-line UsageError."""

import copy

from hypothesis import HealthCheck, find, given, settings
from hypothesis import strategies as st

from dsrun.config import parse_run_config
from dsrun.config.run_config import CATALOGUE
from dsrun.errors import UsageError

# Values that are valid somewhere (stages, devices, "auto", YAML-style strings) mixed with ones valid nowhere.
VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-3, max_value=8),
    st.integers(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(["auto", "true", "off", "cpu", "nvme", "none", "O2", "01", "warn", "5e8", "1e-4", "fp16",
                     "AdamW", "WarmupLR", "warmupLR", "StepLR", ""]),
    st.text(max_size=6),
    st.lists(st.one_of(st.text(max_size=3), st.integers()), max_size=3),
    st.dictionaries(st.sampled_from(["lr", "max_grad_norm", "total_num_steps", "x"]), st.integers(0, 5), max_size=2),
)


# Candidates for values a key accepts, so that generated configs get past the type checks often enough to reach
# the cross-key rules (stage vs offload, fp16 vs bf16 vs amp, batch math, scheduler parameters).
POOL = [None, True, False, 0, 1, 2, 3, 4, 16, 0.5, 1e9, "auto", "true", "cpu", "nvme", "none", "O1", "Warn", "fail",
        "AdamW", "WarmupLR", "WarmupDecayLR", "OneCycle", "fp16", "mean", "symmetric", "FAST", "REPLICA", "torch",
        [], ["a"], {}, {"lr": 0.1}, {"total_num_steps": "auto", "warmup_num_steps": 5}, "5e8"]




def as_dicts(entries) -> dict:
    """The catalogue as nested dicts of value checks."""
    return {name: as_dicts(entry.children) if entry.children is not None else entry.check
            for name, entry in entries.items()}


TOP_LEVEL = as_dicts(CATALOGUE)


def accepted(check, path: str) -> list:
    good = []
    for value in POOL:
        try:
            check(path, value)
        except UsageError:
            continue
        good.append(value)
    return good or [None]


@st.composite
def section_of(draw, section: dict, depth: int = 0, prefix: str = "") -> dict:
    """A mapping with a few of `section`'s real keys; nested sections are filled the same way, mostly.

    The rare branches test for a middle value, because Hypothesis draws the ends of an integer range more often.
    """
    keys = draw(st.lists(st.sampled_from(sorted(section)), unique=True, max_size=5))
    out = {}
    for key in keys:
        entry = section[key]
        if isinstance(entry, dict) and depth < 3 and draw(st.integers(0, 15)) != 7:
            out[key] = draw(section_of(entry, depth + 1, f"{prefix}{key}."))
        elif isinstance(entry, dict) or draw(st.integers(0, 3)) == 2:
            out[key] = draw(VALUES)
        else:
            out[key] = draw(st.sampled_from(accepted(entry, prefix + key)))
    if draw(st.integers(0, 40)) == 17:
        out[draw(st.text(min_size=1, max_size=8))] = draw(VALUES)  # a key that is probably not DeepSpeed's
    return out


# The sections whose interplay is checked (precision, ZeRO, optimizer) are drawn more often than the rest.
ZERO_FOCUS = {key: TOP_LEVEL["zero_optimization"][key] for key in (
    "stage", "offload_optimizer", "offload_param", "cpu_offload", "cpu_offload_param", "cpu_offload_use_pin_memory",
    "reduce_bucket_size", "overlap_comm")}
FOCUS = {key: TOP_LEVEL[key] for key in ("fp16", "bf16", "amp", "optimizer", "scheduler", "train_batch_size",
                                         "train_micro_batch_size_per_gpu", "gradient_accumulation_steps")}
FOCUS["zero_optimization"] = ZERO_FOCUS
CONFIGS = st.one_of(section_of(TOP_LEVEL), section_of(FOCUS))


def parses(raw) -> bool:
    try:
        parse_run_config(raw)
    except UsageError:
        return False
    return True


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(raw=CONFIGS, world_size=st.integers(min_value=1, max_value=16))
def test_only_usage_errors(raw, world_size):
    before = copy.deepcopy(raw)
    try:
        config = parse_run_config(raw)
    except UsageError as err:
        assert str(err).startswith("config: ") and "\n" not in str(err)
        config = None
    assert raw == before, "parsing edited the caller's dict"
    if config is None:
        return
    assert not [key for key in raw if key not in TOP_LEVEL], "an unknown top-level key was accepted"
    assert all(isinstance(line, str) and "\n" not in line for line in config.warnings)
    try:
        batch = config.batch(world_size)
    except UsageError:
        return
    assert batch.train_batch_size == (batch.train_micro_batch_size_per_gpu * batch.gradient_accumulation_steps
                                      * world_size)


def test_fuzzing_reaches_configs_that_load():
    """Guards the property above against a generator that only ever produces refused configs."""
    loaded = find(section_of(FOCUS), lambda raw: len(raw) >= 3 and parses(raw),
                  settings=settings(max_examples=2000, database=None))
    assert len(loaded) >= 3
    warned = find(section_of(TOP_LEVEL), lambda raw: parses(raw) and parse_run_config(raw).warnings,
                  settings=settings(max_examples=2000, database=None))
    assert parse_run_config(warned).warnings
