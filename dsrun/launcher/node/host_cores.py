"""A node agent's own share of CPU cores for its ranks.

The launcher plans every host with its own machine's cores, but a login node with 4 cores may launch onto nodes
with 96: OMP_NUM_THREADS and `--bind_cores_to_rank` blocks computed there would leave most of a node idle (or ask
for cores it lacks). So the agent on each host redoes that split with the cores it may use. The host's own
OMP_NUM_THREADS (its environment, or an env file the launcher shipped) is kept, as cores named with
`--bind_core_list` are.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace

from dsrun.launcher.plan.cores import split_cores
from dsrun.launcher.plan.world import RankPlan


def fit_to_host(ranks: list[RankPlan], usable: list[int], host_env: Mapping[str, str], *,
                blocks_from_cores: bool) -> list[RankPlan]:
    """`ranks` (one host's, in local-rank order) with OMP_NUM_THREADS and core blocks from `usable` cores."""
    if not ranks:
        return ranks
    binding = ranks[0].cores is not None
    blocks = split_cores(usable, len(ranks)) if binding and blocks_from_cores else None
    host_threads = "OMP_NUM_THREADS" in host_env
    fitted = []
    for i, rank in enumerate(ranks):
        cores = blocks[i] if blocks else rank.cores
        env = {k: v for k, v in rank.env.items() if k != "OMP_NUM_THREADS"}
        if not host_threads:
            threads = len(cores) if cores is not None else len(usable) // len(ranks)
            env["OMP_NUM_THREADS"] = str(max(1, threads))
        fitted.append(replace(rank, env=env, cores=cores))
    return fitted
