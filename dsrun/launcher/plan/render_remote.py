"""The multi-node part of the dry run: how each host would be reached and the exact command that would run there."""

from __future__ import annotations

import sys

from dsrun.launcher.plan.render import ends
from dsrun.launcher.plan.world import WorldPlan


def print_remote(plan: WorldPlan) -> None:
    setup = plan.remote
    if setup is None:
        return
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    console = Console(file=sys.stdout, width=None if sys.stdout.isatty() else 200)
    if setup.srun is not None:
        console.print(f"[bold]Slurm[/bold]: one node agent per node, started with\n  {escape(setup.agent_command)}",
                      soft_wrap=True)  # a command is for copying: never wrap it
    else:
        hosts = Table(title="SSH (nothing contacted)", title_justify="left")
        for column in ("node", "host", "connects to", "user", "port"):
            hosts.add_column(column)
        for node, host in ends(list(zip(plan.nodes, setup.hosts, strict=True)), hosts, "host"):
            hosts.add_row(str(node.node_rank), host.host, host.address, host.user, str(host.port))
        console.print(hosts)
        console.print(f"[bold]On each host[/bold]: {escape(setup.agent_command)}", soft_wrap=True)
        if setup.address_at_launch:
            first = plan.nodes[0].host
            console.print(f"MASTER_ADDR: the address {first} is reached at ({plan.master_addr} until then)")
        if setup.port_at_launch:
            console.print(f"MASTER_PORT: a free port on {plan.nodes[0].host}, found when the job starts")
    shipped = ", ".join(setup.env_names) or "none"
    files = ", ".join(setup.env_files) or "no .dsrun_env/.deepspeed_env found"
    console.print(f"[bold]Shipped environment[/bold] ({files}): {escape(shipped)}")
