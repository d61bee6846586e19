"""`--launcher slurm`: take the world from the Slurm allocation we run in, start one node agent per node with srun.

Pure functions over the SLURM_* environment, so the dry run shows the exact srun command without Slurm being asked.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from dsrun.errors import UsageError
from dsrun.launcher.plan.remote import AGENT_MODULE

_RANGE = re.compile(r"(\d+)(?:-(\d+))?")
_REPEAT = re.compile(r"(\d+)(?:\(x(\d+)\))?")


def _split_top_level(text: str) -> list[str]:
    """Split at commas outside brackets: 'a[1,3],b' → ['a[1,3]', 'b']."""
    parts, depth, current = [], 0, ""
    for char in text:
        if char == "[":
            depth += 1
        elif char == "]":
            depth -= 1
        if char == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    if depth != 0:
        raise UsageError(f"Slurm node list {text!r} has unbalanced brackets")
    parts.append(current)
    return [p for p in parts if p]


def _expand_one(item: str, whole: str) -> list[str]:
    open_at = item.find("[")
    if open_at < 0:
        return [item]
    close_at = item.find("]", open_at)
    head, body, tail = item[:open_at], item[open_at + 1:close_at], item[close_at + 1:]
    names: list[str] = []
    for piece in body.split(","):
        match = _RANGE.fullmatch(piece.strip())
        if not match:
            raise UsageError(f"Slurm node list {whole!r}: cannot read range {piece!r}")
        first, last = match[1], match[2] or match[1]
        width = len(first)  # node[01-10] keeps its zero padding
        for number in range(int(first), int(last) + 1):
            names.extend(head + str(number).zfill(width) + rest for rest in _expand_one(tail, whole))
    return names


def expand_nodelist(text: str) -> list[str]:
    """Slurm's compact host list ('gpu[01-03,07],login1', 'r[1-2]n[1-2]') as names, in Slurm's order."""
    names: list[str] = []
    for item in _split_top_level(text.strip()):
        names.extend(_expand_one(item, text))
    return names


def expand_counts(text: str) -> list[int]:
    """Slurm's per-node counts ('2(x3),1' = 2,2,2,1), as in SLURM_TASKS_PER_NODE or SLURM_JOB_CPUS_PER_NODE."""
    counts: list[int] = []
    for piece in text.split(","):
        match = _REPEAT.fullmatch(piece.strip())
        if not match:
            raise UsageError(f"cannot read the Slurm count list {text!r}")
        counts.extend([int(match[1])] * int(match[2] or 1))
    return counts


@dataclass(frozen=True)
class Allocation:
    job_id: str
    nodes: list[str]
    tasks_per_node: list[int] | None
    cpus_per_node: list[int] | None
    gpus_per_node: int | None


def allocation_from(environ: dict[str, str]) -> Allocation:
    job_id = environ.get("SLURM_JOB_ID") or environ.get("SLURM_JOBID")
    nodelist = environ.get("SLURM_JOB_NODELIST") or environ.get("SLURM_NODELIST")
    if not job_id or not nodelist:
        raise UsageError("--launcher slurm runs inside a Slurm allocation (SLURM_JOB_ID and SLURM_JOB_NODELIST are "
                         "not set): start dsrun from salloc or an sbatch script")
    nodes = expand_nodelist(nodelist)
    tasks = environ.get("SLURM_TASKS_PER_NODE")
    cpus = environ.get("SLURM_JOB_CPUS_PER_NODE")
    gpus = environ.get("SLURM_GPUS_ON_NODE")
    return Allocation(
        job_id=job_id,
        nodes=nodes,
        tasks_per_node=_per_node(expand_counts(tasks), nodes, "SLURM_TASKS_PER_NODE") if tasks else None,
        cpus_per_node=_per_node(expand_counts(cpus), nodes, "SLURM_JOB_CPUS_PER_NODE") if cpus else None,
        gpus_per_node=int(gpus) if gpus and gpus.isdigit() else None,
    )


def _per_node(counts: list[int], nodes: list[str], name: str) -> list[int]:
    if len(counts) != len(nodes):
        raise UsageError(f"{name} gives {len(counts)} count(s) for {len(nodes)} node(s): is this the job's env?")
    return counts


def slurm_pool(alloc: Allocation, gpu_kind: bool, gpus_here: int) -> dict[str, list[int]]:
    """Workers per node: the node's GPUs on a GPU job, else the tasks Slurm allotted to it (one if unknown)."""
    pool = {}
    for index, node in enumerate(alloc.nodes):
        if gpu_kind:
            slots = alloc.gpus_per_node if alloc.gpus_per_node is not None else gpus_here
        else:
            slots = alloc.tasks_per_node[index] if alloc.tasks_per_node else 1
        pool[node] = list(range(slots))
    return pool


def port_for_job(job_id: str) -> int:
    """A rendezvous port both nodes can compute without talking: two jobs sharing a node get different ports.

    Below Linux's ephemeral range (32768+), so outgoing connections never hold it by chance.
    """
    digits = "".join(ch for ch in job_id if ch.isdigit()) or "0"
    return 10000 + int(digits) % 20000


def srun_command(
    nodes: list[str],
    python: str,
    *,
    cwd: str | None,
    cpus_per_task: int | None,
    gpus_per_node: int | None,
    launcher_args: list[str],
) -> list[str]:
    """One agent per node. `--input=all` hands every agent the job list on its stdin (and, later, the end of it)."""
    command = ["srun", f"--nodes={len(nodes)}", f"--ntasks={len(nodes)}", "--ntasks-per-node=1",
               f"--nodelist={','.join(nodes)}", "--kill-on-bad-exit=1", "--input=all"]
    if cpus_per_task:
        command.append(f"--cpus-per-task={cpus_per_task}")  # the agent's step must cover all its workers' cores
    if gpus_per_node:
        command.append(f"--gpus-per-node={gpus_per_node}")
    if cwd:
        command.append(f"--chdir={cwd}")
    return [*command, *launcher_args, python, "-u", "-m", AGENT_MODULE, "--slurm"]
