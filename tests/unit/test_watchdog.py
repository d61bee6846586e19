"""Which processes the watchdog counts as the job's (dsrun.launcher.node.watchdog): the token in the environment,
the workers' process groups, the children of either; and one real scan of /proc that kills what it finds."""

import os
import subprocess

from dsrun.launcher.node.watchdog import (
    JOB_TOKEN_ENV,
    ProcInfo,
    carries_token,
    job_processes,
    kill_job,
    snapshot,
    token_value,
)
from tests.pids import running

TOKEN = "0123456789abcdef0123456789abcdef"


def environ(**variables: str) -> bytes:
    return b"".join(f"{key}={value}".encode() + b"\0" for key, value in variables.items())


def test_the_token_is_read_from_its_variable_only():
    assert carries_token(environ(HOME="/root", **{JOB_TOKEN_ENV: TOKEN}), TOKEN)
    assert not carries_token(environ(HOME="/root"), TOKEN)
    assert not carries_token(environ(**{JOB_TOKEN_ENV: "another"}), TOKEN)
    assert not carries_token(environ(**{JOB_TOKEN_ENV: TOKEN + "0"}), TOKEN)  # the whole token, not a prefix
    assert not carries_token(environ(OTHER=TOKEN), TOKEN)
    assert not carries_token(b"", TOKEN)


def test_a_nested_job_keeps_the_outer_token():
    value = token_value("outer", TOKEN)
    assert value == f"outer,{TOKEN}" and token_value(None, TOKEN) == TOKEN
    assert carries_token(environ(**{JOB_TOKEN_ENV: value}), TOKEN)
    assert carries_token(environ(**{JOB_TOKEN_ENV: value}), "outer")


def proc(ppid: int, pgid: int, *, token: bool = False, zombie: bool = False) -> ProcInfo:
    return ProcInfo(ppid=ppid, pgid=pgid, zombie=zombie, has_token=token)


def test_token_carriers_worker_groups_and_their_children_belong_to_the_job():
    procs = {
        1: proc(0, 1),  # init
        50: proc(1, 50),  # the watchdog, in its own session
        60: proc(1, 60),  # an unrelated process
        61: proc(60, 60),  # its child
        100: proc(1, 100, token=True),  # a worker whose supervisor died: re-parented
        101: proc(100, 100),  # in the worker's group, environment cleared
        102: proc(1, 102, token=True),  # a new session, orphaned
        103: proc(102, 103),  # cleared environment and a new group, but its parent is the job's
        104: proc(103, 104),  # and its child
        105: proc(1, 100, zombie=True),  # dead already
    }
    assert job_processes(procs, {100}, me=50) == {100, 101, 102, 103, 104}
    assert job_processes(procs, set(), me=50) == {100, 101, 102, 103, 104}  # the token and the children suffice
    assert job_processes({**procs, 101: proc(1, 100)}, set(), me=50) == {100, 102, 103, 104}
    assert job_processes({**procs, 101: proc(1, 100)}, {100}, me=50) == {100, 101, 102, 103, 104}
    assert job_processes(procs, {100}, me=100) == {101, 102, 103, 104}  # never itself


def test_a_group_counts_while_its_leader_is_gone_or_the_jobs_but_not_when_a_stranger_leads_it():
    member = {7: proc(1, 5)}
    assert job_processes(member, {5}, me=0) == {7}  # the worker (leader) is gone
    assert job_processes({**member, 5: proc(1, 5, token=True)}, {5}, me=0) == {5, 7}
    assert job_processes({**member, 5: proc(1, 5, zombie=True)}, {5}, me=0) == {7}
    # The group's number was taken again, by a process that is not the job's (it leads its own group now)
    assert job_processes({**member, 5: proc(1, 5)}, {5}, me=0) == set()


def test_a_real_scan_finds_and_kills_the_token_carrier_only():
    env = {**os.environ, JOB_TOKEN_ENV: token_value(None, TOKEN)}
    carrier = subprocess.Popen(["sleep", "60"], env=env, start_new_session=True)
    stranger = subprocess.Popen(["sleep", "60"], start_new_session=True)
    try:
        found = job_processes(snapshot(TOKEN), set(), os.getpid())
        assert carrier.pid in found and stranger.pid not in found
        killed, stuck = kill_job(TOKEN, set(), os.getpid())
        assert (killed, stuck) == (1, [])
        carrier.wait(timeout=10)
        assert carrier.returncode == -9 and running(stranger.pid)
    finally:
        for p in (carrier, stranger):
            p.kill()
            p.wait()
