"""How much memory each planned node offers, found without importing torch and without contacting other hosts.

This machine: GPU memory from `nvidia-smi --query-gpu` (the smallest of the node's GPUs: every rank must fit on
its own), RAM from psutil. A remote host is not asked (a dry run starts nothing anywhere): its figures are what the
user gave (--device-memory, --host-memory) or unknown.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass

from dsrun.launcher.plan.world import WorldPlan, is_local_host


@dataclass(frozen=True)
class NodeMemory:
    host: str
    ranks: int  # ranks the plan puts on this node
    device: int | None  # bytes of one GPU; None: unknown (or a CPU node, where ranks share `host`)
    host_ram: int | None  # bytes of RAM; None: unknown
    source: str  # where the figures come from, shown next to the verdict


def gpu_memory() -> dict[int, int]:
    """GPU index -> total bytes, from nvidia-smi; {} when it is missing or says nothing."""
    smi = shutil.which("nvidia-smi")
    if not smi:
        return {}
    try:
        out = subprocess.run([smi, "--query-gpu=index,memory.total", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=10, check=False).stdout
    except (OSError, subprocess.TimeoutExpired):
        return {}
    found = {}
    for line in out.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) == 2 and parts[0].isdigit() and parts[1].isdigit():
            found[int(parts[0])] = int(parts[1]) * 2**20  # nounits: MiB
    return found


def ram_bytes() -> int:
    import psutil

    return int(psutil.virtual_memory().total)


def node_memory(plan: WorldPlan, device_memory: int | None, host_memory: int | None) -> list[NodeMemory]:
    """One entry per node. Given figures apply to every node; this machine's own are measured otherwise."""
    gpus: dict[int, int] | None = None
    nodes = []
    for node in plan.nodes:
        local = is_local_host(node.host)
        device, ram, source = device_memory, host_memory, "given"
        if local and (device is None or ram is None):
            if plan.accelerator == "cuda" and device is None:
                gpus = gpu_memory() if gpus is None else gpus
                sizes = [gpus[s] for s in node.slots if s in gpus]
                device = min(sizes) if sizes and len(sizes) == len(node.slots) else None
            ram = ram_bytes() if ram is None else ram
            source = "this machine" if device_memory is None and host_memory is None else "given and this machine"
        elif not local and (device is None if plan.accelerator == "cuda" else ram is None):
            source = "remote host, not contacted: give --device-memory" + (
                "" if plan.accelerator == "cuda" else " (on CPU nodes: the RAM all its ranks share)")
        nodes.append(NodeMemory(node.host, len(node.ranks), device if plan.accelerator == "cuda" else None,
                                ram if plan.accelerator == "cuda" else (ram if device is None else device), source))
    return nodes
