"""Under dsrun with 2 ranks: checkpoints as real DeepSpeed scripts make them.

    unused DIR   a parameter no forward uses (HelloDeepSpeed's pooler), and one frozen when saved: save and load at
                 every stage; prints what the loaded optimizer state looks like
    dirs DIR     each rank passes its own directory (a per-rank timestamp): must stop, publishing nothing
    tags DIR     each rank passes its own tag, with tag_validation Fail and Warn
    ranklocal DIR  a client optimizer keeping per-shard state (not element-wise) at stages 1-2: save, load, go on
    weights DIR  save_16bit_model at every stage (bf16), exclude_frozen_parameters, a stage-3 engine without optimizer
"""

import json
import sys

import torch
import torch.distributed as dist
from torch import nn

import dsrun


class WithPooler(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.encoder = nn.Linear(4, 4)
        self.pooler = nn.Linear(4, 4)  # never used by forward
        self.head = nn.Linear(4, 1)

    def forward(self, x):
        return self.head(torch.tanh(self.encoder(x)))


def config(stage: int, **extra) -> dict:
    return {"train_micro_batch_size_per_gpu": 2, "zero_optimization": {"stage": stage},
            "optimizer": {"type": "AdamW", "params": {"lr": 1e-2}}, **extra}


def train(engine, steps: int = 2) -> None:
    for step in range(steps):
        x = torch.randn(2, 4, generator=torch.Generator().manual_seed(10 * step + engine.global_rank))
        engine.backward(engine(x).pow(2).mean())
        engine.step()


def state_of(engine, name: str) -> dict:
    master = next(m for p, m in engine.strategy.masters.items() if engine.param_names[p] == name)
    return {k: v.full_tensor() if hasattr(v, "full_tensor") else v
            for k, v in engine.optimizer.state.get(master, {}).items()}


def unused(root: str) -> dict:
    found = {}
    for stage in range(4):
        engine, *_ = dsrun.initialize(model=WithPooler(), config=config(stage))
        train(engine)
        engine.save_checkpoint(f"{root}/unused{stage}")
        saved = state_of(engine, "encoder.weight")["exp_avg"].clone()
        fresh, *_ = dsrun.initialize(model=WithPooler(), config=config(stage))
        fresh.load_checkpoint(f"{root}/unused{stage}")
        found[f"unused z{stage}"] = {
            "encoder state equal": bool(torch.equal(state_of(fresh, "encoder.weight")["exp_avg"], saved)),
            "pooler steps": float(state_of(fresh, "pooler.weight").get("step", torch.tensor(-1.0))),
        }
        frozen_model = WithPooler()
        frozen_model.pooler.requires_grad_(False)
        engine, *_ = dsrun.initialize(model=frozen_model, config=config(stage))
        train(engine)
        engine.save_checkpoint(f"{root}/frozen{stage}")
        fresh, *_ = dsrun.initialize(model=WithPooler(), config=config(stage))  # trainable now
        fresh.load_checkpoint(f"{root}/frozen{stage}")
        found[f"frozen z{stage}"] = {"pooler state": sorted(state_of(fresh, "pooler.weight")),
                                     "steps": fresh.global_steps}
        train(fresh, 1)  # and it trains on
    return found


def dirs(root: str) -> None:
    engine, *_ = dsrun.initialize(model=WithPooler(), config=config(0))
    train(engine, 1)
    engine.save_checkpoint(f"{root}/run-{engine.global_rank}")


def tags(root: str) -> dict:
    found = {}
    for mode in ("Fail", "Warn"):
        engine, *_ = dsrun.initialize(model=WithPooler(), config=config(1, checkpoint={"tag_validation": mode}))
        train(engine, 1)
        try:
            engine.save_checkpoint(f"{root}/{mode}", tag=f"tag{engine.global_rank}")
            found[mode] = "saved"
        except AssertionError as err:
            found[mode] = f"raised: {err}"
    return found


def weights(root: str) -> dict:
    found = {}
    for stage in range(4):
        zero = {"stage": stage, "stage3_gather_16bit_weights_on_model_save": True}
        engine, *_ = dsrun.initialize(model=WithPooler(), config=config(stage, bf16={"enabled": True},
                                                                         zero_optimization=zero))
        train(engine)
        wrote = engine.save_16bit_model(f"{root}/z{stage}", "model.bin")
        expected = {k: (v.full_tensor() if hasattr(v, "full_tensor") else v).detach().to(torch.bfloat16).cpu()
                    for k, v in engine.module.state_dict().items()}
        if engine.global_rank == 0:
            saved = torch.load(f"{root}/z{stage}/model.bin")
            plain = WithPooler().to(torch.bfloat16)
            plain.load_state_dict(saved)  # a plain model takes the file as it is
            found[f"z{stage}"] = {"wrote": wrote, "dtype": str(saved["encoder.weight"].dtype),
                                  "equal": all(torch.equal(saved[k], v) for k, v in expected.items())}
    engine, *_ = dsrun.initialize(model=WithPooler(), config=config(3))
    found["z3 without gather"] = engine.save_16bit_model(f"{root}/nogather")
    frozen = WithPooler()
    frozen.encoder.requires_grad_(False)
    engine, *_ = dsrun.initialize(model=frozen, config=config(2))
    train(engine)
    engine.save_16bit_model(f"{root}/frozen", exclude_frozen_parameters=True)
    engine.save_checkpoint(f"{root}/frozen_ckpt", exclude_frozen_parameters=True)
    reloaded_model = WithPooler()
    reloaded_model.encoder.requires_grad_(False)
    reloaded, *_ = dsrun.initialize(model=reloaded_model, config=config(2))
    reloaded.load_checkpoint(f"{root}/frozen_ckpt")
    found["frozen reload head equal"] = bool(torch.equal(reloaded.module.head.weight, engine.module.head.weight))
    if engine.global_rank == 0:
        found["frozen keys"] = sorted(torch.load(f"{root}/frozen/pytorch_model.bin"))
    forward_only, optimizer, *_ = dsrun.initialize(model=WithPooler(), config={"train_micro_batch_size_per_gpu": 2,
                                                                               "zero_optimization": {"stage": 3}})
    found["z3 forward only"] = [optimizer is None, list(forward_only(torch.ones(2, 4)).shape)]
    return found


class ShardNormSGD(torch.optim.SGD):
    """SGD that also keeps, per parameter, the norm of the gradient it saw: one value per tensor (shape (1,)), so
    under row sharding each rank holds the norm of its own rows, not an element-wise slice of anything."""

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    state = self.state[p]
                    state["grad_norm"] = p.grad.norm().reshape(1).clone()
                    state["seen"] = state.get("seen", torch.zeros(1)) + 1
        return super().step(closure)


def odd_rows() -> nn.Module:
    """A 3-row weight and bias: 2 rows on rank 0, 1 on rank 1, where a (1,)-shaped statistic looks element-wise."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 3), nn.Tanh(), nn.Linear(3, 1))


def ranklocal(root: str) -> dict:
    found = {}
    for stage in (1, 2):
        cfg = {"train_micro_batch_size_per_gpu": 2, "zero_optimization": {"stage": stage},
               "zero_allow_untested_optimizer": True}
        model = odd_rows()
        engine, optimizer, *_ = dsrun.initialize(model=model, optimizer=ShardNormSGD(model.parameters(), lr=0.1),
                                                 config=cfg)
        train(engine)
        engine.save_checkpoint(f"{root}/z{stage}")
        saved = {name: optimizer.state[m]["grad_norm"].clone() for name, m in
                 ((engine.param_names[p], m) for p, m in engine.strategy.masters.items())}
        model = odd_rows()
        fresh, fresh_optimizer, *_ = dsrun.initialize(model=model, optimizer=ShardNormSGD(model.parameters(), lr=0.1),
                                                      config=cfg)
        fresh.load_checkpoint(f"{root}/z{stage}")
        loaded = {fresh.param_names[p]: fresh_optimizer.state[m] for p, m in fresh.strategy.masters.items()}
        same = all(torch.equal(loaded[n]["grad_norm"], v) and loaded[n]["seen"].item() == 2 for n, v in saved.items())
        everyone = [None, None]
        dist.all_gather_object(everyone, same)
        train(fresh, 1)
        found[f"z{stage}"] = everyone
    return found


def main():
    mode, root = sys.argv[1], sys.argv[2]
    result = {"unused": unused, "dirs": dirs, "tags": tags, "weights": weights, "ranklocal": ranklocal}[mode](root)
    if dist.get_rank() == 0:
        print("RESULTS " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
