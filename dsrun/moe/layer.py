"""MoE: DeepSpeed's mixture-of-experts layer (deepspeed.moe.layer.MoE), same arguments, state-dict keys and returns.

`MoE(hidden_size, expert, num_experts=1, ep_size=1, k=1, capacity_factor=1.0, eval_capacity_factor=1.0,
min_capacity=4, use_residual=False, noisy_gate_policy=None, drop_tokens=True, use_rts=True, use_tutel=False,
enable_expert_tensor_parallelism=False, top2_2nd_expert_sampling=True)`; forward(hidden_states, used_token=None)
returns (output, l_aux, exp_counts). Add l_aux (times a coefficient of your choice) to the loss to balance the load.

- The layer holds num_experts // ep_size experts: global experts ep_rank * L .. ep_rank * L + L - 1 of its
  expert-parallel group, each initialised independently (see experts.py; DeepSpeed starts them all equal).
- Expert parameters carry DeepSpeed's marks (`allreduce = False`, `group_name = f"ep_size_{ep_size}"`): the engine
  averages them over the expert-data-parallel group, everything else (gate, residual MLP, coefficient) over the
  whole data-parallel world.
- use_tutel has no effect: there are no tutel kernels here, and they compute the same routing as the plain path.
- enable_expert_tensor_parallelism has no effect: dsrun has no tensor parallelism, and without it DeepSpeed's
  layer behaves the same with either value.
- rank= / world_size= (keyword only, dsrun's) stand in for torch.distributed when it is not initialized: the layer is
  built as that rank of that world would build it (tests; tools inspecting one rank's experts).
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from dsrun.errors import one_line_in_workers
from dsrun.moe import groups
from dsrun.moe.checks import check_layer, check_world
from dsrun.moe.experts import Experts
from dsrun.moe.gate import TopKGate
from dsrun.moe.moe_layer import MOELayer


def _placement(rank: int | None, world_size: int | None) -> tuple[int, int | None]:
    """This process's rank, and the world size if known yet (the launcher's env tells it before init)."""
    if dist.is_available() and dist.is_initialized():
        return (dist.get_rank() if rank is None else rank), (dist.get_world_size() if world_size is None
                                                             else world_size)
    if rank is None:
        rank = int(os.environ.get("RANK", "0"))
    if world_size is None and "WORLD_SIZE" in os.environ:
        world_size = int(os.environ["WORLD_SIZE"])
    return rank, world_size


class MoE(nn.Module):
    @one_line_in_workers
    def __init__(self, hidden_size: int, expert: nn.Module, num_experts: int = 1, ep_size: int = 1, k: int = 1,
                 capacity_factor: float = 1.0, eval_capacity_factor: float = 1.0, min_capacity: int = 4,
                 use_residual: bool = False, noisy_gate_policy: str | None = None, drop_tokens: bool = True,
                 use_rts: bool = True, use_tutel: bool = False, enable_expert_tensor_parallelism: bool = False,
                 top2_2nd_expert_sampling: bool = True, *, rank: int | None = None,
                 world_size: int | None = None) -> None:
        super().__init__()
        check_layer(num_experts, ep_size, k, noisy_gate_policy)
        rank, known_world = _placement(rank, world_size)
        if known_world is not None:
            check_world(ep_size, known_world)
        self.use_residual = use_residual
        self.enable_expert_tensor_parallelism = enable_expert_tensor_parallelism
        self.ep_size = ep_size
        self.expert_group_name = groups.group_name(ep_size)
        self.num_experts = num_experts
        self.num_local_experts = num_experts // ep_size
        # Expert-parallel rank in DeepSpeed's default layout (groups of ep_size consecutive ranks); checked, and
        # the experts relabelled if the groups say otherwise, when the groups are made.
        self.ep_rank = rank % ep_size
        # The gate and the coefficient draw from the global generator in DeepSpeed's order (same seed, same
        # weights). The experts' seed is read from it without moving it, and their own draws do not move it
        # either: the layers a script builds after this one get DeepSpeed's weights too.
        gate = TopKGate(hidden_size, num_experts, k, capacity_factor, eval_capacity_factor, min_capacity,
                        noisy_gate_policy, drop_tokens, use_rts, None, top2_2nd_expert_sampling)
        coefficient = nn.Linear(hidden_size, 2) if use_residual else None
        with torch.random.fork_rng(devices=[]):
            layer_seed = int(torch.randint(0, 2**31 - 1, (), device="cpu").item())
        experts = Experts(expert, self.num_local_experts, self.expert_group_name,
                          first_global_id=self.ep_rank * self.num_local_experts, seed=layer_seed)
        self.deepspeed_moe = MOELayer(gate, experts, self.expert_group_name, ep_size, self.num_local_experts,
                                      use_tutel=use_tutel)
        if coefficient is not None:
            self.mlp = expert  # the template itself: a dense expert every token goes through
            self.coefficient = coefficient  # per token, softmax-mixes the MoE output and the dense one

    def set_deepspeed_parallelism(self, use_data_before_expert_parallel_: bool = False) -> None:
        """Create this layer's process groups (collective: every rank calls it, for its layers in the same order).
        The engine calls it at initialize; otherwise the first forward with ep_size > 1 does."""
        self._create_process_groups(use_data_before_expert_parallel_=use_data_before_expert_parallel_)

    @one_line_in_workers
    def _create_process_groups(self, use_data_before_expert_parallel_: bool = False) -> None:
        name = self.expert_group_name
        groups._create_expert_and_data_parallel(self.ep_size,
                                                use_data_before_expert_parallel_=use_data_before_expert_parallel_)
        ep_rank = groups._get_expert_parallel_rank(name)
        if ep_rank != self.ep_rank:
            # D+E layout: this rank holds other global experts than E+D assumed. Their weights were drawn for the
            # old indices; the engine's broadcast over the expert-data-parallel group (DeepSpeed's too) makes the
            # copies of each expert agree.
            self.ep_rank = ep_rank
            experts = self.deepspeed_moe.experts
            experts.global_ids = [ep_rank * self.num_local_experts + j for j in range(self.num_local_experts)]
        self.deepspeed_moe._set_ep_group(groups._get_expert_parallel_group(name))

    @property
    def expert_global_ids(self) -> list[int]:
        """The global indices of the experts this rank holds, by local slot (what checkpoints key experts by)."""
        return list(self.deepspeed_moe.experts.global_ids)

    def forward(self, hidden_states: Tensor, used_token: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
        if self.ep_size > 1 and self.deepspeed_moe.ep_group is None:
            self._create_process_groups()
        output = self._forward(hidden_states, used_token)
        l_aux, exp_counts = self.deepspeed_moe.l_aux, self.deepspeed_moe.exp_counts
        assert l_aux is not None and exp_counts is not None
        return output, l_aux, exp_counts

    @one_line_in_workers
    def _forward(self, hidden_states: Tensor, used_token: Tensor | None) -> Tensor:
        output: Tensor = self.deepspeed_moe(hidden_states, used_token)
        if self.use_residual:
            dense = self.mlp(hidden_states)
            if isinstance(dense, tuple):
                dense = dense[0]  # (output, bias) experts: the bias is ignored, as in DeepSpeed
            coef = F.softmax(self.coefficient(hidden_states), dim=-1)
            output = output * coef[..., 0:1] + dense * coef[..., 1:]
        return output
