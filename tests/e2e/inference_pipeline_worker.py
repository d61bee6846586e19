"""A pipeline's checkpoint served by init_inference, under dsrun on 2 ranks.

`train WORKDIR`: a PipelineModule of 2 stages (dp 1) whose first and last layers are one tied linear layer, trained
a few steps and saved to WORKDIR/ckpt; the last stage writes the trained pipeline's outputs on a fixed input (and
the untrained ones, to show training moved them) to WORKDIR/trained.pt.
`serve WORKDIR`: the same layers built as a plain nn.Sequential (first initialised otherwise, and on the meta
device), loaded with init_inference(checkpoint=WORKDIR/ckpt) at tp_size 1 and 2; each rank prints
`PIPESERVE <rank> <json>` with, per engine, the largest difference of its outputs from the trained pipeline's, how
many times the checkpoint was read whole on this rank and how many of its layers run row-split; and the errors
refusing a Sequential that makes the tied layer one module (its two biases differ). The same for a meta model at
tp_size 2 from the checkpoint consolidated into a .pt file.
"""

import json
import sys
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn

import dsrun
from dsrun.errors import UsageError
from dsrun.inference import initialize, weights
from dsrun.inference.engine import InferenceEngine
from dsrun.inference.local_linear import RowParallelLinear
from dsrun.pipe import LayerSpec, PipelineModule, TiedLayerSpec
from dsrun.runtime.checkpoint.consolidate import consolidate

MODE, WORKDIR = sys.argv[1], Path(sys.argv[2])
WIDTH, HIDDEN, BATCH = 8, 16, 4
TP_PLAN = {"*.fc": "colwise", "*.proj": "rowwise"}


class Block(nn.Module):
    """A residual MLP: the linear layers tp_plan splits (fc by output, proj by input)."""

    def __init__(self, width: int, hidden: int):
        super().__init__()
        self.fc = nn.Linear(width, hidden)
        self.proj = nn.Linear(hidden, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.proj(torch.relu(self.fc(x)))


def specs() -> list:
    # The tied layer shares its weight; its bias is each stage's copy's own (the two stages train them apart).
    return [TiedLayerSpec("embed", nn.Linear, WIDTH, WIDTH), nn.Tanh(), LayerSpec(Block, WIDTH, HIDDEN),
            LayerSpec(Block, WIDTH, HIDDEN), TiedLayerSpec("embed", nn.Linear, WIDTH, WIDTH)]


def sequential(tie: str) -> nn.Sequential:
    """What a user builds to serve the checkpoint: the same layers in the same order, the tied layer at both of its
    indices, sharing its weight (`tie` "weight"), or as two layers each filled from the one saved weight ("none").
    "module": one layer at both indices, which cannot hold the two stages' biases (init_inference refuses it)."""
    embed = nn.Linear(WIDTH, WIDTH)
    last = embed if tie == "module" else nn.Linear(WIDTH, WIDTH)
    if tie == "weight":
        last.weight = embed.weight
    return nn.Sequential(embed, nn.Tanh(), Block(WIDTH, HIDDEN), Block(WIDTH, HIDDEN), last)


def data(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(BATCH, WIDTH, generator=g), torch.randn(BATCH, WIDTH, generator=g)


def micro_batches(x: torch.Tensor, y: torch.Tensor):
    return iter([(x[:BATCH // 2], y[:BATCH // 2]), (x[BATCH // 2:], y[BATCH // 2:])])


def train() -> None:
    module = PipelineModule(specs(), num_stages=2, loss_fn=nn.functional.mse_loss, partition_method="uniform")
    engine, *_ = dsrun.initialize(model=module, model_parameters=module.parameters(), config={
        "train_batch_size": BATCH, "train_micro_batch_size_per_gpu": BATCH // 2,
        "optimizer": {"type": "AdamW", "params": {"lr": 0.05}}})
    probe = data(99)
    _, untrained = engine.eval_batch(micro_batches(*probe), return_logits=True)
    for step in range(5):
        engine.train_batch(micro_batches(*data(500 + step)))
    _, outputs = engine.eval_batch(micro_batches(*probe), return_logits=True)
    engine.save_checkpoint(WORKDIR / "ckpt")
    if engine.is_last_stage():
        torch.save({"input": probe[0], "outputs": outputs, "untrained": untrained}, WORKDIR / "trained.pt")


def build(tp_size: int, built: str, tie: str, source: str = "ckpt") -> InferenceEngine:
    torch.manual_seed(3)  # weights unlike the trained ones: only the checkpoint can make them right
    with torch.device(built):
        model = sequential(tie)
    plan = {"tp_plan": TP_PLAN} if tp_size > 1 else {}
    return initialize.build(model, dtype=torch.float32, tensor_parallel={"tp_size": tp_size},
                            checkpoint=str(WORKDIR / source), **plan)


def serve_one(tp_size: int, built: str, tie: str, x: torch.Tensor, want: torch.Tensor, source: str = "ckpt") -> dict:
    whole_reads = []  # at tp 2 each rank must read only its part into a meta model, not the whole weights
    read_whole = weights.read
    weights.read = lambda path: whole_reads.append(str(path)) or read_whole(path)
    try:
        engine = build(tp_size, built, tie, source)
    finally:
        weights.read = read_whole
    return {"diff": (engine(x) - want).abs().max().item(), "whole_reads": len(whole_reads),
            "row_split": sum(isinstance(m, RowParallelLinear) for m in engine.module.modules())}


def refusal(tp_size: int, built: str, source: str = "ckpt") -> str:
    try:
        build(tp_size, built, "module", source)
    except UsageError as err:
        return str(err)
    return "served"


def serve() -> dict:
    trained = torch.load(WORKDIR / "trained.pt")
    x, want = trained["input"], trained["outputs"]
    result: dict = {"moved": (want - trained["untrained"]).abs().max().item()}
    for tp_size in (1, 2):
        for built, tie in (("cpu", "weight"), ("meta", "weight"), ("meta", "none")):
            result[f"tp{tp_size}_{built}_tie_{tie}"] = serve_one(tp_size, built, tie, x, want)
    # The consolidated file, each rank reading its part into a meta model.
    if dist.get_rank() == 0:
        consolidate(WORKDIR / "ckpt", WORKDIR / "weights.pt")
    dist.barrier()
    result["tp2_meta_tie_weight_from_file"] = serve_one(2, "meta", "weight", x, want, "weights.pt")
    # Read whole (tp 1, weights on the CPU) and read in parts (tp 2, on meta): each must refuse.
    result["refused"] = [refusal(1, "cpu"), refusal(2, "meta"), refusal(2, "meta", "weights.pt")]
    return result


if __name__ == "__main__":
    dsrun.init_distributed()
    if MODE == "train":
        train()
    else:
        print(f"PIPESERVE {dist.get_rank()} {json.dumps(serve())}", flush=True)
