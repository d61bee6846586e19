"""Under dsrun with 2 ranks: what real DeepSpeed scripts do that a plain engine loop does not.

- The forward runs through the bare module (DeepSpeed's GAN example: `netD(real)`), then engine.backward/step:
  gradients must still be averaged over the ranks at every stage (max |weights - reference| per stage and
  accumulation).
- No seed, or different weights on each rank before initialize (the CIFAR example): every stage starts from rank 0's
  parameters and buffers, also for meta-device models and with a client optimizer.
- BatchNorm statistics stay each rank's own during training (DeepSpeed does not broadcast buffers per forward).
"""

import json

import torch
import torch.distributed as dist
from torch import nn

import dsrun

STEPS = 3


def build(seed: int | None = None, device=None) -> nn.Module:
    if seed is not None:
        torch.manual_seed(seed)
    with torch.device(device or "cpu"):
        return nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Tanh(), nn.Linear(8, 1))


def full(tensor: torch.Tensor) -> torch.Tensor:
    return (tensor.full_tensor() if hasattr(tensor, "full_tensor") else tensor).detach().float().cpu()


def data(rank: int, step: int):
    g = torch.Generator().manual_seed(100 * step + rank)
    return torch.randn(6, 4, generator=g), torch.randn(6, 1, generator=g)


def config(stage: int, accumulation: int = 1) -> dict:
    return {"train_micro_batch_size_per_gpu": 3, "gradient_accumulation_steps": accumulation, "gradient_clipping": 0,
            "zero_optimization": {"stage": stage}, "optimizer": {"type": "SGD", "params": {"lr": 0.1}}}


def reference(accumulation: int) -> dict[str, torch.Tensor]:
    """One process training on both ranks' data: each micro-batch is half of a rank's 6 samples."""
    model = build(seed=1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for step in range(STEPS):
        losses = []
        for rank in (0, 1):
            x, y = data(rank, step)
            for micro in range(accumulation):
                part = slice(3 * micro, 3 * micro + 3) if accumulation == 2 else slice(0, 3)
                losses.append(nn.functional.mse_loss(model(x[part]), y[part]))
        (sum(losses) / len(losses)).backward()
        opt.step()
        opt.zero_grad()
    return {k: v.detach() for k, v in model.named_parameters()}


def bare_forward(stage: int, accumulation: int, own_backward: bool = False) -> float:
    """The forward through the module itself (not the engine); with `own_backward` the forward through the engine
    and the script's own loss.backward() instead of engine.backward (what DeepSpeed accepts too)."""
    model = build(seed=1)
    engine, *_ = dsrun.initialize(model=model, config=config(stage, accumulation))
    rank = engine.global_rank
    for step in range(STEPS):
        x, y = data(rank, step)
        for micro in range(accumulation):
            part = slice(3 * micro, 3 * micro + 3) if accumulation == 2 else slice(0, 3)
            if own_backward:
                nn.functional.mse_loss(engine(x[part]), y[part]).backward()
            else:
                engine.backward(nn.functional.mse_loss(model(x[part]), y[part]))  # the module, not the engine
            engine.step()
    expected = reference(accumulation)
    got = dict(model.named_parameters())
    return max((full(got[k]) - v).abs().max().item() for k, v in expected.items())


def stale_gradients(stage: int, precision: str) -> float:
    """A backward outside the engine after a step (a GAN's generator loss through D), or a gradient the script
    replaced, then engine.zero_grad(): the next update must be that step's gradient alone. Returns the largest
    |update / expected - 1| (SGD, lr 1: the update is the averaged gradient)."""
    torch.manual_seed(0)
    model = nn.Linear(4, 1, bias=False)
    cfg = {**config(stage), "optimizer": {"type": "SGD", "params": {"lr": 1.0}}}
    if precision == "bf16":
        cfg["bf16"] = {"enabled": True}
    engine, *_ = dsrun.initialize(model=model, config=cfg)
    ones = torch.ones(1, 4, dtype=model.weight.dtype)  # the bare module takes its own dtype (bf16 at stages 0-2)
    engine.backward(engine(ones).sum())
    engine.step()
    model(100 * ones).sum().backward()  # outside the engine: gradient 100
    engine.zero_grad()
    before = full(model.weight).clone()
    engine.backward(engine(ones).sum())  # gradient 1 on every rank
    engine.step()
    return ((before - full(model.weight)) - 1).abs().max().item()


def rank0_start(stage: int, variant: str) -> float:
    """Largest difference between this rank's weights after initialize and rank 0's before it."""
    rank = dist.get_rank() if dist.is_initialized() else int(__import__("os").environ["RANK"])
    expected = build(seed=100)  # what rank 0 builds
    expected[1].running_mean.fill_(1.0)
    model = build(seed=100 + rank, device="meta" if variant == "meta" else None)
    if variant != "meta":
        model[1].running_mean.fill_(1.0 + rank)
    kwargs = {}
    if variant == "client optimizer":
        kwargs["optimizer"] = torch.optim.SGD(model.parameters(), lr=0.1)
    cfg = config(stage)
    if variant == "client optimizer":
        del cfg["optimizer"]
    dsrun.initialize(model=model, config=cfg, **kwargs)
    got = model.state_dict()
    if variant == "meta":  # a meta model's buffers come from reset_parameters: zeros, on every rank
        expected[1].running_mean.zero_()
    return max((full(got[k]) - full(v)).abs().max().item()
               for k, v in expected.state_dict().items() if v.is_floating_point())


def buffers_stay_local() -> bool:
    """After training on rank-different data, each rank keeps its own BatchNorm running mean (stage 0)."""
    model = build(seed=1)
    engine, *_ = dsrun.initialize(model=model, config=config(0))
    x, _ = data(engine.global_rank, 0)
    engine.backward(engine(x[:3]).pow(2).mean())
    engine.step()
    model.eval()  # the statistics stay as training left them...
    engine(x[:3])  # ...unless a forward broadcasts rank 0's (DDP's broadcast_buffers does)
    means = [torch.zeros(8) for _ in range(2)]
    dist.all_gather(means, model[1].running_mean.detach().clone())
    return not torch.equal(means[0], means[1])


def reinitialize() -> dict:
    """initialize() twice on one module at stage 3 (load, then initialize again), then with other settings."""
    found = {}
    model = build(seed=1)
    first, *_ = dsrun.initialize(model=model, config=config(3))
    x, y = data(first.global_rank, 0)
    first.backward(nn.functional.mse_loss(first(x[:3]), y[:3]))
    first.step()
    second, *_ = dsrun.initialize(model=model, config=config(3))
    second.backward(nn.functional.mse_loss(second(x[:3]), y[:3]))
    second.step()
    found["again"] = all(torch.isfinite(full(p)).all().item() for p in model.parameters())
    try:
        dsrun.initialize(model=model, config={**config(3), "bf16": {"enabled": True}})
        found["other settings"] = "no error"
    except SystemExit as stop:
        found["other settings"] = stop.code
    return found


def main():
    results = {}
    for stage in range(4):
        for accumulation in (1, 2):
            results[f"bare z{stage} a{accumulation}"] = bare_forward(stage, accumulation)
        results[f"own backward z{stage}"] = bare_forward(stage, 1, own_backward=True)
        for precision in ("fp32", "bf16"):
            results[f"stale z{stage} {precision}"] = stale_gradients(stage, precision)
        for variant in ("plain", "meta", "client optimizer"):
            results[f"start z{stage} {variant}"] = rank0_start(stage, variant)
    results["buffers local"] = buffers_stay_local()
    results["reinitialize z3"] = reinitialize()
    if dist.get_rank() == 0:
        print("RESULTS " + json.dumps(results), flush=True)


if __name__ == "__main__":
    main()
