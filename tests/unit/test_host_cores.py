"""A node agent redoes the launcher's core split with its own host's cores, keeping what the user fixed."""

import pytest

from dsrun.errors import UsageError
from dsrun.launcher.node.host_cores import fit_to_host
from dsrun.launcher.node.protocol import NodeJob, jobs_line, parse_jobs
from dsrun.launcher.plan.world import RankPlan


def planned(local_size, cores_each=None):
    """Ranks as a 4-core launching machine plans them."""
    return [RankPlan(rank=i, local_rank=i, node_rank=1, host="big", slot=i,
                     env={"RANK": str(i), "OMP_NUM_THREADS": "2"}, command=["python", "train.py"],
                     cores=None if cores_each is None else list(range(i * cores_each, (i + 1) * cores_each)))
            for i in range(local_size)]


def test_threads_follow_the_hosts_own_cores():
    fitted = fit_to_host(planned(2), list(range(96)), {}, blocks_from_cores=True)
    assert [r.env["OMP_NUM_THREADS"] for r in fitted] == ["48", "48"]
    assert [r.env["RANK"] for r in fitted] == ["0", "1"] and all(r.cores is None for r in fitted)


def test_binding_splits_the_hosts_cores_and_threads_match_the_block():
    fitted = fit_to_host(planned(2, cores_each=2), [4, 5, 6, 7, 8, 9], {}, blocks_from_cores=True)
    assert [r.cores for r in fitted] == [[4, 5, 6], [7, 8, 9]]
    assert [r.env["OMP_NUM_THREADS"] for r in fitted] == ["3", "3"]


def test_the_hosts_own_thread_count_and_named_cores_are_kept():
    ranks = planned(2, cores_each=2)
    fitted = fit_to_host(ranks, list(range(96)), {"OMP_NUM_THREADS": "5"}, blocks_from_cores=False)
    assert [r.cores for r in fitted] == [[0, 1], [2, 3]]
    assert all("OMP_NUM_THREADS" not in r.env for r in fitted)  # the host's 5 reaches the workers unchanged
    named = fit_to_host(ranks, list(range(96)), {}, blocks_from_cores=False)
    assert [r.cores for r in named] == [[0, 1], [2, 3]] and named[0].env["OMP_NUM_THREADS"] == "2"


def test_a_host_with_too_few_cores_to_bind_is_an_error():
    with pytest.raises(UsageError, match="cannot bind 2 workers to 1 core"):
        fit_to_host(planned(2, cores_each=1), [0], {}, blocks_from_cores=True)


def test_the_flag_travels_in_the_job_line():
    job = NodeJob(1, "big", planned(1), {}, "10.0.0.1", 5.0, blocks_from_cores=False)
    [back] = parse_jobs(jobs_line([job]))
    assert back.blocks_from_cores is False and back.ranks == job.ranks
