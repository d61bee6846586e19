"""The per-node agent: `python -m dsrun.launcher.node [--slurm]`, started by the launcher on every host.

It says hello (pre-flight: python and dsrun work here, and a free port for the rendezvous), reads its NodeJob from
stdin, points gloo/NCCL at the interface that routes to MASTER_ADDR, and runs the local Supervisor for its ranks.
It keeps reading stdin while the job runs: a `{"signal": N}` line, or the end of input because the launcher or its
connection went away, stops the job the way a signal to a local dsrun would. It exits with the job's exit code.
With --hang-timeout it relays its ranks' steps and, when asked, their stacks: the launcher, which sees every node,
decides whether the job hangs. With --live it relays its ranks' rows for the launcher's table.
"""

from __future__ import annotations

import os
import signal
import socket
import sys
import threading
import time
from dataclasses import asdict

import dsrun
from dsrun.console import say
from dsrun.errors import UsageError
from dsrun.launcher.live.relayed import RelayLive
from dsrun.launcher.node.host_cores import fit_to_host
from dsrun.launcher.node.netif import socket_ifname_env
from dsrun.launcher.node.progress import Steps
from dsrun.launcher.node.protocol import PROTOCOL, LineReader, NodeJob, event_line, parse_jobs
from dsrun.launcher.node.stacks import STACK_SIGNAL, RankStack
from dsrun.launcher.node.supervisor import FORWARDED_SIGNALS, Supervisor
from dsrun.launcher.plan.devices import usable_cores

ESCALATE_AFTER = 5.0  # beyond the shutdown timeout: then a second signal makes the supervisor SIGKILL everything


def _emit(kind: str, **fields) -> None:
    try:
        print(event_line(kind, **fields), file=sys.stderr, flush=True)
    except OSError:
        pass  # the launcher is gone; the job is being stopped anyway


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("", 0))
        return int(sock.getsockname()[1])


class RelayProgress:
    """The agent's progress watch: it never decides (the launcher sees every node's ranks); it tells the launcher
    its running ranks' steps whenever one changes, and sends the stacks it collected when asked."""

    def __init__(self, node_rank: int):
        self.node_rank = node_rank
        self._sent: Steps | None = None

    def tick(self, steps: Steps, now: float) -> bool:
        if steps != self._sent:
            self._sent = dict(steps)
            _emit("progress", node_rank=self.node_rank, steps={str(rank): step for rank, step in steps.items()})
        return False

    def stacks(self, stacks: dict[int, RankStack]) -> None:
        _emit("stacks", node_rank=self.node_rank, stacks={str(rank): asdict(stack) for rank, stack in stacks.items()})


def _watch_launcher(reader: LineReader, grace: float, collect) -> None:
    """Turn the launcher's stop request (or its disappearance) into one signal; if the job outlives the grace
    period, a second signal makes the supervisor kill what is left. A collect request calls `collect()`."""
    import json

    while True:
        line = reader.readline()
        if line is None:
            signum = int(signal.SIGHUP)  # the launcher, or the connection to it, went away
            break
        try:
            request = json.loads(line)
            if request.get("collect") == "stacks":
                collect()
                continue
            signum = int(request["signal"])
        except (ValueError, KeyError, TypeError, AttributeError):
            continue
        if signum == STACK_SIGNAL:  # a stack request, not a stop: the supervisor dumps and the job goes on
            os.kill(os.getpid(), signum)
            continue
        break
    os.kill(os.getpid(), signum)
    time.sleep(grace + ESCALATE_AFTER)
    os.kill(os.getpid(), signum)


def _pick(jobs: list[NodeJob], slurm: bool) -> NodeJob:
    if not slurm:
        return jobs[0]
    node_id = int(os.environ["SLURM_NODEID"])
    job = next((j for j in jobs if j.node_rank == node_id), None)
    if job is None:
        raise SystemExit(f"dsrun agent: no job for Slurm node {node_id}")
    return job


def run(job: NodeJob, reader: LineReader) -> int:
    ifname_env, ifname_note = socket_ifname_env(job.master_addr, {**os.environ, **job.env})
    try:
        ranks = fit_to_host(job.ranks, usable_cores(), {**os.environ, **job.env},
                            blocks_from_cores=job.blocks_from_cores)
    except UsageError as err:
        raise SystemExit(f"dsrun agent on {job.host}: {err}") from None
    _emit("node", node_rank=job.node_rank, host=job.host, ranks=[r.rank for r in ranks], interface=ifname_note)
    supervisor = Supervisor(
        ranks,
        shutdown_timeout=job.shutdown_timeout,
        console=True,
        base_env={**os.environ, **job.env, **ifname_env},
        label=lambda rank: f"{job.host} rank {rank}",
        notify=lambda message: say(message, host=job.host),
        watch=RelayProgress(job.node_rank) if job.report_progress else None,
        live=RelayLive(job.node_rank, _emit) if job.report_live else None,
    )
    threading.Thread(target=_watch_launcher, args=(reader, job.shutdown_timeout, supervisor.request_stacks),
                     daemon=True).start()
    outcome = supervisor.run()
    failure = outcome.failure
    failed = None
    if failure is not None:
        failed = {
            "rank": failure.rank,
            "returncode": failure.returncode,
            "command": next(r.command for r in ranks if r.rank == failure.rank),
            "tail": list(supervisor.output.tails.get(failure.rank, [])),
        }
    # Every rank's exit, with the stderr tail of those that failed by themselves: the launcher groups the ranks of
    # all hosts by error (dsrun.launcher.backends.failure_groups).
    tails = supervisor.output.tails
    exits = {rank: {"code": code, "tail": list(tails.get(rank, [])) if code > 0 else None}
             for rank, code in supervisor.codes.items()}
    _emit("done", node_rank=job.node_rank, code=outcome.exit_code, failure=failed, signal=outcome.signal,
          exits=exits)
    return outcome.exit_code


def main(argv: list[str] | None = None) -> int:
    slurm = "--slurm" in (sys.argv[1:] if argv is None else argv)
    # Until the supervisor takes over, a stop request must not kill the agent before it can report.
    for sig in (*FORWARDED_SIGNALS, STACK_SIGNAL):
        signal.signal(sig, lambda *_: None)
    if not slurm:
        _emit("hello", protocol=PROTOCOL, version=dsrun.__version__, free_port=_free_port())
    reader = LineReader(sys.stdin.fileno())
    line = reader.readline()
    if line is None:
        return 0  # the launcher called the launch off during pre-flight: nothing was started
    return run(_pick(parse_jobs(line), slurm), reader)


if __name__ == "__main__":
    sys.exit(main())
