"""Under dsrun with 2 ranks: pipeline mistakes, each of which must end the job with one line and exit code 2."""

import sys

import torch
from torch import nn

import dsrun
from dsrun.pipe import LayerSpec, PipelineModule, TiedLayerSpec

MODE = sys.argv[1]
CONFIG = {"train_micro_batch_size_per_gpu": 2, "gradient_accumulation_steps": 2,
          "optimizer": {"type": "SGD", "params": {"lr": 0.1}}}


def main() -> None:
    dsrun.init_distributed()
    layers = [LayerSpec(nn.Linear, 4, 4), nn.ReLU(), LayerSpec(nn.Linear, 4, 4)]
    config = dict(CONFIG)
    if MODE == "three stages":
        layers = [*layers, nn.ReLU()]
        PipelineModule(layers, num_stages=3)
    if MODE == "tied shapes":
        width = 4 + torch.distributed.get_rank()  # each stage builds the key with another shape
        layers = [TiedLayerSpec("embed", nn.Linear, 4, width), nn.ReLU(), TiedLayerSpec("embed", nn.Linear, 4, width)]
    if MODE == "zero2":
        config["zero_optimization"] = {"stage": 2}
    module = PipelineModule(layers, num_stages=2, loss_fn=nn.functional.mse_loss)
    engine, _, _, _ = dsrun.initialize(model=module, model_parameters=module.parameters(), config=config)
    batch = [(torch.randn(2, 4), torch.randn(2, 4)) for _ in range(2)]
    if MODE == "forward":
        engine(batch[0][0])
    if MODE == "no data":
        engine.train_batch()
    if MODE == "uneven":
        engine.train_batch(iter([batch[0], (torch.randn(1, 4), torch.randn(1, 4))]))
    engine.train_batch(iter(batch))


if __name__ == "__main__":
    main()
