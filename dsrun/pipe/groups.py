"""The process groups a pipeline needs, made once on every rank in the same order (new_group is collective).

- pipeline group: the ranks of one data-parallel replica, one per stage in stage order (PipelineStage finds stage i
  at group rank i, which DeepSpeed's layout, rank = stage * dp + data index, gives);
- data-parallel group: the replicas of one stage, over which its gradients are averaged;
- tied groups: per tied key and replica, the ranks of the stages holding a copy of the key.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch.distributed as dist

from dsrun.pipe.module import PipelineModule
from dsrun.runtime.distributed import Placement


@dataclass
class PipeGroups:
    pipeline: dist.ProcessGroup | None  # None: a single stage (nothing to send)
    pipeline_ranks: list[int]  # global ranks of this replica's stages, by stage
    data: dist.ProcessGroup | None  # None: one replica per stage
    data_ranks: list[int]
    tied: dict[str, dist.ProcessGroup] = field(default_factory=dict)  # key -> group (keys held on 2+ stages)

    @property
    def first_rank(self) -> int:
        return self.pipeline_ranks[0]

    @property
    def last_rank(self) -> int:
        return self.pipeline_ranks[-1]


def make_groups(module: PipelineModule) -> PipeGroups:
    topology, rank = module.topology(), module.global_rank
    pipeline = data = None
    pipeline_ranks = data_ranks = [rank]
    for ranks in topology.pipeline_ranks():
        group = dist.new_group(ranks) if len(ranks) > 1 else None
        if rank in ranks:
            pipeline, pipeline_ranks = group, ranks
    for stage in range(module.num_stages):
        ranks = topology.stage_ranks(stage)
        group = dist.new_group(ranks) if len(ranks) > 1 else None
        if rank in ranks:
            data, data_ranks = group, ranks
    tied: dict[str, dist.ProcessGroup] = {}
    for key in module.tied_keys:
        for ranks in module.tied_rank_groups(key):
            if len(ranks) < 2:
                continue
            group = dist.new_group(ranks)
            if rank in ranks:
                tied[key] = group
    return PipeGroups(pipeline, pipeline_ranks, data, data_ranks, tied)


def data_placement(placement: Placement, groups: PipeGroups) -> Placement:
    """The placement the stage's ZeRO strategy and data loader see: its rank among the stage's replicas."""
    return Placement(rank=groups.data_ranks.index(placement.rank), local_rank=placement.local_rank,
                     world_size=len(groups.data_ranks), device=placement.device, backend=placement.backend)
