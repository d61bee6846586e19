"""--hang-timeout over SSH and Slurm, the launcher's side: it decides from the steps the node agents relay, asks
every agent for its ranks' stacks, reports once they came (or the wait ended), stops the job and exits with 124."""

import json
import signal
from types import SimpleNamespace

from dsrun.launcher.backends.agents import STACKS_WAIT, AgentJob
from dsrun.launcher.node.supervisor import EXIT_HANG

STACK = 'Current thread 0x01 (most recent call first):\n  File "/p/train.py", line {line} in main\n'


class FakeRelay:
    def __init__(self):
        self.said: list[str] = []

    def say(self, message):
        self.said.append(message)

    def close(self):
        pass


class FakeJob(AgentJob):
    """Two nodes, ranks 0-1 on w0 and 2-3 on w1; records what it tells its agents."""

    def __init__(self, timeout=10.0, log_dir=None):
        ranks = [SimpleNamespace(rank=r, host=f"w{r // 2}") for r in range(4)]
        super().__init__(SimpleNamespace(ranks=ranks), FakeRelay(), 5.0, False, timeout, log_dir)
        self.told: list[bytes] = []
        self.signals: list[int] = []
        self.nodes_running = {0, 1}

    def tell_agents(self, line):
        self.told.append(line)

    def running_nodes(self):
        return set(self.nodes_running)

    def signal_agents(self, signum):
        self.signals.append(signum)


def progress(job, node, steps, now):
    job._on_progress({"event": "progress", "node_rank": node, "steps": {str(r): s for r, s in steps.items()}})
    job._watch_progress(now)


def stacks(job, node, lines, now):
    sent = {str(rank): {"text": STACK.format(line=line), "how": "faulthandler", "note": ""}
            for rank, line in lines.items()}
    job._on_stacks({"event": "stacks", "node_rank": node, "stacks": sent})
    job._watch_progress(now)


def test_a_rank_behind_on_another_node_is_found_and_reported_once_every_node_sent_its_stacks(tmp_path):
    job = FakeJob(log_dir=tmp_path)
    progress(job, 0, {0: 16, 1: 16}, 0.0)
    progress(job, 1, {2: 16, 3: 16}, 0.0)
    progress(job, 0, {0: 17, 1: 17}, 1.0)
    progress(job, 1, {2: 17, 3: 16}, 1.0)
    job._watch_progress(10.9)
    assert job.told == []
    job._watch_progress(11.0)
    assert [json.loads(line) for line in job.told] == [{"collect": "stacks"}]
    stacks(job, 0, {0: 42, 1: 42}, 11.5)
    assert job.relay.said == [] and job.signals == []  # still waiting for w1
    stacks(job, 1, {2: 42, 3: 40}, 12.0)
    report = job.relay.said[0].splitlines()
    assert report[0] == "hang (--hang-timeout 10): the ranks disagree on the step; rank 3 made no progress for 10 s"
    assert "  rank 3 on w1 at step 16 in main (train.py:40)" in report
    assert "  ranks 0-1 on w0 at step 17 in main (train.py:42)" in report
    assert f"full stacks of every rank: {tmp_path}" in job.relay.said[0]
    assert job.signals == [signal.SIGTERM]
    job._watch_progress(100.0)  # reported once
    assert len(job.relay.said) == 1 and job.signals == [signal.SIGTERM]


def test_a_node_that_does_not_answer_is_reported_after_the_wait(tmp_path):
    job = FakeJob(log_dir=tmp_path)
    progress(job, 0, {0: 3, 1: 3}, 0.0)
    progress(job, 1, {2: 3, 3: 3}, 0.0)
    job._watch_progress(10.0)
    stacks(job, 0, {0: 42, 1: 42}, 10.5)
    job._watch_progress(10.0 + STACKS_WAIT - 0.1)
    assert job.relay.said == []
    job._watch_progress(10.0 + STACKS_WAIT + 0.1)
    assert "  ranks 2-3 on w1 at step 3: no stack (its node did not answer)" in job.relay.said[0].splitlines()


def test_a_node_whose_agent_ended_leaves_the_picture():
    job = FakeJob()
    progress(job, 0, {0: 9, 1: 9}, 0.0)
    progress(job, 1, {2: 5, 3: 5}, 0.0)
    job.nodes_running = {1}  # node 0 finished at step 9; node 1 goes on
    for t in range(1, 40):
        progress(job, 1, {2: 5 + t, 3: 5 + t}, float(t))
    assert job.told == []


def test_the_job_ends_with_the_hang_exit_code():
    job = FakeJob()
    job.hang = object()  # what the loop leaves behind after a report
    job.start = lambda jobs: job.events.put(("end", None))
    job.handle = lambda kind, value: True
    assert job.run([]) == EXIT_HANG
