"""The multi-node part of a WorldPlan: how each host is reached and what runs there. Pure data, no contact.

The only text a remote shell ever interprets is `agent_command`: a working directory and a python path, each
quoted with shlex. Script arguments, env values and rank commands travel as JSON on the agent's stdin and are
exec'd without a shell, so no hostname or argument can inject a command.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field

AGENT_MODULE = "dsrun.launcher.node"
# Exit codes of agent_command's own checks, so pre-flight can say which part is missing.
EXIT_NO_CWD = 96
EXIT_NO_PYTHON = 97


@dataclass(frozen=True)
class RemoteHost:
    host: str  # hostfile name (may be a ~/.ssh/config alias)
    address: str  # HostName from ~/.ssh/config, or the name itself
    user: str
    port: int


@dataclass(frozen=True)
class RemoteSetup:
    python: str
    cwd: str
    agent_command: str  # what runs on each host: over SSH a shell command, under Slurm the srun command line
    hosts: list[RemoteHost] = field(default_factory=list)  # ssh only: Slurm places the agents itself
    srun: list[str] | None = None  # slurm only
    env_names: list[str] = field(default_factory=list)  # shipped from here (values are not shown)
    env_files: list[str] = field(default_factory=list)
    port_at_launch: bool = False  # MASTER_PORT is a free port found on the first host when the job starts
    address_at_launch: bool = False  # MASTER_ADDR is the address the first host's SSH connection reached


def agent_command(python: str, cwd: str) -> str:
    """The shell command that starts a node agent: POSIX sh, fish and zsh read it the same way."""
    py = shlex.quote(python)
    return (f"cd {shlex.quote(cwd)} || exit {EXIT_NO_CWD}; "
            f"command -v {py} >/dev/null || exit {EXIT_NO_PYTHON}; "
            f"exec {py} -m {AGENT_MODULE}")
