import pytest

from dsrun.errors import UsageError
from dsrun.launcher.plan.pool import parse_hostfile, parse_selector, read_hostfile, select

HOSTFILE = """
# a comment line
worker-0 slots=4
worker-1\tslots=4   # trailing comment
worker-2 slots=2 max_slots=8
"""


def pool():
    return parse_hostfile(HOSTFILE)


def test_hostfile_order_and_slots():
    assert pool() == {"worker-0": [0, 1, 2, 3], "worker-1": [0, 1, 2, 3], "worker-2": [0, 1]}


@pytest.mark.parametrize(
    "line",
    ["w1 slots = 2", "w1:4", "w1", "w1 slots=-1", "this is bad slots=1", "w2 slots=3abc", "w1 slots=2 extra"],
)
def test_hostfile_bad_lines_name_the_line(line):
    with pytest.raises(UsageError, match=r"hostfile:1: expected 'HOST slots=N'"):
        parse_hostfile(line)


def test_hostfile_duplicate_host():
    with pytest.raises(UsageError, match="listed twice"):
        parse_hostfile("a slots=1\na slots=2")


@pytest.mark.parametrize("text", ["", "# only comments\n\n"])
def test_hostfile_empty(text):
    with pytest.raises(UsageError, match="lists no hosts"):
        parse_hostfile(text)


def test_hostfile_rejects_shell_metacharacters_and_user_at_host():
    with pytest.raises(UsageError, match="may only contain"):
        parse_hostfile("a;rm slots=1")
    with pytest.raises(UsageError, match="ssh/config"):
        parse_hostfile("me@a slots=1")


def test_hostfile_zero_slots_host_is_dropped_by_selection():
    assert select(parse_hostfile("a slots=0\nb slots=2")) == {"b": [0, 1]}


def test_missing_hostfile(tmp_path):
    with pytest.raises(UsageError, match="does not exist"):
        read_hostfile(tmp_path / "nope")


def test_selector_merges_and_sorts():
    assert parse_selector("w0:3,1@w0:1,2@w1", "--include") == {"w0": [1, 2, 3], "w1": None}
    # a bare spec next to a slotted one adds nothing (DeepSpeed 0.19.8)
    assert parse_selector("w0:1@w0", "--include") == {"w0": [1]}
    assert parse_selector("w0@w0:1", "--include") == {"w0": [1]}


@pytest.mark.parametrize("text", ["a:1:2", "a:x", "a:", "a:0-2", "a@", "@a", "a:1,,2"])
def test_selector_errors(text):
    with pytest.raises(UsageError, match="--include"):
        parse_selector(text, "--include")


def test_include_keeps_hostfile_order():
    assert select(pool(), include_text="worker-2@worker-0:2,0") == {"worker-0": [0, 2], "worker-2": [0, 1]}


def test_include_documented_example():
    # `w0@w1:0,2`: all of w0, slots 0 and 2 of w1
    assert select(parse_hostfile("w0 slots=4\nw1 slots=4"), include_text="w0@w1:0,2") == {
        "w0": [0, 1, 2, 3],
        "w1": [0, 2],
    }


def test_exclude():
    assert select(pool(), exclude_text="worker-1@worker-0:0,3") == {"worker-0": [1, 2], "worker-2": [0, 1]}


def test_exclude_host_left_empty_drops_out():
    assert select(pool(), exclude_text="worker-2:0,1") == {"worker-0": [0, 1, 2, 3], "worker-1": [0, 1, 2, 3]}


def test_exclude_everything_is_an_error():
    with pytest.raises(UsageError, match="leaves no host"):
        select(pool(), exclude_text="worker-0@worker-1@worker-2")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"include_text": "worker-9"}, "host 'worker-9' is not in the pool"),
        ({"include_text": "worker-2:5"}, "has no slot 5"),
        ({"exclude_text": "worker-0:9"}, "has no slot 9"),
        ({"include_text": "worker-0", "exclude_text": "worker-1"}, "mutually exclusive"),
        ({"include_text": "worker-0", "num_gpus": 1}, "cannot be combined"),
        ({"exclude_text": "worker-0", "num_nodes": 1}, "cannot be combined"),
        ({"num_nodes": 4}, "more hosts than the 3"),
        ({"num_gpus": 3}, r"worker-2 \(2\)"),
        ({"num_gpus": 0}, "at least 1"),
        ({"num_nodes": -1}, "at least 1"),
    ],
)
def test_selection_errors(kwargs, message):
    with pytest.raises(UsageError, match=message):
        select(pool(), **kwargs)


def test_num_nodes_and_num_gpus():
    assert select(pool(), num_nodes=2, num_gpus=2) == {"worker-0": [0, 1], "worker-1": [0, 1]}
