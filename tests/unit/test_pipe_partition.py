"""Stage boundaries against DeepSpeed's algorithms (deepspeed/runtime/utils.py partition_uniform/partition_balanced,
module.py _partition_layers), the expected lists worked out by hand from its rules, written next to each case."""

import random

import pytest

from dsrun.errors import UsageError
from dsrun.pipe.partition import check_parts, partition, partition_balanced, partition_uniform, type_weights


def no_counts():
    raise AssertionError("parameter counts were asked for")


# ---- uniform: chunk = n // m, the first n % m parts one more ----

@pytest.mark.parametrize(("items", "parts", "expected"), [
    (10, 4, [0, 3, 6, 8, 10]),  # chunk 2, two extra: 3, 3, 2, 2
    (7, 3, [0, 3, 5, 7]),  # chunk 2, one extra: 3, 2, 2
    (8, 4, [0, 2, 4, 6, 8]),  # even
    (5, 1, [0, 5]),
    (2, 4, [0, 1, 2, 2, 2]),  # fewer items than parts: DeepSpeed leaves the trailing parts empty
])
def test_uniform(items, parts, expected):
    assert partition_uniform(items, parts) == expected


# ---- balanced: least spread (max - min stage sum), ties to the later split ----

@pytest.mark.parametrize(("weights", "parts", "expected"), [
    # Splits 20|0+0+10, 20+0|0+10, 20+0+0|10 all have spread 10; the tie goes to the last: weightless layers stay
    # with the stage before them.
    ([20, 0, 0, 10], 2, [0, 3, 4]),
    # 10 | 1x6 | 10: sums 10, 6, 10 (spread 4); moving any 1 into an end stage makes that stage 11 (spread >= 6).
    ([10, 1, 1, 1, 1, 1, 1, 10], 3, [0, 1, 7, 8]),
    # 5+5+5 | 100 (spread 85) beats 5+5 | 5+100 (95) and 5 | 5+5+100 (105).
    ([5, 5, 5, 100], 2, [0, 3, 4]),
    # Eight equal layers over 3: 3, 3, 2 (spread 1); the tie between 3,3,2 / 3,2,3 / 2,3,3 goes to the later splits.
    ([1] * 8, 3, [0, 3, 6, 8]),
    # 20+0 | 40+0+18 = 20 | 58 (spread 38) beats 20+0+40 | 0+18 = 60 | 18 (spread 42).
    ([20, 0, 40, 0, 18], 2, [0, 2, 5]),
    # All zero: every split ties, the last wins each time.
    ([0, 0, 0, 0], 2, [0, 3, 4]),
    # No more items than parts: uniform.
    ([3, 1], 2, [0, 1, 2]),
])
def test_balanced_matches_deepspeed(weights, parts, expected):
    assert partition_balanced(weights, parts) == expected


def test_balanced_is_spread_not_bottleneck():
    # The three splits of [4, 4, 7, 2] into 3: 4|4|9 (spread 5, heaviest 9), 4|11|2 (spread 9), 8|7|2 (spread 6,
    # heaviest 8). A min-max (bottleneck) partition takes 8|7|2; DeepSpeed takes the least spread, 4|4|9.
    assert partition_balanced([4, 4, 7, 2], 3) == [0, 1, 2, 4]


def test_balanced_parts_are_never_empty():
    rng = random.Random(7)
    for _ in range(300):
        n, m = rng.randint(1, 12), rng.randint(1, 5)
        weights = [rng.choice([0, 0, 1, 7, 1000]) for _ in range(n)]
        parts = partition_balanced(weights, m)
        assert parts[0] == 0 and parts[-1] == n and len(parts) == m + 1
        if n >= m:
            assert all(parts[s] < parts[s + 1] for s in range(m)), (weights, m, parts)


# ---- methods ----

def test_parameters_method_balances_counts():
    assert partition("parameters", 2, ["A"] * 4, lambda: [20, 0, 0, 10]) == [0, 3, 4]
    assert partition("Parameters", 2, ["A"] * 4, lambda: [20, 0, 0, 10]) == [0, 3, 4]  # lowercased, as DeepSpeed


def test_uniform_method_ignores_parameters():
    assert partition("uniform", 3, ["A"] * 7, no_counts) == [0, 3, 5, 7]


def test_type_method_balances_matching_layers():
    names = ["Embedding", "TransformerBlock", "TransformerBlock", "TransformerBlock", "TransformerBlock", "<lambda>"]
    # weights 0,1,1,1,1,0: two blocks per stage, the weightless head with the last stage.
    assert partition("type:block", 2, names, no_counts) == [0, 3, 6]
    assert partition("type:TRANSFORMER", 2, names, no_counts) == [0, 3, 6]  # case-insensitive
    # 3 stages: sums 2, 1, 1 (spread 1), ties to the later split.
    assert partition("type:Block", 3, names, no_counts) == [0, 3, 4, 6]


def test_type_weights_search_not_fullmatch():
    assert type_weights(["MyLinearLayer", "ReLU", None, "linear"], "linear") == [1, 0, 0, 1]
    assert type_weights(["Conv2d", "Linear"], "^lin") == [0, 1]


def test_type_matching_nothing_is_an_error():
    with pytest.raises(UsageError, match="matches no layer"):
        partition("type:Attention", 2, ["Linear", "ReLU", "Linear"], no_counts)


def test_unknown_method():
    with pytest.raises(UsageError, match="partition_method 'profile'"):
        partition("profile", 2, ["A", "B"], no_counts)


def test_fewer_layers_than_stages():
    with pytest.raises(UsageError, match="3 layers cannot fill 4 pipeline stages"):
        partition("uniform", 4, ["A"] * 3, no_counts)


def test_check_parts_rejects_an_empty_stage():
    check_parts([0, 1, 3], 2, 3)
    with pytest.raises(UsageError, match=r"stages \[1\] without a layer"):
        check_parts([0, 3, 3], 2, 3)
