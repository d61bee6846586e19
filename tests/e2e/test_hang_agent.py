"""The node agent's side of --hang-timeout (what runs on every host over SSH and Slurm), without SSH: it relays its
ranks' steps as `progress` events and answers a collect request with a `stacks` event, and the job goes on."""

import pytest

from dsrun.launcher.node.protocol import collect_line, jobs_line
from tests.e2e.agent_process import next_event, start_agent, two_rank_job
from tests.pids import kill_survivors, recorded, running

pytestmark = pytest.mark.e2e


def test_the_agent_relays_steps_and_answers_a_collect_request(tmp_path):
    pids = tmp_path / "pids"
    pids.mkdir()
    job = two_rank_job(pids, report_progress=True)
    proc = start_agent()
    try:
        next_event(proc, "hello")
        proc.stdin.write(jobs_line([job]))
        proc.stdin.flush()
        while next_event(proc, "progress")["steps"] != {"0": 5, "1": 7}:
            pass
        proc.stdin.write(collect_line())
        proc.stdin.flush()
        stacks = next_event(proc, "stacks")["stacks"]
        assert set(stacks) == {"0", "1"}
        for stack in stacks.values():
            assert stack["how"] == "faulthandler" and 'progress_worker.py", line' in stack["text"]
            assert "in wait_here" in stack["text"]
        assert proc.poll() is None, "collecting stacks must not stop the job"
        proc.stdin.close()  # the launcher went away: the agent stops its job
        assert proc.wait(timeout=30) != 0
        assert len(recorded(pids)) == 2 and not [pid for pid in recorded(pids) if running(pid)]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        kill_survivors(pids)
