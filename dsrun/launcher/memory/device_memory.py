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
    device: int | None  # bytes of one GPU; None: unknown, or a CPU node (its ranks share `host_ram`)
    host_ram: int | None  # bytes of RAM; None: unknown
    local: bool  # this machine (measured) or a remote host (only what the user gave)


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
    """One entry per node. Given figures apply to every node; this machine's own are measured otherwise. On CPU
    nodes the ranks' device memory is the RAM: --device-memory, else --host-memory, sets it."""
    cuda = plan.accelerator == "cuda"
    gpus: dict[int, int] | None = None
    measured_ram: int | None = None
    nodes = []
    for node in plan.nodes:
        local = is_local_host(node.host)
        if local and measured_ram is None:
            measured_ram = ram_bytes()
        device = None
        if cuda:
            device = device_memory
            if device is None and local:
                gpus = gpu_memory() if gpus is None else gpus
                sizes = [gpus[s] for s in node.slots if s in gpus]
                device = min(sizes) if sizes and len(sizes) == len(node.slots) else None
            ram = host_memory
        else:
            ram = device_memory if device_memory is not None else host_memory
        if ram is None and local:
            ram = measured_ram
        nodes.append(NodeMemory(node.host, len(node.ranks), device, ram, local))
    return nodes
