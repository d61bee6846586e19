"""Several failing ranks, each error said once: grouping by the last stderr line, ranks stopped by the teardown left
out, the first failing rank's group first."""

from dsrun.launcher.backends.failure_groups import from_done_events, group_failures

TRACE = ["Traceback (most recent call last):", '  File "train.py", line 3, in <module>',
         "argparse.ArgumentError: argument --local_rank: conflicting option string: --local_rank"]


def test_the_same_error_on_every_rank_is_one_group_with_one_tail():
    codes = {0: 2, 1: 2, 2: 2, 3: 2}
    groups = group_failures(codes, dict.fromkeys(codes, TRACE), first=2)
    assert len(groups) == 1
    assert groups[0].ranks == [0, 1, 2, 3] and groups[0].error == TRACE[-1] and groups[0].tail == TRACE


def test_different_errors_are_groups_of_their_own_and_signals_are_not_failures():
    other = ["RuntimeError: Connection reset by peer"]
    codes = {0: 1, 1: 2, 2: -15, 3: 1}  # rank 2 was stopped by the teardown's SIGTERM
    tails = {0: other, 1: TRACE, 2: ["KeyboardInterrupt"], 3: other}
    groups = group_failures(codes, tails, first=1)
    assert [(g.ranks, g.error) for g in groups] == [([1], TRACE[-1]), ([0, 3], other[0])]


def test_the_first_failing_rank_shows_its_own_tail_even_when_killed_by_a_signal():
    groups = group_failures({0: -9, 1: -15}, {0: ["out of memory?"], 1: []}, first=0)
    assert [(g.ranks, g.tail) for g in groups] == [([0], ["out of memory?"])]


def _done(node, first, exits):
    failure = {"rank": first, "returncode": 2, "command": ["python", "train.py"], "tail": TRACE} if first is not None \
        else None
    return {"event": "done", "node_rank": node, "code": 2 if exits else 0, "failure": failure,
            "exits": {str(rank): {"code": code, "tail": TRACE if code > 0 else None} for rank, code in exits.items()}}


def test_ranks_of_several_hosts_failing_alike_are_one_group():
    hosts = {0: "h1", 1: "h1", 2: "h2", 3: "h2"}
    report = from_done_events([_done(1, 2, {2: 2, 3: -15}), _done(0, 0, {0: 2, 1: 2})], hosts)
    assert report.startswith("rank 2 on h2 failed first: exit code 2\n  command: python train.py")
    assert "ranks 0-2 failed with the same error" in report and report.count(TRACE[-1]) == 1


def test_no_failing_rank_is_no_report():
    assert from_done_events([_done(0, None, {})], {}) is None


def test_ranks_without_stderr_are_alike_only_when_they_ended_alike():
    codes = {0: -9, 1: 3, 2: 3, 3: 1}  # rank 0 was killed (the OOM killer's SIGKILL) and failed first
    groups = group_failures(codes, {}, first=0)
    assert [g.ranks for g in groups] == [[0], [1, 2], [3]]
    assert groups[1].error == "no stderr, exit code 3"


def test_torchs_rank_prefix_does_not_split_a_group():
    # Once the process group is up, torch prints an uncaught exception's lines as "[rankN]: ...".
    tails = {rank: [f"[rank{rank}]: Traceback (most recent call last):", f"[rank{rank}]: KeyError: 'lm_head'"]
             for rank in (0, 1, 12)}
    groups = group_failures(dict.fromkeys(tails, 1), tails, first=1)
    assert [(g.ranks, g.error) for g in groups] == [([0, 1, 12], "KeyError: 'lm_head'")]
