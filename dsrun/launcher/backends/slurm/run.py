"""Run a WorldPlan inside a Slurm allocation: one srun step with one node agent per node.

Every agent reads the same stdin (srun --input=all): the job list first, later a stop request that reaches all
nodes at once. srun runs in its own process group so a terminal's Ctrl-C reaches dsrun only (srun would otherwise
take a single SIGINT as "print status"); dsrun then stops the agents itself, and if dsrun dies, srun dies with
it and the agents see their input end.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
from pathlib import Path

from dsrun.errors import UsageError
from dsrun.launcher.backends.agents import AgentJob, run_agents
from dsrun.launcher.backends.envfile import remote_env
from dsrun.launcher.backends.failure_groups import from_done_events
from dsrun.launcher.backends.local import prepare_log_dir
from dsrun.launcher.backends.relay import Relay, pump
from dsrun.launcher.backends.report import agent_failed
from dsrun.launcher.node import proctree
from dsrun.launcher.node.protocol import jobs_line, signal_line
from dsrun.launcher.node.supervisor import exit_code_of
from dsrun.launcher.plan.world import WorldPlan


class SlurmJob(AgentJob):
    nodes = "nodes"

    def __init__(self, plan: WorldPlan, relay: Relay, shutdown_timeout: float, quiet: bool,
                 hang_timeout: float | None = None, log_dir: Path | None = None):
        super().__init__(plan, relay, shutdown_timeout, quiet, hang_timeout, log_dir)
        self.done: dict[int, dict] = {}
        self.first_failure: dict | None = None
        self._srun: subprocess.Popen[bytes] | None = None

    def agent_event(self, _source, event: dict) -> None:
        if event["event"] == "done":
            self.events.put(("done", event))

    @property
    def srun(self) -> subprocess.Popen[bytes]:
        if self._srun is None:
            raise RuntimeError("srun was not started (start() comes first)")
        return self._srun

    def _write(self, line: bytes) -> None:
        stdin = self.srun.stdin
        if stdin is None:
            raise OSError("srun's stdin is closed")
        stdin.write(line)
        stdin.flush()

    def start(self, jobs) -> None:
        command = self.plan.reach.srun
        if command is None:
            raise RuntimeError("a Slurm plan without its srun command")
        try:
            srun = self._srun = subprocess.Popen(
                command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                process_group=0, preexec_fn=proctree.make_child_setup(os.getpid(), None),
            )
        except OSError as err:
            raise UsageError(f"cannot run srun: {err.strerror or err}; is Slurm installed here?") from None
        self._write(jobs_line(jobs))
        pumps = [threading.Thread(target=pump, args=(stream, self.relay, None, fd), daemon=True)
                 for stream, fd in ((srun.stdout, 1), (srun.stderr, 2))]
        for thread in pumps:
            thread.start()

        def ended() -> None:
            # After the agents' last lines: every node's `done` event is queued before the exit that ends the loop.
            code = srun.wait()
            for thread in pumps:
                thread.join()
            self.events.put(("exit", code))

        threading.Thread(target=ended, daemon=True).start()

    def handle(self, kind: str, value) -> bool:
        if kind == "exit":
            return True
        self.done[int(value["node_rank"])] = value
        if value["code"] != 0 and self.first_failure is None and self.signal is None and self.hang is None:
            self.first_failure = value
            self.failed(self.plan.nodes[value["node_rank"]].host, "nodes")
        return False

    def signal_agents(self, signum: int) -> None:
        self.tell_agents(signal_line(signum))

    def tell_agents(self, line: bytes) -> None:
        # Every agent reads the same stdin: one line reaches all nodes.
        try:
            self._write(line)
        except OSError:
            pass  # srun is gone already

    def running_nodes(self) -> set[int]:
        return {node.node_rank for node in self.plan.nodes if node.node_rank not in self.done}

    def cut_off(self) -> None:
        self.srun.send_signal(signal.SIGKILL)

    def close(self) -> None:
        if self._srun is not None and self._srun.poll() is None:
            self._srun.kill()
            self._srun.wait()

    def exit_code(self) -> int:
        failure = self.first_failure
        if failure is not None:
            node = self.plan.nodes[failure["node_rank"]]
            done = [failure] + [event for event in self.done.values() if event is not failure]
            report = from_done_events(done, {rank.rank: rank.host for rank in self.plan.ranks})
            self.relay.say(report or agent_failed(node, failure["code"]))
            return int(failure["code"])
        code = self.srun.returncode
        if code != 0:
            missing = [n.host for n in self.plan.nodes if n.node_rank not in self.done]
            self.relay.say(f"srun ended with exit status {code}; no report from: {', '.join(missing) or 'none'}")
            return exit_code_of(code)
        return 0


def run_slurm(plan: WorldPlan, *, log_dir: Path | None, quiet: bool, shutdown_timeout: float,
              hang_timeout: float | None = None, live: bool = False) -> int:
    if log_dir is not None:
        prepare_log_dir(log_dir)
    env, _ = remote_env(dict(os.environ), Path(plan.reach.cwd), Path(os.path.expanduser("~")))
    relay = Relay(console=not (quiet and log_dir is not None), log_dir=log_dir, on_event=None)
    job = SlurmJob(plan, relay, shutdown_timeout, quiet, hang_timeout, log_dir)
    return run_agents(plan, relay, job, env, where=f"{len(plan.nodes)} Slurm node(s)",
                      shutdown_timeout=shutdown_timeout, quiet=quiet, live=live)
