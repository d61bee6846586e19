"""Slurm's compact node lists and counts, the allocation read from SLURM_* variables, and the srun command."""

import pytest

from dsrun.errors import UsageError
from dsrun.launcher.plan.slurm_allocation import (
    allocation_from,
    expand_counts,
    expand_nodelist,
    port_for_job,
    slurm_pool,
    srun_command,
)


@pytest.mark.parametrize(("text", "names"), [
    ("node1", ["node1"]),
    ("gpu[01-03,07],login1", ["gpu01", "gpu02", "gpu03", "gpu07", "login1"]),
    ("a[8-10]", ["a8", "a9", "a10"]),
    ("r[1-2]n[1-2]", ["r1n1", "r1n2", "r2n1", "r2n2"]),
    ("x-[009-011].dc", ["x-009.dc", "x-010.dc", "x-011.dc"]),
])
def test_expand_nodelist(text, names):
    assert expand_nodelist(text) == names


@pytest.mark.parametrize("text", ["gpu[1-2", "gpu[a-b]"])
def test_bad_nodelist_is_a_usage_error(text):
    with pytest.raises(UsageError):
        expand_nodelist(text)


def test_expand_counts():
    assert expand_counts("2(x3),1") == [2, 2, 2, 1]
    assert expand_counts("4") == [4]


ENV = {"SLURM_JOB_ID": "4711", "SLURM_JOB_NODELIST": "n[1-2]", "SLURM_TASKS_PER_NODE": "2(x2)",
       "SLURM_JOB_CPUS_PER_NODE": "8,6"}


def test_allocation_and_pool():
    alloc = allocation_from(ENV)
    assert alloc.nodes == ["n1", "n2"] and alloc.tasks_per_node == [2, 2] and alloc.cpus_per_node == [8, 6]
    assert slurm_pool(alloc, gpu_kind=False, gpus_here=0) == {"n1": [0, 1], "n2": [0, 1]}
    assert slurm_pool(alloc, gpu_kind=True, gpus_here=4) == {"n1": [0, 1, 2, 3], "n2": [0, 1, 2, 3]}


def test_outside_an_allocation_is_a_usage_error():
    with pytest.raises(UsageError, match="inside a Slurm allocation"):
        allocation_from({})


def test_counts_that_do_not_fit_the_nodes_are_refused():
    with pytest.raises(UsageError, match="SLURM_TASKS_PER_NODE gives 1 count"):
        allocation_from({**ENV, "SLURM_TASKS_PER_NODE": "2"})


def test_job_port_differs_between_jobs_and_stays_below_ephemeral_ports():
    assert port_for_job("4711") != port_for_job("4712")
    assert all(10000 <= port_for_job(str(j)) < 32768 for j in (0, 19999, 20000, 987654321))


def test_srun_command_starts_one_agent_per_node():
    command = srun_command(["n1", "n2"], "/venv/bin/python", cwd="/work", cpus_per_task=6, gpus_per_node=None,
                           launcher_args=["--exclusive"])
    assert command == ["srun", "--nodes=2", "--ntasks=2", "--ntasks-per-node=1", "--nodelist=n1,n2",
                       "--kill-on-bad-exit=1", "--input=all", "--cpus-per-task=6", "--chdir=/work", "--exclusive",
                       "/venv/bin/python", "-u", "-m", "dsrun.launcher.node", "--slurm"]
