"""--hang-timeout's report: where each rank is, read from its dumped stack, grouped, and the full stacks file."""

from dsrun.launcher.hang.detect import Hang
from dsrun.launcher.hang.report import summary, write_stacks
from dsrun.launcher.hang.stack_text import where
from dsrun.launcher.node.progress import RENDEZVOUS
from dsrun.launcher.node.stacks import DUMP_LINE, RankStack

SITE = "/venv/lib/python3.11/site-packages"
IN_ALL_REDUCE = f"""\
Thread 0x00007f1b62b1d6c0 (most recent call first):
  File "/usr/lib/python3.11/threading.py", line 324 in wait
  File "{SITE}/torch/utils/data/_utils/pin_memory.py", line 50 in _pin_memory_loop
  File "/usr/lib/python3.11/threading.py", line 982 in run
  File "/usr/lib/python3.11/threading.py", line 1002 in _bootstrap

Current thread 0x00007f759e7beb80 (most recent call first):
  File "{SITE}/torch/distributed/distributed_c10d.py", line 3252 in all_reduce
  File "{SITE}/torch/distributed/c10d_logger.py", line 83 in wrapper
  File "{SITE}/dsrun/runtime/strategies/flat_grads.py", line 91 in average
  File "{SITE}/dsrun/runtime/engine.py", line 180 in step
  File "/home/me/project/train.py", line 42 in main
  File "/home/me/project/train.py", line 60 in <module>
"""
IN_OWN_CODE = """\
Current thread 0x00007f8f6fbbdb80 (most recent call first):
  File "/home/me/project/train.py", line 27 in wait_forever
  File "/home/me/project/train.py", line 40 in main
  File "/home/me/project/train.py", line 60 in <module>
"""
PY_SPY = f"""\
Process 4242: python train.py
Python v3.11.7 (/usr/bin/python3.11)

Thread 4242 (idle): "MainThread"
    barrier ({SITE}/torch/distributed/distributed_c10d.py:4150)
    main (train.py:45)
    <module> (train.py:60)
Thread 4250 (idle): "Dummy-1"
    poll (helper.py:10)
"""  # Dummy-1: a thread started by _thread.start_new_thread, so not from threading's _bootstrap


def test_where_names_the_innermost_function_the_library_call_and_the_users_line():
    assert where(IN_ALL_REDUCE) == "in all_reduce <- engine.step <- train.py:42"


def test_where_inside_the_users_own_code_names_that_line():
    assert where(IN_OWN_CODE) == "in wait_forever (train.py:27)"


def test_where_skips_the_decorator_around_a_torch_collective():
    stack = f"""\
Current thread 0x01 (most recent call first):
  File "{SITE}/torch/distributed/distributed_c10d.py", line 2400 in recv
  File "{SITE}/torch/distributed/c10d_logger.py", line 83 in wrapper
  File "/home/me/project/train.py", line 46 in main
"""
    assert where(stack) == "in recv <- train.py:46"


def test_where_reads_py_spy_and_takes_its_main_thread():
    assert where(PY_SPY) == "in barrier <- train.py:45"


def test_where_of_a_stack_without_python_frames_is_none():
    assert where("Current thread 0x00007f (most recent call first):\n  <no Python frame>\n") is None


def test_every_line_of_a_faulthandler_dump_is_recognised_and_ordinary_output_is_not():
    assert all(DUMP_LINE.match(line) for line in IN_ALL_REDUCE.splitlines())
    assert not DUMP_LINE.match("step 16 done")
    assert not DUMP_LINE.match("[rank 0] File x")


def test_summary_groups_ranks_by_step_and_place_and_names_the_ranks_behind():
    hang = Hang(steps={0: 17, 1: 16, 2: 17, 3: 17}, stuck=[1], waited={1: 600.0})
    stacks = {rank: RankStack(IN_ALL_REDUCE, "faulthandler") for rank in (0, 2, 3)}
    stacks[1] = RankStack(IN_OWN_CODE, "faulthandler")
    assert summary(hang, stacks, 600) == [
        "hang (--hang-timeout 600): the ranks disagree on the step; rank 1 made no progress for 600 s",
        "  rank 1 at step 16 in wait_forever (train.py:27)",
        "  ranks 0,2-3 at step 17 in all_reduce <- engine.step <- train.py:42",
    ]


def test_summary_names_hosts_ranks_without_a_step_and_ranks_without_a_stack():
    hang = Hang(steps={0: 5, 1: 5, 2: None}, stuck=[0, 1, 2])
    stacks = {0: RankStack(IN_ALL_REDUCE, "faulthandler"), 2: RankStack("", "", "no stack: py-spy is not installed")}
    lines = summary(hang, stacks, 30, hosts={0: "w0", 1: "w1", 2: "w1"})
    assert lines[0] == "hang (--hang-timeout 30): the ranks disagree on the step; rank 2 made no progress for 30 s"
    assert "  rank 0 on w0 at step 5 in all_reduce <- engine.step <- train.py:42" in lines
    assert "  rank 1 on w1 at step 5: no stack (its node did not answer)" in lines
    assert "  rank 2 on w1 with no step reported: no stack: py-spy is not installed" in lines


def test_summary_when_every_rank_stopped_at_the_same_step():
    hang = Hang(steps={0: 5, 1: 5}, stuck=[0, 1])
    assert summary(hang, {}, 30)[0] == "hang (--hang-timeout 30): no rank made progress for 30 s, all at step 5"


def test_summary_names_the_rank_that_never_came_to_the_rendezvous():
    hang = Hang(steps={0: RENDEZVOUS, 1: None, 2: RENDEZVOUS}, stuck=[0, 1, 2])
    stacks = {0: RankStack(IN_OWN_CODE, "faulthandler"), 2: RankStack(IN_OWN_CODE, "faulthandler"),
              1: RankStack("", "", "no stack: py-spy is not installed")}
    assert summary(hang, stacks, 30, hosts={0: "w0", 1: "w1", 2: "w1"}) == [
        "hang (--hang-timeout 30): rank 1 never came to the rendezvous (init_distributed) in 30 s; the others wait"
        " there",
        "  rank 1 on w1 not at the rendezvous: no stack: py-spy is not installed",
        "  rank 0 on w0 in the rendezvous in wait_forever (train.py:27)",
        "  rank 2 on w1 in the rendezvous in wait_forever (train.py:27)",
    ]
    everyone = Hang(steps={0: RENDEZVOUS, 1: RENDEZVOUS}, stuck=[0, 1])
    assert summary(everyone, {}, 30)[0] == "hang (--hang-timeout 30): no rank got through the rendezvous in 30 s"


def test_the_stacks_file_holds_the_summary_and_every_ranks_full_stack(tmp_path):
    hang = Hang(steps={0: 17, 1: 16}, stuck=[1])
    stacks = {0: RankStack(IN_ALL_REDUCE, "faulthandler"), 1: RankStack(PY_SPY, "py-spy")}
    path = write_stacks(["the summary"], hang, stacks, tmp_path)
    assert path.parent == tmp_path
    text = path.read_text()
    assert text.startswith("the summary\n")
    assert "=== rank 0 at step 17 (stack by faulthandler) ===\n" + IN_ALL_REDUCE.rstrip("\n") in text
    assert "=== rank 1 at step 16 (stack by py-spy) ===" in text and "pin_memory" in text and "4150" in text
