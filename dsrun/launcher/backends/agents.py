"""What the SSH and Slurm backends share once their node agents can be reached: the job loop (the first failure or
signal stops every node, a second signal or the grace period's end stops them hard) and announce, run, report.

A backend says how its agents are started, told to stop and cut off; the loop, the messages and the signal
handling are the same for both, so a job behaves the same however its hosts were reached.
"""

from __future__ import annotations

import queue
import signal
import time

from dsrun.exit_codes import PREEMPTED
from dsrun.launcher.backends.relay import Relay
from dsrun.launcher.node.protocol import jobs_for
from dsrun.launcher.node.stacks import ANNOUNCE, STACK_SIGNAL
from dsrun.launcher.node.supervisor import FORWARDED_SIGNALS
from dsrun.launcher.plan.world import WorldPlan

GRACE_AFTER_SHUTDOWN = 10.0  # seconds beyond --shutdown-timeout before agents still running are cut off


class AgentJob:
    """The running job. A backend implements start, handle, signal_agents, cut_off, close and exit_code."""

    nodes = "nodes"  # what the messages call the backend's hosts

    def __init__(self, plan: WorldPlan, relay: Relay, shutdown_timeout: float, quiet: bool):
        self.plan = plan
        self.relay = relay
        self.shutdown_timeout = shutdown_timeout
        self.quiet = quiet
        self.events: queue.Queue = queue.Queue()
        self.signal: int | None = None
        self._cut_off_at: float | None = None
        self.done_codes: dict[int, int] = {}  # node rank -> the exit code its agent reported

    # -- what a backend provides ---------------------------------------------------------------------------------
    def start(self, jobs) -> None:
        raise NotImplementedError

    def handle(self, kind: str, value) -> bool:
        """A backend's own event (anything but a signal); True when the job is over."""
        raise NotImplementedError

    def signal_agents(self, signum: int) -> None:
        """Pass `signum` to every agent still running: a stop, or STACK_SIGNAL for a stack dump."""
        raise NotImplementedError

    def cut_off(self) -> None:
        """Stop waiting for a graceful end: end the agents' connections or processes."""
        raise NotImplementedError

    def close(self) -> None:
        """After the loop, whatever happened: nothing of the job may outlive it."""

    def exit_code(self) -> int:
        raise NotImplementedError

    def agent_event(self, source, event: dict) -> None:
        """An event from an agent other than "node" (called on a relay thread)."""

    # -- the loop ------------------------------------------------------------------------------------------------
    def on_event(self, source, event: dict) -> None:
        if event["event"] == "done":
            self.done_codes[int(event["node_rank"])] = int(event["code"])
        if event["event"] == "node":
            if not self.quiet:
                self.relay.say(f"{event['host']}: ranks {event['ranks']} started; {event['interface']}")
        else:
            self.agent_event(source, event)

    def stop_all(self, signum: int) -> None:
        self.signal_agents(signum)
        self._cut_off_at = time.monotonic() + self.shutdown_timeout + GRACE_AFTER_SHUTDOWN

    def failed(self, host: str, others: str) -> None:
        """`host` failed first: say so and stop the others (described by `others`)."""
        self.relay.say(f"{host} failed; stopping the other {others}")
        self.stop_all(signal.SIGTERM)

    def _on_signal(self, signum: int, _frame) -> None:
        self.events.put(("signal", signum))

    def _on_stack_signal(self, _signum: int, _frame) -> None:
        self.events.put(("stacks", None))

    def run(self, jobs) -> int:
        previous = {sig: signal.signal(sig, self._on_signal) for sig in FORWARDED_SIGNALS}
        previous[STACK_SIGNAL] = signal.signal(STACK_SIGNAL, self._on_stack_signal)
        try:
            self.start(jobs)
            while True:
                try:
                    kind, value = self.events.get(timeout=0.2)
                except queue.Empty:
                    if self._cut_off_at is not None and time.monotonic() > self._cut_off_at:
                        self.cut_off()
                        self._cut_off_at = None
                    continue
                if kind == "stacks":  # every agent has its ranks print their stacks; nothing stops
                    self.relay.say(ANNOUNCE)
                    if self.signal is None:
                        self.signal_agents(STACK_SIGNAL)
                elif kind != "signal":
                    if self.handle(kind, value):
                        break
                elif self.signal is None:
                    self.signal = value
                    self.relay.say(f"received {signal.Signals(value).name}; stopping all {self.nodes}")
                    self.stop_all(value)
                else:  # asked twice: stop waiting for a graceful end
                    self.cut_off()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            self.close()
            self.relay.close()
        if self.signal is None:
            return self.exit_code()
        nodes = len(self.plan.nodes)
        if len(self.done_codes) == nodes and set(self.done_codes.values()) == {PREEMPTED}:
            return PREEMPTED  # every rank saved a checkpoint and stopped (checkpoint.save_dir)
        return 128 + self.signal


def run_agents(plan: WorldPlan, relay: Relay, job: AgentJob, env: dict[str, str], *, where: str,
               shutdown_timeout: float, quiet: bool) -> int:
    """Ship every node its ranks through `job` and return the job's exit code.

    `where` names the hosts in the launcher's messages, e.g. "2 host(s)" or "2 Slurm node(s)".
    """
    relay.on_event = job.on_event
    if not quiet:
        for note in plan.notes:
            relay.say(f"note: {note}")
        relay.say(f"starting {plan.world_size} worker(s) on {where} ({plan.accelerator}, {plan.backend}),"
                  f" master {plan.master_addr}:{plan.master_port}")
    code = job.run(jobs_for(plan, env, shutdown_timeout))
    if code == 0 and not quiet:
        relay.say(f"all {plan.world_size} worker(s) on {where} finished")
    return code
