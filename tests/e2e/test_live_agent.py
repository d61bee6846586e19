"""The node agent's side of --live (what runs on every host over SSH and Slurm), without SSH: it relays its ranks'
rows as `live` events, about once a second, and a last one with how each rank ended."""

import pytest

from dsrun.launcher.live.relayed import ranks_of
from dsrun.launcher.node.protocol import jobs_line
from tests.e2e.agent_process import next_event, start_agent, two_rank_job
from tests.pids import kill_survivors, recorded

pytestmark = pytest.mark.e2e


def test_the_agent_relays_every_ranks_row_and_how_it_ended(tmp_path):
    pids = tmp_path / "pids"
    pids.mkdir()
    job = two_rank_job(pids, report_live=True)
    proc = start_agent()
    try:
        assert next_event(proc)["event"] == "hello"
        proc.stdin.write(jobs_line([job]))
        proc.stdin.flush()
        while True:  # until both workers reported their step
            event = next_event(proc)
            if event["event"] == "live":
                seen = ranks_of(event)
                if all(one.progress is not None for one, _ in seen.values()):
                    break
        assert {rank: one.progress.step for rank, (one, _) in seen.items()} == {0: 5, 1: 7}
        assert sorted(one.pid for one, _ in seen.values()) == sorted(recorded(pids))
        assert all(one.returncode is None and usage.rss > 0 for one, usage in seen.values())
        proc.stdin.close()  # the launcher went away: the agent stops its job
        events = []
        while not events or events[-1]["event"] != "done":
            events.append(next_event(proc))
        last = ranks_of([e for e in events if e["event"] == "live"][-1])
        assert {rank: one.returncode for rank, (one, _) in last.items()} == {0: -1, 1: -1}  # SIGHUP, as sent
        assert proc.wait(timeout=30) != 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        kill_survivors(pids)
