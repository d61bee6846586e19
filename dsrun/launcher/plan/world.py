"""The WorldPlan: pure data saying, for every rank, where it runs, with which env and which command.

It is the single truth of a launch: `--dry-run` prints it, the local supervisor executes it, and the multi-node
path ships it to each host. Building it touches no host and starts nothing.
"""

from __future__ import annotations

import socket
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from dsrun.config.batch import BatchMath
from dsrun.launcher.plan.devices import LocalDevices
from dsrun.launcher.plan.pool import Pool
from dsrun.launcher.plan.remote import RemoteSetup

LOCAL_HOST_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})


@dataclass(frozen=True)
class LaunchSpec:
    """What to run on every rank, as the user asked for it."""

    script: str
    script_args: list[str]
    python: str
    module: bool = False
    no_python: bool = False
    no_local_rank: bool = False
    bind_cores: bool = False
    deepspeed_alias: bool = False  # run the script through dsrun.alias: `import deepspeed` loads dsrun


@dataclass(frozen=True)
class RankPlan:
    rank: int
    local_rank: int
    node_rank: int
    host: str
    slot: int
    env: dict[str, str]  # only what dsrun sets; workers inherit the rest of the launcher's environment
    command: list[str]
    cores: list[int] | None  # CPU binding, when asked for


@dataclass(frozen=True)
class NodePlan:
    host: str
    node_rank: int
    slots: list[int]
    ranks: list[int]


@dataclass(frozen=True)
class WorldPlan:
    world_size: int
    master_addr: str
    master_port: int
    launcher: str  # "local": this machine only; "ssh": reach hosts over SSH; "slurm": srun in an allocation
    accelerator: str  # "cuda" or "cpu"
    backend: str  # "nccl" or "gloo"
    nodes: list[NodePlan]
    ranks: list[RankPlan]
    config_path: str | None
    batch: BatchMath | None
    notes: list[str] = field(default_factory=list)
    remote: RemoteSetup | None = None  # how hosts are reached, for the "ssh" and "slurm" launchers
    # Whether the core blocks came from this machine's cores (not from --bind_core_list): a node agent on another
    # host then splits its own cores instead.
    blocks_from_cores: bool = True

    @property
    def reach(self) -> RemoteSetup:
        """How hosts are reached; only a plan for the "ssh" or "slurm" launcher has it."""
        if self.remote is None:
            raise RuntimeError(f"a {self.launcher} plan has no remote setup: only ssh and slurm plans reach hosts")
        return self.remote

    def to_dict(self) -> dict[str, Any]:
        # Built by hand: dataclasses.asdict deep-copies every value and was 90% of a 8192-rank dry run.
        return {
            "world_size": self.world_size,
            "master_addr": self.master_addr,
            "master_port": self.master_port,
            "launcher": self.launcher,
            "accelerator": self.accelerator,
            "backend": self.backend,
            "nodes": [vars(node) for node in self.nodes],
            "ranks": [vars(rank) for rank in self.ranks],
            "config_path": self.config_path,
            "batch": self.batch.to_dict() if self.batch else None,
            "notes": self.notes,
            "remote": asdict(self.remote) if self.remote else None,
            "blocks_from_cores": self.blocks_from_cores,
        }

    def ranks_on(self, node_rank: int) -> list[RankPlan]:
        return [r for r in self.ranks if r.node_rank == node_rank]


def is_local_host(host: str) -> bool:
    """True for names that certainly mean this machine. No DNS look-up: planning contacts nobody."""
    if host in LOCAL_HOST_NAMES:
        return True
    own = socket.gethostname()
    return host in (own, own.split(".")[0])


def launcher_for(world: Pool, force_multi: bool) -> str:
    hosts = list(world)
    if force_multi or len(hosts) > 1 or not is_local_host(hosts[0]):
        # DeepSpeed runs a lone remote host on the launching machine; we go to the host that was named.
        return "ssh"
    return "local"


def command_for(spec: LaunchSpec, local_rank: int) -> list[str]:
    local_rank_arg = [] if spec.no_local_rank else [f"--local_rank={local_rank}"]
    alias = ["-m", "dsrun.alias"] if spec.deepspeed_alias else []
    if spec.no_python:
        head = [spec.script]
    elif spec.module:
        head = [spec.python, "-u", *alias, "-m", spec.script]
    else:
        head = [spec.python, "-u", *alias, spec.script]
    return head + local_rank_arg + list(spec.script_args)


def build_plan(
    spec: LaunchSpec,
    world: Pool,
    devices: LocalDevices,
    *,
    master_addr: str,
    master_port: int,
    launcher: str,
    cores: list[int],
    cores_named: bool = False,
    user_env: dict[str, str],
    config_path: str | None = None,
    batch: BatchMath | None = None,
    notes: list[str] | None = None,
) -> WorldPlan:
    """Number the ranks host by host in pool order, slot by slot, and give each its env and command.

    `cores` are the CPU ids one node's workers share (binding blocks, OMP_NUM_THREADS): this machine's usable cores,
    or the ones --bind_core_list named (`cores_named`). Remote hosts are planned as if they had the same cores; their
    node agent redoes the split with its own (see host_cores.py).
    """
    from dsrun.launcher.plan.cores import split_cores

    notes = list(notes or [])
    world_size = sum(len(slots) for slots in world.values())
    nodes: list[NodePlan] = []
    ranks: list[RankPlan] = []
    keep_omp = "OMP_NUM_THREADS" in user_env
    # srun passes the launcher's environment on; over SSH only exported names travel (the agents say what they do).
    if keep_omp and launcher != "ssh":
        notes.append(f"OMP_NUM_THREADS={user_env['OMP_NUM_THREADS']} is kept from your environment")
    for node_rank, (host, slots) in enumerate(world.items()):
        local_size = len(slots)
        blocks = split_cores(cores, local_size) if spec.bind_cores else None
        first = len(ranks)
        for local_rank, slot in enumerate(slots):
            rank = first + local_rank
            env = {
                "RANK": str(rank),
                "LOCAL_RANK": str(local_rank),
                "WORLD_SIZE": str(world_size),
                "LOCAL_WORLD_SIZE": str(local_size),
                "LOCAL_SIZE": str(local_size),
                "NODE_RANK": str(node_rank),
                "GROUP_RANK": str(node_rank),
                "CROSS_RANK": str(node_rank),
                "CROSS_SIZE": str(len(world)),
                "MASTER_ADDR": master_addr,
                "MASTER_PORT": str(master_port),
                "DSRUN_ACCELERATOR": devices.kind,
            }
            if devices.kind == "cuda":
                # All of the node's GPUs, the same list for every local rank: a worker picks index LOCAL_RANK.
                env["CUDA_VISIBLE_DEVICES"] = devices.visible_devices(slots)
            if not keep_omp:
                threads = len(blocks[local_rank]) if blocks else len(cores) // local_size
                env["OMP_NUM_THREADS"] = str(max(1, threads))
            if config_path:
                env["DSRUN_CONFIG"] = config_path
            ranks.append(
                RankPlan(
                    rank=rank,
                    local_rank=local_rank,
                    node_rank=node_rank,
                    host=host,
                    slot=slot,
                    env=env,
                    command=command_for(spec, local_rank),
                    cores=blocks[local_rank] if blocks else None,
                )
            )
        nodes.append(NodePlan(host, node_rank, list(slots), list(range(first, len(ranks)))))
    return WorldPlan(
        world_size=world_size,
        master_addr=master_addr,
        master_port=master_port,
        launcher=launcher,
        accelerator=devices.kind,
        backend=devices.backend,
        nodes=nodes,
        ranks=ranks,
        config_path=config_path,
        batch=batch,
        notes=notes,
        blocks_from_cores=not cores_named,
    )


def with_rendezvous(plan: WorldPlan, master_addr: str, master_port: int) -> WorldPlan:
    """The same plan with the rendezvous found at launch (the first host's address and a free port there)."""
    ranks = [replace(r, env={**r.env, "MASTER_ADDR": master_addr, "MASTER_PORT": str(master_port)})
             for r in plan.ranks]
    return replace(plan, master_addr=master_addr, master_port=master_port, ranks=ranks)
