"""What the launcher says when a multi-node job ends badly without a rank's report: a lost host, a failed agent.
Failing ranks are reported by dsrun.launcher.backends.failure_groups."""

from __future__ import annotations

from dsrun.launcher.plan.render import span
from dsrun.launcher.plan.world import NodePlan

EXIT_CONNECTION_LOST = 255  # what ssh itself returns when the connection fails


def lost_host(node: NodePlan, how: str) -> str:
    return f"{how} {node.host} (node {node.node_rank}, ranks {span(node.ranks)}); every other host was stopped"


def agent_failed(node: NodePlan, status: int) -> str:
    return f"the node agent on {node.host} (ranks {span(node.ranks)}) ended with exit status {status} " \
           "before its workers did; see its messages above"
