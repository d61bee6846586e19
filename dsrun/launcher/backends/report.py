"""What the launcher says when a multi-node job ends badly: which host, which rank, its command, its last words."""

from __future__ import annotations

import shlex

from dsrun.launcher.node.supervisor import describe_exit
from dsrun.launcher.plan.render import span
from dsrun.launcher.plan.world import NodePlan

EXIT_CONNECTION_LOST = 255  # what ssh itself returns when the connection fails


def failed_rank(node: NodePlan, failure: dict) -> str:
    """The agent's report of its first failing worker, as the lines the user sees."""
    lines = [f"rank {failure['rank']} on {node.host} failed first: {describe_exit(int(failure['returncode']))}",
             f"  command: {shlex.join(failure['command'])}"]
    tail = failure.get("tail") or []
    if tail:
        lines.append(f"  last {len(tail)} line(s) of its stderr:")
        lines.extend(f"    {line}" for line in tail)
    return "\n".join(lines)


def lost_host(node: NodePlan, how: str) -> str:
    return f"{how} {node.host} (node {node.node_rank}, ranks {span(node.ranks)}); every other host was stopped"


def agent_failed(node: NodePlan, status: int) -> str:
    return f"the node agent on {node.host} (ranks {span(node.ranks)}) ended with exit status {status} " \
           "before its workers did; see its messages above"
