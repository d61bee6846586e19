"""Under dsrun: a layer list trained as a PipelineModule, checked at every step against the same layers trained as one
plain module on the whole global batch in this process (same seeds, same batches, same optimizer and clipping).

Arguments: stages, then options: tied, zero1, bf16, fp16, gpipe, overflow, gas=N, steps=N, csv=DIR (csv_monitor
writes to DIR/pipe).
Each rank prints `PIPE <rank> <json>`: its losses' largest difference from the reference, its stage's weights'
largest difference at the end, its parameter count, and (tied) its copy of the tied weight's difference.
"""

import json
import sys

import torch
import torch.distributed as dist
from torch import nn

import dsrun
from dsrun.pipe import LayerSpec, PipelineModule, TiedLayerSpec
from dsrun.runtime.utils import set_random_seed

STAGES = int(sys.argv[1])
OPTIONS = set(sys.argv[2:])
SETTINGS = dict(option.split("=") for option in OPTIONS if "=" in option)
GAS = int(SETTINGS.get("gas", 4))
STEPS = int(SETTINGS.get("steps", 5))
MICRO = 3
WIDTH = 8
BASE_SEED = 1234
CLIP = 0.5


class Overflow(nn.Module):
    """Identity, except in training step `at` (counted in `step`), where it yields inf: an overflow in one stage."""

    step = 0

    def __init__(self, at: int | None):
        super().__init__()
        self.at = at

    def forward(self, x):
        return x * float("inf") if Overflow.step == self.at and self.training else x


def layer_specs(overflow_at: int | None):
    tied = "tied" in OPTIONS
    # Only tied_weight_attr ("weight") is shared, as in DeepSpeed: without a bias the layer is the same module.
    first = TiedLayerSpec("embed", nn.Linear, WIDTH, WIDTH, bias=False) if tied else LayerSpec(nn.Linear, WIDTH, WIDTH)
    last = TiedLayerSpec("embed", nn.Linear, WIDTH, WIDTH, bias=False) if tied else LayerSpec(nn.Linear, WIDTH, WIDTH)
    middle = [LayerSpec(nn.Linear, WIDTH, 16), nn.Tanh(), LayerSpec(nn.Linear, 16, 16), lambda x: torch.relu(x),
              LayerSpec(nn.Linear, 16, WIDTH)]
    middle.append(LayerSpec(Overflow, overflow_at))
    return [first, *middle, last]


def reference_layers(specs) -> list:
    """The same layers, built once with the pipeline's seeds (a tied key built once, at its first index)."""
    built, tied = [], {}
    for index, spec in enumerate(specs):
        set_random_seed(BASE_SEED + index)
        if isinstance(spec, TiedLayerSpec):
            if spec.key not in tied:
                tied[spec.key] = spec.build()
            built.append(tied[spec.key])
        elif isinstance(spec, LayerSpec):
            built.append(spec.build())
        else:
            built.append(spec)
    return built


class Sequence(nn.Module):
    def __init__(self, layers):
        super().__init__()
        self.layers = layers
        self.holder = nn.ModuleList([layer for layer in layers if isinstance(layer, nn.Module)])

    def forward(self, x):
        for layer in self.layers:
            x = layer(x)
        return x


def global_batch(step: int, replicas: int):
    g = torch.Generator().manual_seed(1000 + step)
    size = MICRO * GAS * replicas
    return torch.randn(size, WIDTH, generator=g), torch.randn(size, WIDTH, generator=g)


def replica_batches(step: int, replica: int, replicas: int):
    """This replica's micro-batches of the step: its consecutive slice of the global batch."""
    x, y = global_batch(step, replicas)
    per = MICRO * GAS
    x, y = x[replica * per:(replica + 1) * per], y[replica * per:(replica + 1) * per]
    return [(x[i * MICRO:(i + 1) * MICRO], y[i * MICRO:(i + 1) * MICRO]) for i in range(GAS)]


def config() -> dict:
    cfg = {"train_micro_batch_size_per_gpu": MICRO, "gradient_accumulation_steps": GAS, "gradient_clipping": CLIP,
           "optimizer": {"type": "AdamW", "params": {"lr": 0.01}},
           "zero_optimization": {"stage": 1 if "zero1" in OPTIONS else 0}}
    if "bf16" in OPTIONS:
        cfg["bf16"] = {"enabled": True}
    if "fp16" in OPTIONS:
        cfg["fp16"] = {"enabled": True, "initial_scale_power": 8}
    if "gpipe" in OPTIONS:
        cfg["pipeline"] = {"schedule": "GPipe"}
    if "csv" in SETTINGS:
        cfg["csv_monitor"] = {"enabled": True, "output_path": SETTINGS["csv"], "job_name": "pipe"}
    return cfg


def main() -> None:
    dsrun.init_distributed()
    rank = dist.get_rank()
    overflow_at = 2 if "overflow" in OPTIONS else None
    specs = layer_specs(overflow_at)
    module = PipelineModule(specs, num_stages=STAGES, loss_fn=nn.functional.mse_loss, seed_layers=True,
                            base_seed=BASE_SEED, partition_method="uniform")
    engine, _, _, _ = dsrun.initialize(model=module, model_parameters=module.parameters(), config=config())
    replicas = dist.get_world_size() // STAGES
    replica = module.data_parallel_id

    reference = Sequence(reference_layers(layer_specs(None)))
    ref_opt = torch.optim.AdamW(reference.parameters(), lr=0.01, weight_decay=0.0)  # DeepSpeed's default, as dsrun's
    loss_diff = 0.0
    losses = []
    for step in range(STEPS):
        Overflow.step = step
        loss = engine.train_batch(iter(replica_batches(step, replica, replicas)))
        losses.append(float(loss))
        x, y = global_batch(step, replicas)
        ref_opt.zero_grad()
        ref_loss = nn.functional.mse_loss(reference(x), y)
        ref_loss.backward()
        if step == overflow_at:
            continue  # the pipeline skipped this step on every rank: so does the reference
        torch.nn.utils.clip_grad_norm_(reference.parameters(), CLIP)
        ref_opt.step()
        loss_diff = max(loss_diff, abs(float(loss) - ref_loss.item()))

    # Evaluation: the mean loss on every rank; the logits on the last stage (this replica's rows of the batch).
    eval_loss, logits = engine.eval_batch(iter(replica_batches(99, replica, replicas)), return_logits=True)
    x, y = global_batch(99, replicas)
    with torch.no_grad():
        ref_out = reference(x)
    eval_diff = abs(float(eval_loss) - nn.functional.mse_loss(ref_out, y).item())
    logits_diff = None
    if logits is not None:
        per = MICRO * GAS
        logits_diff = (logits.float() - ref_out[replica * per:(replica + 1) * per]).abs().max().item()

    weight_diff = 0.0
    ref_layers = reference.layers
    for index, local in zip(module.layer_indices, module.forward_funcs, strict=True):
        if isinstance(local, nn.Module):
            for mine, theirs in zip(local.parameters(), ref_layers[index].parameters(), strict=True):
                weight_diff = max(weight_diff, (mine.detach().float() - theirs.detach()).abs().max().item())
    result = {"loss_diff": loss_diff, "eval_diff": eval_diff, "logits_diff": logits_diff, "weight_diff": weight_diff,
              "losses": losses,
              "params": sum(p.numel() for p in module.parameters()), "skipped": engine.skipped_steps,
              "stage": module.stage_id, "global_steps": engine.global_steps,
              "schedules": sorted({type(schedule).__name__ for schedule in engine._stages.values()})}
    if "tied" in OPTIONS and "embed" in module.tied_modules:
        result["tied"] = module.tied_modules["embed"].weight.detach().float().tolist()
    print(f"PIPE {rank} {json.dumps(result)}", flush=True)


if __name__ == "__main__":
    main()
