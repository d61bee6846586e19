"""Under dsrun with 2 ranks: a model with an MoE layer trained through dsrun.initialize at ep_size 2 (each rank holds 2
of the 4 experts) against the same model at ep_size 1 in this process, fed every rank's tokens: the objective is the
mean of the ranks' losses, so the reference averages its per-rank losses. Clipping is on, so the global norm must
count each expert once. Then a checkpoint saved at ep_size 2 is loaded into an ep_size 1 model of this process.

Arguments:
  `train DIR STAGE`: ZeRO stage 0-3 (AdamW, whose state each stage keeps its own way: replicated, rows of experts
      spread over their expert-data-parallel group, FSDP2 shards) on 2 ranks (each expert on one rank) or 4 (each
      expert on two: its copies share its rows at stages 1-3). Saves the checkpoint in DIR/ckpt and the reference
      model and optimizer in DIR/reference.pt.
  `reload DIR STAGE EP`: after `train DIR`, at ep_size EP, any world size and stage: load DIR/ckpt, train STEPS more
      steps against the reference loaded from DIR/reference.pt.
  Options after those: `gas=N` (N micro-batches per step, engine.step after each as DeepSpeed scripts do),
  `bf16` / `fp16` (the reference stays fp32: compare with a looser bound).
Each rank prints `MOEENGINE <rank> <json>`: its losses' and its weights' largest differences from the reference.
"""

import json
import sys
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn

import dsrun
from dsrun.moe.layer import MoE
from dsrun.moe.utils import split_params_into_different_moe_groups_for_optimizer

WIDTH, TOKENS, STEPS, EXPERTS = 6, 8, 4, 4
OPTIONS = [arg for arg in sys.argv[1:] if arg in ("bf16", "fp16") or arg.startswith("gas=")]
ARGS = [arg for arg in sys.argv[1:] if arg not in OPTIONS]
GAS = int(next((o.split("=")[1] for o in OPTIONS if o.startswith("gas=")), 1))


class Net(nn.Module):
    def __init__(self, ep_size: int, **placement):
        super().__init__()
        torch.manual_seed(0)
        self.inp = nn.Linear(WIDTH, WIDTH)
        expert = nn.Sequential(nn.Linear(WIDTH, 8), nn.Tanh(), nn.Linear(8, WIDTH))
        self.moe = MoE(WIDTH, expert, num_experts=EXPERTS, ep_size=ep_size, k=1, drop_tokens=False, **placement)
        self.out = nn.Linear(WIDTH, 1)

    def forward(self, x):
        hidden, l_aux, _ = self.moe(torch.tanh(self.inp(x)))
        return self.out(hidden), l_aux


def loss_of(model, x, y):
    out, l_aux = model(x)
    return nn.functional.mse_loss(out, y) + 0.01 * l_aux


def batch(step: int, rank: int):
    g = torch.Generator().manual_seed(100 * step + rank)
    return torch.randn(TOKENS, WIDTH, generator=g), torch.randn(TOKENS, 1, generator=g)


def engine_for(ep_size: int, stage: int):
    model = Net(ep_size=ep_size)
    config = {"train_micro_batch_size_per_gpu": TOKENS, "gradient_accumulation_steps": GAS,
              "gradient_clipping": 0.05, "optimizer": {"type": "AdamW", "params": {"lr": 0.01}},
              "zero_optimization": {"stage": stage}}
    if "bf16" in OPTIONS:
        config["bf16"] = {"enabled": True}
    if "fp16" in OPTIONS:
        config["fp16"] = {"enabled": True, "initial_scale_power": 8}
    groups = split_params_into_different_moe_groups_for_optimizer(
        [{"params": list(model.parameters()), "name": "parameters"}])
    experts = [p for p in model.parameters() if getattr(p, "group_name", "ep_size_1") != "ep_size_1"]
    engine, _, _, _ = dsrun.initialize(model=model, model_parameters=groups, config=config)
    return model, engine, experts


def reference_and_optimizer():
    reference = Net(ep_size=1, rank=0, world_size=1)  # all 4 experts, no communication
    return reference, torch.optim.AdamW(reference.parameters(), lr=0.01, weight_decay=0.0)  # dsrun's AdamW default


def train_both(engine, reference, optimizer, steps: range) -> float:
    """Train the engine on this rank's batches and the reference on every rank's; the largest loss difference.
    Step n's micro-batch m is batch(n * GAS + m, rank); the objective is the mean over ranks and micro-batches."""
    rank, world = dist.get_rank(), dist.get_world_size()
    dtype = next(engine.module.parameters()).dtype
    loss_diff = 0.0
    for step in steps:
        optimizer.zero_grad()
        for micro in range(GAS):
            x, y = batch(step * GAS + micro, rank)
            loss = loss_of(engine, x.to(dtype), y.to(dtype))
            engine.backward(loss)
            engine.step()
            per_rank = [loss_of(reference, *batch(step * GAS + micro, r)) for r in range(world)]
            (sum(per_rank) / (world * GAS)).backward()
            loss_diff = max(loss_diff, abs(loss.float().item() - per_rank[rank].item()))
        torch.nn.utils.clip_grad_norm_(reference.parameters(), 0.05)
        optimizer.step()
    return loss_diff


def weight_diff(model, reference) -> float:
    theirs = dict(reference.named_parameters())
    slots = "moe.deepspeed_moe.experts.deepspeed_experts."
    diff = 0.0
    for name, param in model.named_parameters():
        if name.startswith(slots):  # this rank's slot j holds global expert ep_rank * 2 + j
            slot, rest = name[len(slots):].split(".", 1)
            name = f"{slots}{model.moe.expert_global_ids[int(slot)]}.{rest}"
        whole = param.full_tensor() if hasattr(param, "full_tensor") else param  # stage 3: FSDP2's DTensor
        diff = max(diff, (whole.detach().float() - theirs[name].detach()).abs().max().item())
    return diff


def train(out: Path, stage: int) -> dict:
    model, engine, experts = engine_for(2, stage)
    reference, optimizer = reference_and_optimizer()
    loss_diff = train_both(engine, reference, optimizer, range(STEPS))

    # Optimizer state of this rank's experts against their size: 1/2 when two ranks share their rows (4 ranks).
    masters = [engine.strategy.masters[p] for p in experts]
    state = sum(engine.optimizer.state[m]["exp_avg"].to_local().numel() if hasattr(m, "to_local")
                else engine.optimizer.state[m]["exp_avg"].numel() for m in masters)
    state_share = state / sum(p.numel() for p in experts)

    engine.save_checkpoint(out / "ckpt")
    dist.barrier()
    from dsrun.runtime.checkpoint.consolidate import consolidate

    load_diff = None
    if dist.get_rank() == 0:  # every expert, under its global index, loads into the ep_size 1 model
        torch.save({"model": reference.state_dict(), "optimizer": optimizer.state_dict()}, out / "reference.pt")
        consolidate(out / "ckpt", out / "weights.pt")
        fresh = Net(ep_size=1, rank=0, world_size=1)
        fresh.load_state_dict(torch.load(out / "weights.pt")["module"])
        load_diff = max((a - b).abs().max().item() for a, b in zip(fresh.parameters(), reference.parameters(),
                                                                   strict=True))
    return {"loss_diff": loss_diff, "weight_diff": weight_diff(model, reference), "load": load_diff,
            "state_share": state_share}


def reload(out: Path, stage: int, ep_size: int) -> dict:
    model, engine, _ = engine_for(ep_size, stage)
    engine.load_checkpoint(out / "ckpt")
    reference, optimizer = reference_and_optimizer()
    saved = torch.load(out / "reference.pt")
    reference.load_state_dict(saved["model"])
    optimizer.load_state_dict(saved["optimizer"])
    loaded_diff = weight_diff(model, reference)
    # The next steps also need the optimizer state of every expert, wherever this layout put it.
    loss_diff = train_both(engine, reference, optimizer, range(STEPS, STEPS + 2))
    return {"loaded_diff": loaded_diff, "loss_diff": loss_diff, "weight_diff": weight_diff(model, reference),
            "global_steps": engine.global_steps}


def main() -> None:
    dsrun.init_distributed()
    out, stage = Path(ARGS[1]), int(ARGS[2])
    numbers = train(out, stage) if ARGS[0] == "train" else reload(out, stage, int(ARGS[3]))
    print(f"MOEENGINE {dist.get_rank()} {json.dumps(numbers)}", flush=True)


if __name__ == "__main__":
    main()
