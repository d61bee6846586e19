"""What the SSH and Slurm launchers share once their node agents can be reached: announce, run, report."""

from __future__ import annotations

from dsrun.launcher.backends.relay import Relay
from dsrun.launcher.node.protocol import jobs_for
from dsrun.launcher.plan.world import WorldPlan


def run_agents(plan: WorldPlan, relay: Relay, job, env: dict[str, str], *, where: str, shutdown_timeout: float,
               quiet: bool) -> int:
    """Ship every node its ranks through `job` (an SshJob or SlurmJob) and return the job's exit code.

    `where` names the hosts in the launcher's messages, e.g. "2 host(s)" or "2 Slurm node(s)".
    """
    relay.on_event = job.on_event
    if not quiet:
        for note in plan.notes:
            relay.say(f"note: {note}")
        relay.say(f"starting {plan.world_size} worker(s) on {where} ({plan.accelerator}, {plan.backend}),"
                  f" master {plan.master_addr}:{plan.master_port}")
    code = job.run(jobs_for(plan, env, shutdown_timeout))
    if code == 0 and not quiet:
        relay.say(f"all {plan.world_size} worker(s) on {where} finished")
    return code
