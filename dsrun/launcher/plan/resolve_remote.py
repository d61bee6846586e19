"""Planning the multi-node launchers: which backend, the rendezvous, and how every host is reached.

Reads ~/.ssh/config, env files and SLURM_* variables; contacts no host, so the dry run can show all of it.
"""

from __future__ import annotations

import os
import shlex
from dataclasses import dataclass
from pathlib import Path

from dsrun.errors import UsageError
from dsrun.launcher.backends.envfile import remote_env
from dsrun.launcher.plan import slurm_allocation as slurm
from dsrun.launcher.plan.pool import Pool
from dsrun.launcher.plan.remote import RemoteHost, RemoteSetup, agent_command

BACKENDS = ("ssh", "slurm")
# DeepSpeed's backends that need an MPI stack: dsrun starts its agents itself instead.
_MPI_BACKENDS = ("openmpi", "mpich", "impi", "mvapich")


@dataclass(frozen=True)
class RemoteOptions:
    backend: str  # "ssh" or "slurm"
    python: str
    cwd: str
    ssh_port: int | None = None
    launcher_args: str = ""


def backend_for(name: str | None, notes: list[str]) -> str:
    """Normalise --launcher: '' (default: ssh for remote hosts), 'ssh' or 'slurm'."""
    if not name:
        return ""
    name = name.lower()
    if name == "pdsh":
        notes.append("--launcher pdsh: dsrun reaches hosts over SSH itself, pdsh is not needed")
        return "ssh"
    if name in _MPI_BACKENDS:
        raise UsageError(f"--launcher {name} is not supported: dsrun starts its own agents over SSH (--launcher ssh) "
                         "or srun (--launcher slurm)")
    if name not in BACKENDS:
        raise UsageError(f"--launcher {name!r} is unknown: use ssh or slurm")
    return name


def check_cwd(cwd: str) -> str:
    if not cwd.startswith("/"):
        raise UsageError(f"--remote-cwd {cwd!r} must be an absolute path")
    return cwd


def ssh_rendezvous(world: Pool, ssh_port: int | None, master_addr: str | None, master_port: int | None):
    """(targets, address, port): the first host's HostName until the launch finds its real address; port 0 stands
    for "a free port on the first host, found at launch"."""
    from dsrun.launcher.backends.ssh.config import resolve_targets

    targets = resolve_targets(list(world), ssh_port)
    return targets, master_addr or targets[0].hostname, master_port or 0


def _env_summary(opts: RemoteOptions) -> tuple[list[str], list[str]]:
    env, files = remote_env(dict(os.environ), Path(opts.cwd), Path(os.path.expanduser("~")))
    return sorted(env), [str(f) for f in files]


def ssh_setup(opts: RemoteOptions, targets, *, port_at_launch: bool, address_at_launch: bool) -> RemoteSetup:
    names, files = _env_summary(opts)
    return RemoteSetup(
        python=opts.python,
        cwd=opts.cwd,
        agent_command=agent_command(opts.python, opts.cwd),
        hosts=[RemoteHost(t.alias, t.hostname, t.user, t.port) for t in targets],
        env_names=names,
        env_files=files,
        port_at_launch=port_at_launch,
        address_at_launch=address_at_launch,
    )


def slurm_setup(opts: RemoteOptions, alloc: slurm.Allocation, world: Pool, gpu_kind: bool) -> RemoteSetup:
    hosts = list(world)
    cpus = [alloc.cpus_per_node[alloc.nodes.index(h)] for h in hosts] if alloc.cpus_per_node else None
    command = slurm.srun_command(
        hosts,
        opts.python,
        cwd=opts.cwd,
        cpus_per_task=min(cpus) if cpus else None,
        gpus_per_node=max(len(s) for s in world.values()) if gpu_kind else None,
        launcher_args=shlex.split(opts.launcher_args),
    )
    names, files = _env_summary(opts)
    return RemoteSetup(
        python=opts.python,
        cwd=opts.cwd,
        agent_command=shlex.join(command),
        srun=command,
        env_names=names,
        env_files=files,
    )
