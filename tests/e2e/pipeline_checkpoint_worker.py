"""Under dsrun: a pipeline checkpoint saved with one partition and loaded with another.

`save DIR STAGES`: train 3 steps, save to DIR, train 2 more. `load DIR STAGES`: load DIR, train the same 2 steps.
Both print `CKPT <rank> <json>` with the evaluation loss right after the save/load and the losses of the 2 steps,
which must agree whatever the number of stages and replicas of each run (the global batch is the same 8 samples:
gradient accumulation makes up for fewer replicas). ZeRO-1 (env ZERO) shards the optimizer state over a stage's
replicas, and a tied layer's weight is held by every stage that uses it.
"""

import json
import os
import sys

import torch
import torch.distributed as dist
from torch import nn

import dsrun
from dsrun.pipe import LayerSpec, PipelineModule, TiedLayerSpec

MODE, DIRECTORY, STAGES = sys.argv[1], sys.argv[2], int(sys.argv[3])
MICRO, BATCH, WIDTH = 2, 8, 6


def specs():
    # Without a bias the tied layer is one layer at any partition (a bias would be each stage's copy's own).
    return [TiedLayerSpec("embed", nn.Linear, WIDTH, WIDTH, bias=False), nn.Tanh(), LayerSpec(nn.Linear, WIDTH, WIDTH),
            nn.ReLU(), LayerSpec(nn.Linear, WIDTH, WIDTH), TiedLayerSpec("embed", nn.Linear, WIDTH, WIDTH, bias=False)]


def batches(step: int, replica: int, replicas: int):
    g = torch.Generator().manual_seed(500 + step)
    x, y = torch.randn(BATCH, WIDTH, generator=g), torch.randn(BATCH, WIDTH, generator=g)
    per = BATCH // replicas
    x, y = x[replica * per:(replica + 1) * per], y[replica * per:(replica + 1) * per]
    return iter([(x[i:i + MICRO], y[i:i + MICRO]) for i in range(0, per, MICRO)])


def main() -> None:
    dsrun.init_distributed()
    module = PipelineModule(specs(), num_stages=STAGES, loss_fn=nn.functional.mse_loss, seed_layers=True,
                            partition_method="uniform")
    config = {"train_batch_size": BATCH, "train_micro_batch_size_per_gpu": MICRO, "gradient_clipping": 1.0,
              "optimizer": {"type": "AdamW", "params": {"lr": 0.01}},
              "zero_optimization": {"stage": int(os.environ.get("ZERO", "1"))}}
    engine, _, _, _ = dsrun.initialize(model=module, model_parameters=module.parameters(), config=config)
    replicas = dist.get_world_size() // STAGES
    replica = module.data_parallel_id
    if MODE == "save":
        for step in range(3):
            engine.train_batch(batches(step, replica, replicas))
        engine.save_checkpoint(DIRECTORY)
    else:
        path, _ = engine.load_checkpoint(DIRECTORY)
        assert path is not None
    evaluation = float(engine.eval_batch(batches(99, replica, replicas)))
    losses = [float(engine.train_batch(batches(step, replica, replicas))) for step in (3, 4)]
    print(f"CKPT {dist.get_rank()} {json.dumps({'eval': evaluation, 'losses': losses, 'steps': engine.global_steps})}",
          flush=True)


if __name__ == "__main__":
    main()
