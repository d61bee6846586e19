"""Run a WorldPlan across hosts over SSH: pre-flight every host in parallel, fix the rendezvous, start one node
agent per host, relay their output, and stop everything together when anything fails or we are told to stop.
"""

from __future__ import annotations

import ipaddress
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

from dsrun.errors import UsageError
from dsrun.launcher.backends.agents import AgentJob, run_agents
from dsrun.launcher.backends.envfile import remote_env
from dsrun.launcher.backends.failure_groups import from_done_events
from dsrun.launcher.backends.local import prepare_log_dir
from dsrun.launcher.backends.relay import Relay
from dsrun.launcher.backends.report import EXIT_CONNECTION_LOST, agent_failed, lost_host
from dsrun.launcher.backends.ssh.config import resolve_target
from dsrun.launcher.backends.ssh.connection import HostError
from dsrun.launcher.backends.ssh.session import LOST, HostSession
from dsrun.launcher.node.protocol import jobs_line
from dsrun.launcher.plan.world import WorldPlan, with_rendezvous


def _sessions(plan: WorldPlan, accept_new: bool, timeout: float) -> list[HostSession]:
    setup = plan.reach
    sessions = []
    for node, host in zip(plan.nodes, setup.hosts, strict=True):
        target = replace(resolve_target(host.host), port=host.port)  # the plan already applied --ssh_port
        sessions.append(HostSession(node, target, setup.agent_command, python=setup.python, cwd=setup.cwd,
                                    accept_new=accept_new, timeout=timeout))
    return sessions


def preflight(sessions: list[HostSession]) -> None:
    """Reach every host and start its agent, all at once; one error line per host that cannot take part."""
    errors: dict[str, str] = {}

    def open_one(session: HostSession) -> None:
        try:
            session.open()
        except HostError as err:
            errors[session.host] = str(err)

    with ThreadPoolExecutor(max_workers=min(64, len(sessions))) as pool:
        list(pool.map(open_one, sessions))
    if errors:
        for session in sessions:
            session.hang_up()  # agents waiting for a job take the closed stdin as "called off"
        lines = [errors[s.host] for s in sessions if s.host in errors]
        raise UsageError(f"cannot start on {len(lines)} of {len(sessions)} host(s):\n  " + "\n  ".join(lines))


def rendezvous(plan: WorldPlan, sessions: list[HostSession]) -> WorldPlan:
    """MASTER_ADDR: the address the first host was reached at (not what it thinks its name resolves to);
    MASTER_PORT: a port its agent found free."""
    first = sessions[0]
    hello = first.hello
    if hello is None:
        raise RuntimeError(f"{first.host}: no hello from its agent (preflight comes first)")
    address, port = plan.master_addr, plan.master_port
    if plan.reach.address_at_launch:
        address = hello.peer_address
        if ipaddress.ip_address(address.split("%")[0]).is_loopback and len(sessions) > 1:
            raise UsageError(f"the first host {first.host} is reached at {address}, which the other hosts cannot "
                             "use: pass --master_addr with an address they reach it at")
    if plan.reach.port_at_launch:
        port = hello.free_port
    return with_rendezvous(plan, address, port)


class SshJob(AgentJob):
    """Every host's agent over its own SSH session; the job ends when every session has."""

    nodes = "hosts"

    def __init__(self, plan: WorldPlan, sessions: list[HostSession], relay: Relay, shutdown_timeout: float,
                 quiet: bool, hang_timeout: float | None = None, log_dir: Path | None = None):
        super().__init__(plan, relay, shutdown_timeout, quiet, hang_timeout, log_dir)
        self.sessions = sessions
        self.running = set(sessions)
        self.failure: HostSession | None = None

    def agent_event(self, session: HostSession, event: dict) -> None:
        if event["event"] == "done":
            session.done = event

    def start(self, jobs) -> None:
        for session, job in zip(self.sessions, jobs, strict=True):
            session.start(jobs_line([job]), self.relay, lambda s: self.events.put(("end", s)))

    def handle(self, kind: str, session: HostSession) -> bool:
        self.running.discard(session)
        if session.exit_status != 0 and self.failure is None and self.signal is None and self.hang is None:
            self.failure = session
            if self.running:
                self.failed(session.host, f"{len(self.running)} host(s)")
        return not self.running

    def signal_agents(self, signum: int) -> None:
        for session in self.running:
            session.stop(signum)

    def tell_agents(self, line: bytes) -> None:
        for session in self.running:
            session.send(line)

    def running_nodes(self) -> set[int]:
        return {session.node.node_rank for session in self.running}

    def cut_off(self) -> None:
        for session in self.running:
            session.hang_up()

    def close(self) -> None:
        for session in self.sessions:
            session.hang_up()

    def exit_code(self) -> int:
        session = self.failure
        if session is None:
            return 0
        if session.exit_status == LOST:
            self.relay.say(lost_host(session.node, "lost the SSH connection to"))
            return EXIT_CONNECTION_LOST
        status = session.exit_status if session.exit_status is not None else LOST  # a failure has ended
        # The failing host's report first; the others add their ranks' exits.
        done = [s.done for s in sorted(self.sessions, key=lambda s: s is not session) if s.done]
        report = None
        if session.done:
            report = from_done_events(done, {rank.rank: rank.host for rank in self.plan.ranks})
        self.relay.say(report or agent_failed(session.node, status))
        return status


def run_ssh(plan: WorldPlan, *, log_dir: Path | None, quiet: bool, shutdown_timeout: float, accept_new: bool,
            ssh_timeout: float, hang_timeout: float | None = None, live: bool = False) -> int:
    if log_dir is not None:
        prepare_log_dir(log_dir)
    sessions = _sessions(plan, accept_new, ssh_timeout)
    preflight(sessions)
    try:
        plan = rendezvous(plan, sessions)
        env, _ = remote_env(dict(os.environ), Path(plan.reach.cwd), Path(os.path.expanduser("~")))
    except UsageError:
        for session in sessions:
            session.hang_up()
        raise
    relay = Relay(console=not (quiet and log_dir is not None), log_dir=log_dir, on_event=None)
    job = SshJob(plan, sessions, relay, shutdown_timeout, quiet, hang_timeout, log_dir)
    return run_agents(plan, relay, job, env, where=f"{len(sessions)} host(s)", shutdown_timeout=shutdown_timeout,
                      quiet=quiet, live=live)
