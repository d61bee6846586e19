"""--hang-timeout's decision, with a made-up clock: which ranks are stuck, and when the ranks disagree."""

from dsrun.launcher.hang.detect import HangDetector
from dsrun.launcher.node.progress import JOINED, RENDEZVOUS

T = 10.0


def detector(steps, now=0.0):
    found = HangDetector(T)
    found.observe(steps, now)
    return found


def test_ranks_that_stop_stepping_hang_after_the_timeout_not_before():
    watch = detector({0: 5, 1: 5})
    assert watch.check(T - 0.1) is None
    hang = watch.check(T)
    assert hang is not None and hang.stuck == [0, 1] and not hang.disagree and hang.steps == {0: 5, 1: 5}


def test_progress_restarts_the_clock():
    watch = detector({0: 5, 1: 5})
    watch.observe({0: 6, 1: 6}, 8.0)
    assert watch.check(8.0 + T - 0.1) is None
    assert watch.check(8.0 + T) is not None


def test_start_up_before_the_first_step_is_never_a_hang():
    watch = detector({0: 0, 1: 0})
    assert watch.check(1e6) is None


def test_a_rank_behind_is_stuck_from_when_it_fell_behind_not_from_its_own_last_step():
    watch = detector({0: 5, 1: 5})
    watch.observe({0: 6, 1: 5}, 9.0)  # rank 1 is late with its step 6, which is not a hang yet
    assert watch.check(T + 1) is None
    hang = watch.check(9.0 + T)
    assert hang is not None and 1 in hang.stuck and hang.disagree


def test_a_slow_first_step_is_not_a_hang_of_the_rank_that_finishes_it_later():
    watch = detector({0: 0, 1: 0})
    watch.observe({0: 1, 1: 0}, 100.0)  # a first step of 100 s: rank 1 at step 0 since t=0
    assert watch.check(100.5) is None
    hang = watch.check(100.0 + T)
    assert hang is not None and hang.stuck == [0, 1] and hang.steps == {0: 1, 1: 0}


def test_ranks_that_never_report_are_only_alive_and_never_stuck():
    watch = detector({0: None, 1: None})
    assert watch.check(1e6) is None


def test_a_rank_that_never_comes_to_the_rendezvous_is_stuck_from_when_the_first_rank_got_there():
    watch = detector({0: None, 1: None})
    watch.observe({0: RENDEZVOUS, 1: None}, 5.0)  # rank 1 still loading (or stuck) before init_distributed
    assert watch.check(5.0 + T - 0.1) is None
    hang = watch.check(5.0 + T)
    assert hang is not None and 1 in hang.stuck and hang.steps == {0: RENDEZVOUS, 1: None}


def test_no_rank_through_the_rendezvous_is_a_hang_but_loading_after_it_is_not():
    watch = detector({0: RENDEZVOUS, 1: RENDEZVOUS})
    assert watch.check(T) is not None
    watch = detector({0: RENDEZVOUS, 1: RENDEZVOUS})
    watch.observe({0: JOINED, 1: JOINED}, 1.0)
    assert watch.check(1e6) is None


def test_a_rank_that_ended_leaves_the_picture():
    watch = detector({0: 9, 1: 7})
    for t in range(1, 30):  # rank 0 finished at step 9; rank 1 keeps stepping
        watch.observe({1: 7 + t}, float(t))
        assert watch.check(float(t)) is None


def test_steps_that_start_again_from_zero_are_progress():
    watch = detector({0: 50, 1: 50})
    watch.observe({0: 1, 1: 1}, 5.0)  # a second engine
    assert watch.check(5.0 + T - 0.1) is None
    watch.observe({0: 2, 1: 1}, 6.0)
    assert watch.check(6.0 + T - 0.1) is None
    hang = watch.check(6.0 + T)
    assert hang is not None and 1 in hang.stuck
