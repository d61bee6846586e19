"""What the SSH and Slurm backends share once their node agents can be reached: the job loop (the first failure or
signal stops every node, a second signal or the grace period's end stops them hard) and announce, run, report.

A backend says how its agents are started, told to stop and cut off; the loop, the messages and the signal
handling are the same for both, so a job behaves the same however its hosts were reached. With --hang-timeout the
loop also decides whether the job hangs, from the steps every agent relays (timed by this machine's clock when they
arrive); on a hang it asks every agent for its ranks' stacks, reports, and stops the job (exit code EXIT_HANG).
"""

from __future__ import annotations

import contextlib
import queue
import signal
import time
from pathlib import Path

from dsrun.exit_codes import PREEMPTED
from dsrun.launcher.backends.relay import Relay
from dsrun.launcher.hang.detect import Hang, HangDetector
from dsrun.launcher.hang.report import report_hang
from dsrun.launcher.node.progress import Steps
from dsrun.launcher.node.protocol import collect_line, jobs_for
from dsrun.launcher.node.stacks import ANNOUNCE, STACK_SIGNAL, RankStack
from dsrun.launcher.node.supervisor import EXIT_HANG, FORWARDED_SIGNALS
from dsrun.launcher.plan.world import WorldPlan

GRACE_AFTER_SHUTDOWN = 10.0  # seconds beyond --shutdown-timeout before agents still running are cut off
STACKS_WAIT = 30.0  # for every node's stacks after a hang (py-spy on many ranks is slow); then report what came


class AgentJob:
    """The running job. A backend implements start, handle, signal_agents, cut_off, close and exit_code."""

    nodes = "nodes"  # what the messages call the backend's hosts

    def __init__(self, plan: WorldPlan, relay: Relay, shutdown_timeout: float, quiet: bool,
                 hang_timeout: float | None = None, log_dir: Path | None = None):
        self.plan = plan
        self.relay = relay
        self.shutdown_timeout = shutdown_timeout
        self.quiet = quiet
        self.events: queue.Queue = queue.Queue()
        self.signal: int | None = None
        self._cut_off_at: float | None = None
        self.done_codes: dict[int, int] = {}  # node rank -> the exit code its agent reported
        self.hang_timeout = hang_timeout
        self.log_dir = log_dir
        self.detector = HangDetector(hang_timeout) if hang_timeout is not None else None
        self.hang: Hang | None = None
        self._node_steps: dict[int, Steps] = {}  # per node: its running ranks' last steps
        self._stacks: dict[int, RankStack] = {}
        self._stacks_from: set[int] = set()  # nodes whose stacks arrived
        self._stacks_until: float | None = None  # while waiting for stacks: until when

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
        """An event from an agent other than "node", "progress" and "stacks" (called on a relay thread)."""

    def tell_agents(self, line: bytes) -> None:
        """Send one protocol line to every agent still running."""
        raise NotImplementedError

    def running_nodes(self) -> set[int]:
        """The node ranks whose agents still run."""
        raise NotImplementedError

    # -- the loop ------------------------------------------------------------------------------------------------
    def on_event(self, source, event: dict) -> None:
        if event["event"] == "done":
            self.done_codes[int(event["node_rank"])] = int(event["code"])
        if event["event"] == "node":
            if not self.quiet:
                self.relay.say(f"{event['host']}: ranks {event['ranks']} started; {event['interface']}")
        elif event["event"] in ("progress", "stacks"):
            self.events.put((event["event"], event))  # handled on the loop's thread, with its clock
        else:
            self.agent_event(source, event)

    # -- --hang-timeout ------------------------------------------------------------------------------------------
    def _on_progress(self, event: dict) -> None:
        self._node_steps[int(event["node_rank"])] = {int(rank): step for rank, step in event["steps"].items()}

    def _on_stacks(self, event: dict) -> None:
        self._stacks_from.add(int(event["node_rank"]))
        for rank, stack in event["stacks"].items():
            self._stacks[int(rank)] = RankStack(**stack)

    def _watch_progress(self, now: float) -> None:
        """Decide on a hang (then ask for stacks); once every node's stacks came, or the wait ended, report and stop."""
        if self.detector is None or self.signal is not None:
            return
        if self.hang is None:
            running = self.running_nodes()
            steps = {rank: step for node, ranks in self._node_steps.items() if node in running
                     for rank, step in ranks.items()}
            self.detector.observe(steps, now)
            self.hang = self.detector.check(now)
            if self.hang is not None:
                self.tell_agents(collect_line())
                self._stacks_until = now + STACKS_WAIT
            return
        if self._stacks_until is None:
            return  # reported already; the job is stopping
        if self._stacks_from >= self.running_nodes() or now > self._stacks_until:
            hosts = {rank.rank: rank.host for rank in self.plan.ranks}
            report_hang(self.hang, self._stacks, self.detector.timeout, self.log_dir, self.relay.say, hosts)
            self._stacks_until = None
            self.stop_all(signal.SIGTERM)

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
        self.events.put(("dump", None))

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
                    self._watch_progress(time.monotonic())
                    continue
                if kind in ("progress", "stacks"):
                    (self._on_progress if kind == "progress" else self._on_stacks)(value)
                    self._watch_progress(time.monotonic())
                elif kind == "dump":  # every agent has its ranks print their stacks; nothing stops
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
        if self.hang is not None and self.signal is None:
            return EXIT_HANG
        if self.signal is None:
            return self.exit_code()
        nodes = len(self.plan.nodes)
        if len(self.done_codes) == nodes and set(self.done_codes.values()) == {PREEMPTED}:
            return PREEMPTED  # every rank saved a checkpoint and stopped (checkpoint.save_dir)
        return 128 + self.signal


def run_agents(plan: WorldPlan, relay: Relay, job: AgentJob, env: dict[str, str], *, where: str,
               shutdown_timeout: float, quiet: bool, live: bool = False) -> int:
    """Ship every node its ranks through `job` and return the job's exit code.

    `where` names the hosts in the launcher's messages, e.g. "2 host(s)" or "2 Slurm node(s)". `live`: draw the live
    view (the caller has checked stdout is a terminal) from the rows every agent relays.
    """
    relay.on_event = job.on_event
    view = None
    if live:
        from dsrun.launcher.live.relayed import route_live_events
        from dsrun.launcher.live.view import LiveView

        view = LiveView({rank.rank: rank.host for rank in plan.ranks})
        relay.screen = view
        relay.on_event = route_live_events(job.on_event, view)
    if not quiet:
        for note in plan.notes:
            relay.say(f"note: {note}")
        relay.say(f"starting {plan.world_size} worker(s) on {where} ({plan.accelerator}, {plan.backend}),"
                  f" master {plan.master_addr}:{plan.master_port}")
    with view if view is not None else contextlib.nullcontext():
        code = job.run(jobs_for(plan, env, shutdown_timeout, report_progress=job.detector is not None,
                                report_live=live))
    if code == 0 and not quiet:
        relay.say(f"all {plan.world_size} worker(s) on {where} finished")
    return code
