"""Run a WorldPlan across hosts over SSH: pre-flight every host in parallel, fix the rendezvous, start one node
agent per host, relay their output, and stop everything together when anything fails or we are told to stop.
"""

from __future__ import annotations

import ipaddress
import os
import queue
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

from dsrun.errors import UsageError
from dsrun.launcher.backends.agents import run_agents
from dsrun.launcher.backends.envfile import remote_env
from dsrun.launcher.backends.local import prepare_log_dir
from dsrun.launcher.backends.relay import Relay
from dsrun.launcher.backends.report import EXIT_CONNECTION_LOST, agent_failed, failed_rank, lost_host
from dsrun.launcher.backends.ssh.config import resolve_target
from dsrun.launcher.backends.ssh.connection import HostError
from dsrun.launcher.backends.ssh.session import LOST, HostSession
from dsrun.launcher.node.protocol import jobs_line
from dsrun.launcher.node.supervisor import FORWARDED_SIGNALS
from dsrun.launcher.plan.world import WorldPlan, with_rendezvous

HANG_UP_AFTER = 10.0  # beyond the shutdown timeout: agents still running then lose their connection


def _sessions(plan: WorldPlan, accept_new: bool, timeout: float) -> list[HostSession]:
    setup = plan.remote
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
    address, port = plan.master_addr, plan.master_port
    if plan.remote.address_at_launch:
        address = first.hello.peer_address
        if ipaddress.ip_address(address.split("%")[0]).is_loopback and len(sessions) > 1:
            raise UsageError(f"the first host {first.host} is reached at {address}, which the other hosts cannot "
                             "use: pass --master_addr with an address they reach it at")
    if plan.remote.port_at_launch:
        port = first.hello.free_port
    return with_rendezvous(plan, address, port)


class SshJob:
    """The running job: every host's agent, and the rule that the first failure or signal stops them all."""

    def __init__(self, plan: WorldPlan, sessions: list[HostSession], relay: Relay, shutdown_timeout: float,
                 quiet: bool):
        self.plan = plan
        self.sessions = sessions
        self.relay = relay
        self.shutdown_timeout = shutdown_timeout
        self.quiet = quiet
        self.events: queue.Queue = queue.Queue()
        self.failure: HostSession | None = None
        self.signal: int | None = None
        self._hang_up_at: float | None = None

    def on_event(self, session: HostSession, event: dict) -> None:
        if event["event"] == "done":
            session.done = event
        elif event["event"] == "node" and not self.quiet:
            self.relay.say(f"{session.host}: ranks {event['ranks']} started; {event['interface']}")

    def _on_signal(self, signum: int, _frame) -> None:
        self.events.put(("signal", signum))

    def _stop_all(self, running: set[HostSession], signum: int) -> None:
        for session in running:
            session.stop(signum)
        self._hang_up_at = time.monotonic() + self.shutdown_timeout + HANG_UP_AFTER

    def _ended(self, session: HostSession, running: set[HostSession]) -> None:
        running.discard(session)
        if session.exit_status == 0 or self.failure is not None or self.signal is not None:
            return
        self.failure = session
        if running:
            self.relay.say(f"{session.host} failed; stopping the other {len(running)} host(s)")
            self._stop_all(running, signal.SIGTERM)

    def run(self, jobs) -> int:
        previous = {sig: signal.signal(sig, self._on_signal) for sig in FORWARDED_SIGNALS}
        running = set(self.sessions)
        try:
            for session, job in zip(self.sessions, jobs, strict=True):
                session.start(jobs_line([job]), self.relay, lambda s: self.events.put(("end", s)))
            while running:
                try:
                    kind, value = self.events.get(timeout=0.2)
                except queue.Empty:
                    if self._hang_up_at is not None and time.monotonic() > self._hang_up_at:
                        for session in running:
                            session.hang_up()
                        self._hang_up_at = None
                    continue
                if kind == "end":
                    self._ended(value, running)
                elif self.signal is None:
                    self.signal = value
                    self.relay.say(f"received {signal.Signals(value).name}; stopping all hosts")
                    self._stop_all(running, value)
                else:  # asked twice: stop waiting for a graceful end
                    for session in running:
                        session.hang_up()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            for session in self.sessions:
                session.hang_up()
            self.relay.close()
        return self._exit_code()

    def _exit_code(self) -> int:
        if self.signal is not None:
            return 128 + self.signal
        session = self.failure
        if session is None:
            return 0
        if session.exit_status == LOST:
            self.relay.say(lost_host(session.node, "lost the SSH connection to"))
            return EXIT_CONNECTION_LOST
        failure = (session.done or {}).get("failure")
        self.relay.say(failed_rank(session.node, failure) if failure else agent_failed(session.node,
                                                                                       session.exit_status))
        return session.exit_status


def run_ssh(plan: WorldPlan, *, log_dir: Path | None, quiet: bool, shutdown_timeout: float, accept_new: bool,
            ssh_timeout: float) -> int:
    if log_dir is not None:
        prepare_log_dir(log_dir)
    sessions = _sessions(plan, accept_new, ssh_timeout)
    preflight(sessions)
    try:
        plan = rendezvous(plan, sessions)
        env, _ = remote_env(dict(os.environ), Path(plan.remote.cwd), Path(os.path.expanduser("~")))
    except UsageError:
        for session in sessions:
            session.hang_up()
        raise
    relay = Relay(console=not (quiet and log_dir is not None), log_dir=log_dir, on_event=None)
    job = SshJob(plan, sessions, relay, shutdown_timeout, quiet)
    return run_agents(plan, relay, job, env, where=f"{len(sessions)} host(s)", shutdown_timeout=shutdown_timeout,
                      quiet=quiet)
