"""What the launcher and a node agent say to each other, as JSON lines.

Launcher → agent (the agent's stdin): one line `{"protocol": P, "jobs": [NodeJob, ...]}` (over SSH the one job of
that host; under Slurm every node's, each agent takes its own), then optionally `{"signal": N}` lines asking it to
stop the job with signal N, and `{"collect": "stacks"}` (--hang-timeout found a hang) asking for every rank's stack
as text. End of input means the launcher is gone: the agent stops the job.

Agent → launcher (the agent's stderr, among the workers' prefixed lines): lines starting with EVENT_MARK followed by
a JSON object: `hello` when the agent is up (pre-flight), `node` when its workers start, `done` when they ended
(its first failing rank, and every rank's exit code with the stderr tail of those that failed);
with --hang-timeout also `progress` (the node's running ranks and their steps, each time one changes) and `stacks`
(the answer to a collect request); with --live also `live` (the node's ranks: process, progress, CPU and memory,
about once a second; format in dsrun.launcher.live.relayed). Worker lines always start with their `[host rank N]`
label, so they cannot be taken for an event.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass

from dsrun.launcher.plan.world import RankPlan, WorldPlan

# 2: a SIGUSR1 line asks for every rank's stack; 3: progress and stacks events, collect requests; 4: live events
PROTOCOL = 4
EVENT_MARK = "@dsrun-event "


@dataclass(frozen=True)
class NodeJob:
    node_rank: int
    host: str
    ranks: list[RankPlan]
    env: dict[str, str]  # added to the host's own environment (exported variables, env files)
    master_addr: str  # the agent picks its socket interface by the route to it
    shutdown_timeout: float
    blocks_from_cores: bool = True  # when binding, the agent splits its host's cores into the ranks' blocks
    report_progress: bool = False  # --hang-timeout: relay the ranks' steps and answer collect requests
    report_live: bool = False  # --live: relay the ranks' live rows

    @classmethod
    def from_dict(cls, data: dict) -> NodeJob:
        return cls(
            node_rank=int(data["node_rank"]),
            host=str(data["host"]),
            ranks=[RankPlan(**rank) for rank in data["ranks"]],
            env={str(k): str(v) for k, v in data["env"].items()},
            master_addr=str(data["master_addr"]),
            shutdown_timeout=float(data["shutdown_timeout"]),
            blocks_from_cores=bool(data.get("blocks_from_cores", True)),
            report_progress=bool(data.get("report_progress", False)),
            report_live=bool(data.get("report_live", False)),
        )


def jobs_line(jobs: list[NodeJob]) -> bytes:
    return (json.dumps({"protocol": PROTOCOL, "jobs": [asdict(job) for job in jobs]}) + "\n").encode()


def signal_line(signum: int) -> bytes:
    return (json.dumps({"signal": int(signum)}) + "\n").encode()


def collect_line() -> bytes:
    return (json.dumps({"collect": "stacks"}) + "\n").encode()


def parse_jobs(line: bytes) -> list[NodeJob]:
    data = json.loads(line)
    if data.get("protocol") != PROTOCOL:
        raise ValueError(f"the launcher speaks protocol {data.get('protocol')}, this agent {PROTOCOL}")
    return [NodeJob.from_dict(job) for job in data["jobs"]]


def event_line(kind: str, **fields) -> str:
    return EVENT_MARK + json.dumps({"event": kind, **fields})


def parse_event(line: str) -> dict | None:
    """The event a stderr line carries, or None for an ordinary line."""
    if not line.startswith(EVENT_MARK):
        return None
    try:
        event = json.loads(line[len(EVENT_MARK):])
    except ValueError:
        return None
    return event if isinstance(event, dict) and "event" in event else None


class LineReader:
    """Lines from a raw file descriptor, without Python's buffered reader and the lock it holds while blocked.

    The agent reads its stdin from a thread while the supervisor forks workers; a child must not inherit a lock
    that another thread holds.
    """

    def __init__(self, fd: int):
        self.fd = fd
        self._buffer = b""

    def readline(self) -> bytes | None:
        """The next line without its newline, or None at end of input."""
        while b"\n" not in self._buffer:
            try:
                chunk = os.read(self.fd, 65536)
            except OSError:
                chunk = b""
            if not chunk:
                return None
            self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        return line


def jobs_for(plan: WorldPlan, env: dict[str, str], shutdown_timeout: float,
             report_progress: bool = False, report_live: bool = False) -> list[NodeJob]:
    """One job per node of the plan, each with the same shipped environment."""
    return [
        NodeJob(node.node_rank, node.host, plan.ranks_on(node.node_rank), env, plan.master_addr, shutdown_timeout,
                plan.blocks_from_cores, report_progress, report_live)
        for node in plan.nodes
    ]
