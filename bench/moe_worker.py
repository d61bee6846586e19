"""The worker the MoE benchmark launches on 2 ranks (`dsrun --num_gpus 2` or `deepspeed`): one MoE block per
implementation (see moe_bench.py), all loaded with the same gate and expert weights, fed the same tokens.

Per top-k: build every implementation's layer, check once that they agree (outputs, l_aux, exp_counts, gradients),
warm up, then time forward+backward in interleaved repetitions (bench/interleaved.py). Rank 0 writes one JSON file
with both ranks' figures; moe_bench.py summarises.
"""

from __future__ import annotations

import argparse
import faulthandler
import os
import sys
import traceback
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # launched as a script: bench/ is on sys.path, the repository root is not
    sys.path.insert(0, str(REPO))

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

from bench.interleaved import interleave  # noqa: E402
from bench.moe_bench import (  # noqa: E402
    AUX_COEF,
    BATCH,
    CAPACITY_FACTOR,
    EP_SIZE,
    EXPERTS,
    FFN,
    HIDDEN,
    SEED,
    SEQUENCE,
    TOP_K,
    capacity,
    layer_options,
)
from bench.workers import gather_and_write  # noqa: E402

CHECK_SEED = 1234  # the generator's state before each implementation's checked step: the same gate draws in all


class Expert(nn.Module):
    def __init__(self):
        super().__init__()
        self.up = nn.Linear(HIDDEN, FFN)
        self.down = nn.Linear(FFN, HIDDEN)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(F.gelu(self.up(x)))


def param_bytes(module: nn.Module) -> int:
    return sum(p.numel() * p.element_size() for p in module.parameters())


def reference_weights() -> tuple[torch.Tensor, list[dict[str, torch.Tensor]]]:
    """The gate's weight and every global expert's state, each from its own seed, the global generator untouched:
    what every implementation is loaded with (DeepSpeed starts all experts equal, dsrun each from its own seed)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(SEED)
        gate = nn.Linear(HIDDEN, EXPERTS, bias=False).weight.detach().clone()
        experts = []
        for g in range(EXPERTS):
            torch.manual_seed(SEED + 1 + g)
            experts.append({k: v.detach().clone() for k, v in Expert().state_dict().items()})
    return gate, experts


class Block:
    """One implementation's MoE layer on this rank's fixed tokens; step() is one forward+backward."""

    def __init__(self, name: str, layer: nn.Module, ep_size: int, global_ids: list[int], rank: int):
        self.name, self.layer, self.ep_size, self.global_ids = name, layer, ep_size, global_ids
        gate, experts = reference_weights()
        moe = layer.deepspeed_moe
        with torch.no_grad():
            moe.gate.wg.weight.copy_(gate)
            for slot, g in enumerate(global_ids):
                moe.experts.deepspeed_experts[slot].load_state_dict(experts[g])
        generator = torch.Generator().manual_seed(SEED + 100 + rank)  # each rank its own tokens, as data parallel
        self.tokens = torch.randn(BATCH, SEQUENCE, HIDDEN, generator=generator).requires_grad_(True)
        self.target = torch.randn(BATCH, SEQUENCE, HIDDEN, generator=generator)
        self.params = list(layer.parameters())

    def step(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        for p in self.params:
            p.grad = None
        self.tokens.grad = None
        output, l_aux, exp_counts = self.layer(self.tokens)
        loss = (output * self.target).mean() + AUX_COEF * l_aux
        loss.backward()
        return output.detach(), l_aux.detach(), exp_counts

    def run(self, count: int) -> None:
        for _ in range(count):
            self.step()

    def expert_bytes(self) -> int:
        return param_bytes(self.layer.deepspeed_moe.experts)

    def checked_step(self) -> dict:
        """One step from CHECK_SEED: outputs, l_aux, counts and gradients, experts keyed by global index. At ep_size
        1 an expert's gradient holds this rank's tokens only; summed over the ranks it is what ep_size 2 gives."""
        torch.manual_seed(CHECK_SEED + dist.get_rank())
        output, l_aux, exp_counts = self.step()
        experts = self.layer.deepspeed_moe.experts.deepspeed_experts
        grads = {g: [p.grad.detach().clone() for p in experts[slot].parameters()]
                 for slot, g in enumerate(self.global_ids)}
        if self.ep_size == 1:
            for tensors in grads.values():
                for t in tensors:
                    dist.all_reduce(t)
        return {"output": output, "l_aux": l_aux, "exp_counts": exp_counts.clone(),
                "input_grad": self.tokens.grad.detach().clone(),
                "gate_grad": self.layer.deepspeed_moe.gate.wg.weight.grad.detach().clone(), "expert_grads": grads}


def build_dsrun(k: int, ep_size: int, rank: int, name: str) -> Block:
    from dsrun.moe.layer import MoE

    layer = MoE(HIDDEN, Expert(), num_experts=EXPERTS, ep_size=ep_size, **layer_options(k))
    if ep_size > 1:
        layer.set_deepspeed_parallelism()  # what dsrun.initialize does; otherwise the first forward would
    return Block(name, layer, ep_size, layer.expert_global_ids, rank)


def build_deepspeed(k: int, rank: int) -> Block:
    import deepspeed
    from deepspeed.moe.layer import MoE
    from deepspeed.utils import groups

    deepspeed.init_distributed(dist_backend="gloo")  # adopts the process group already started
    layer = MoE(HIDDEN, Expert(), num_experts=EXPERTS, ep_size=EP_SIZE, **layer_options(k))
    layer.set_deepspeed_parallelism()  # what deepspeed.initialize does for MoE layers
    ep_rank = groups._get_expert_parallel_rank(layer.expert_group_name)
    local = EXPERTS // EP_SIZE
    return Block("deepspeed", layer, EP_SIZE, [ep_rank * local + j for j in range(local)], rank)


def build(impl: str, k: int, rank: int) -> Block:
    if impl == "dsrun":
        return build_dsrun(k, EP_SIZE, rank, impl)
    if impl == "dsrun-ep1":
        return build_dsrun(k, 1, rank, impl)
    return build_deepspeed(k, rank)


def _largest(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).abs().max())


def compare(a: dict, b: dict) -> dict:
    shared = sorted(set(a["expert_grads"]) & set(b["expert_grads"]))
    expert = max(_largest(x, y) for g in shared for x, y in zip(a["expert_grads"][g], b["expert_grads"][g],
                                                                    strict=True))
    return {"output": _largest(a["output"], b["output"]), "l_aux": _largest(a["l_aux"], b["l_aux"]),
            "same_counts": bool(torch.equal(a["exp_counts"], b["exp_counts"])),
            "input_grad": _largest(a["input_grad"], b["input_grad"]),
            "gate_grad": _largest(a["gate_grad"], b["gate_grad"]), "expert_grad": expert}


def measure_config(args, k: int, rank: int, errors: dict[str, str]) -> tuple[dict, list[dict]]:
    blocks: dict[str, Block] = {}
    for impl in args.impls:
        try:
            blocks[impl] = build(impl, k, rank)
        except Exception as err:  # noqa: BLE001 - a peer that cannot run is reported, the others still measured
            if impl != "deepspeed":
                raise
            errors[impl] = f"{type(err).__name__}: {err}"
            traceback.print_exc()
    checked = {name: block.checked_step() for name, block in blocks.items()}
    names = list(blocks)
    checks = {f"{a}-{b}": compare(checked[a], checked[b]) for i, a in enumerate(names) for b in names[i + 1:]}
    for block in blocks.values():
        block.run(args.warmup)
    timed = interleave(blocks, args.reps, args.rounds, args.steps_per_round, f"moe top-{k}", "s/step", rank)
    with torch.device("meta"):
        one_expert = param_bytes(Expert())
    placement = [{"impl": name, "ep_size": b.ep_size, "global_ids": b.global_ids, "expert_bytes": b.expert_bytes(),
                  "all_expert_bytes": EXPERTS * one_expert} for name, b in blocks.items()]
    # The checked step's routing (the same in every implementation): how many routes the capacity dropped.
    counts = checked["dsrun"]["exp_counts"].tolist()
    return {"k": k, "capacity": capacity(k), "exp_counts": counts, **timed, "checks": checks}, placement


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--impls", nargs="+", default=["dsrun", "dsrun-ep1"])
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--rounds", type=int, default=5, help="rounds per repetition, each implementation in turn")
    parser.add_argument("--steps-per-round", type=int, default=2, help="timed forward+backward steps per round")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--top-k", type=int, nargs="+", default=list(TOP_K))
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--local_rank", type=int, default=None, help="passed by the launchers; LOCAL_RANK is used")
    return parser.parse_args()


def main() -> None:
    faulthandler.enable()  # an abort inside torch or gloo then shows the Python stack it happened under
    args = parse_args()
    dist.init_process_group("gloo")  # both MoE layers' expert-parallel groups are made inside this one
    rank, world = dist.get_rank(), dist.get_world_size()
    if world != EP_SIZE:
        raise SystemExit(f"moe_worker: {EP_SIZE} ranks expected (one expert-parallel group), got {world}")
    errors: dict[str, str] = {}
    configs, placement = [], []
    for k in args.top_k:
        config, placement = measure_config(args, k, rank, errors)
        configs.append(config)
    with torch.device("meta"):
        expert_parameters = sum(p.numel() for p in Expert().parameters())
    facts = {"world": world, "threads": torch.get_num_threads(), "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
             "hidden": HIDDEN, "ffn": FFN, "experts": EXPERTS, "expert_parameters": expert_parameters,
             "tokens": BATCH * SEQUENCE, "capacity_factor": CAPACITY_FACTOR, "aux_coef": AUX_COEF,
             "torch": torch.__version__}
    gather_and_write(args.out, args.impls, facts, {"configs": configs, "placement": placement, "errors": errors})


if __name__ == "__main__":
    main()
