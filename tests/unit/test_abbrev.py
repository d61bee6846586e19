"""Launcher flags written as unambiguous prefixes, as DeepSpeed's argparse launcher takes them."""

import pytest

from dsrun.cli.abbrev import expand_prefixes
from dsrun.cli.launch import _launch_flags
from dsrun.errors import UsageError

FLAGS = _launch_flags()


def test_prefixes_expand_to_the_one_flag_they_name():
    assert expand_prefixes(["--num_gpu", "2", "--launcher_arg", "-x", "t.py"], FLAGS) == [
        "--num_gpus", "2", "--launcher_args", "-x", "t.py"]
    assert expand_prefixes(["--num_gpu=2", "--dry", "t.py"], FLAGS) == ["--num_gpus=2", "--dry-run", "t.py"]


def test_the_script_and_its_arguments_are_untouched():
    assert expand_prefixes(["--num_gpus", "1", "t.py", "--num_g", "3"], FLAGS) == [
        "--num_gpus", "1", "t.py", "--num_g", "3"]
    assert expand_prefixes(["-H", "hosts", "--", "--num_g"], FLAGS) == ["-H", "hosts", "--", "--num_g"]


def test_an_ambiguous_prefix_names_the_candidates():
    with pytest.raises(UsageError, match="--num is ambiguous: it could be .*--num_gpus.*--num_nodes"):
        expand_prefixes(["--num", "2", "t.py"], FLAGS)


def test_unknown_flags_are_left_for_click_to_name():
    assert expand_prefixes(["--bogus", "t.py"], FLAGS) == ["--bogus", "t.py"]
