"""init_inference on 4 ranks at tp_size 2: two replicas of the split model (ranks 0-1 and 2-3), each serving its own
inputs. Each rank prints `INFER <rank> <json>` with:

- `replicas`: per model (tiny GPT-2, tiny Llama), the largest difference of the engine's logits from the unsplit
  model's (seed 1) on this replica's own input, although every rank built its model with its own seed (and the same
  at tp_size 1: four replicas of the whole model); the input
  itself; the bytes of the split layers this rank holds against their whole size; tokens sampled after seeding
  every rank differently.
- `files`: per model, a model on the meta device filled from a consolidated .safetensors and a .pt file at tp 2:
  logits against the eager model's, whether the rank holds half of each split weight, and what loading took in this
  rank: the peak growth of its own (anonymous) memory against the model's size, and the part of the file's memory
  map it touched (meaningful for the larger Llama, whose split layers make up 97% of it).
- `moe`: a model with a dense MLP block and a dsrun MoE layer (4 experts whose modules are named like an MLP block)
  trained at ep_size 2 and saved, then served from its checkpoint at tp 2 (experts whole, ep_size 1): logits against
  the trained model's, how far training moved them, and which parameters came out split.
"""

import ctypes
import gc
import json
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import safetensors.torch  # imported before any memory is measured
import torch
import torch.distributed as dist
from inference_worker import BUILD, VOCAB, nbytes, params_on_meta, split_bytes
from torch import nn
from transformers import LlamaConfig, LlamaForCausalLM

import dsrun
from dsrun.inference import file_shards
from dsrun.moe.layer import MoE

TP = 2
M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter


def replicas(name: str) -> dict:
    rank = dist.get_rank()
    model = BUILD[name](seed=1 + rank)  # ranks differ: both replicas must still run rank 0's model
    reference = BUILD[name](seed=1)
    torch.manual_seed(7 + rank // TP)  # each replica its own prompt
    ids = torch.randint(1, VOCAB - 1, (2, 10))
    engine = dsrun.init_inference(model, dtype=torch.float32, tensor_parallel={"tp_size": TP})
    with torch.no_grad():
        want = reference(ids).logits
    torch.manual_seed(100 + rank)
    sampled = engine.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=8, do_sample=True, top_k=0)
    unsplit = dsrun.init_inference(BUILD[name](seed=1 + 10 * rank), dtype=torch.float32, tensor_parallel={"tp_size": 1})
    return {"logits": (engine(ids).logits - want).abs().max().item(), "ids": ids.tolist(),
            "logits_tp1": (unsplit(ids).logits - want).abs().max().item(),  # 4 replicas of the whole model
            "bytes": split_bytes(engine, reference), "sampled": sampled.tolist()}


def big_llama(seed: int) -> nn.Module:
    """About 52 MB of fp32 weights, 97% of them in the split MLP layers (rows of 32 KiB: a rank's half of a row-wise
    layer's row spans whole pages of the file)."""
    torch.manual_seed(seed)
    return LlamaForCausalLM(LlamaConfig(vocab_size=VOCAB, hidden_size=256, intermediate_size=8192,
                                        num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4,
                                        max_position_embeddings=64)).eval()


def anon_kb() -> int:
    """This process's own resident memory (anonymous pages: not the files it maps)."""
    line = next(line for line in Path("/proc/self/status").read_text().splitlines() if line.startswith("RssAnon:"))
    return int(line.split()[1])


@contextmanager
def sampling_own_peak(found: dict) -> Iterator[None]:
    """The largest anonymous resident size seen while inside, sampled every 2 ms (torch's copies run without the
    GIL, so the sampler sees their progress)."""
    stop, peak = threading.Event(), [anon_kb()]

    def sample() -> None:
        while not stop.wait(0.002):
            peak[0] = max(peak[0], anon_kb())

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        yield
    finally:
        stop.set()
        sampler.join()
        found["own_peak_kb"] = max(peak[0], anon_kb())


def mapped_kb(path: Path) -> int:
    """Resident pages of this process's memory maps of `path`: the part of the file it has touched."""
    total, inside = 0, False
    for line in Path("/proc/self/smaps").read_text().splitlines():
        head = line.split()
        if head and "-" in head[0] and len(head) >= 5 and ":" not in head[0]:
            inside = len(head) >= 6 and head[5] == str(path)
        elif inside and head and head[0] == "Rss:":
            total += int(head[1])
    return total


@contextmanager
def noting_touched(found: dict) -> Iterator[None]:
    """While inside, file_shards records how much of the file it has mapped in just before closing it."""
    opened = file_shards.open_weights

    @contextmanager
    def watched(path: Path):
        with opened(path) as file:
            yield file
            found["touched_kb"] = mapped_kb(path.resolve())

    file_shards.open_weights = watched
    try:
        yield
    finally:
        file_shards.open_weights = opened


def files(workdir: Path) -> dict:
    results: dict = {}
    for name, build in {**BUILD, "big": big_llama}.items():
        reference = build(seed=1)
        whole = sum(p.numel() * p.element_size() for p in reference.parameters())
        pt, st = workdir / f"{name}.pt", workdir / f"{name}.safetensors"
        if dist.get_rank() == 0:
            torch.save({"module": reference.state_dict()}, pt)
            safetensors.torch.save_model(reference, str(st))
        dist.barrier()
        ids = torch.randint(1, VOCAB - 1, (2, 10), generator=torch.Generator().manual_seed(3))
        with torch.no_grad():
            want = reference(ids).logits
        del reference
        for path in (st, pt):
            empty = params_on_meta(build(seed=2))  # its weights are freed here, before measuring
            gc.collect()
            before, measured = anon_kb(), {}
            with noting_touched(measured), sampling_own_peak(measured):
                engine = dsrun.init_inference(empty, dtype="fp32", tensor_parallel={"tp_size": TP},
                                              checkpoint=str(path))
            held = split_bytes(engine, build(seed=2))
            results[f"{name}_{path.suffix[1:]}"] = {
                "logits": (engine(ids).logits - want).abs().max().item(),
                "halves": held["mine"] * 2 == held["whole"] and held["tensors"] > 0,
                "own_peak": (measured["own_peak_kb"] - before) * 1024 / whole,
                "touched": measured["touched_kb"] * 1024 / path.stat().st_size,
            }
            del engine, empty
    return results


class MLP(nn.Module):
    def __init__(self, width: int, hidden: int):
        super().__init__()
        self.up_proj = nn.Linear(width, hidden)
        self.down_proj = nn.Linear(hidden, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(torch.tanh(self.up_proj(x)))


class MoENet(nn.Module):
    def __init__(self, ep_size: int):
        super().__init__()
        torch.manual_seed(0)
        self.inp = nn.Linear(8, 8)
        self.mlp = MLP(8, 16)  # split by the automatic plan
        self.moe = MoE(8, MLP(8, 16), num_experts=4, ep_size=ep_size, k=1, drop_tokens=False)  # experts whole
        self.out = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hidden = torch.tanh(self.inp(x))
        hidden = hidden + self.mlp(hidden)
        return self.out(self.moe(hidden)[0])


def moe(workdir: Path) -> dict:
    engine, *_ = dsrun.initialize(model=MoENet(ep_size=2), config={
        "train_micro_batch_size_per_gpu": 16, "zero_optimization": {"stage": 1},
        "optimizer": {"type": "AdamW", "params": {"lr": 5e-2}}})
    for step in range(4):
        g = torch.Generator().manual_seed(10 * step + dist.get_rank())
        x, y = torch.randn(16, 8, generator=g), torch.randn(16, 3, generator=g)
        engine.backward(nn.functional.mse_loss(engine(x), y))
        engine.step()
    x = torch.randn(32, 8, generator=torch.Generator().manual_seed(99))
    engine.module.eval()
    with torch.no_grad():
        want = engine.module(x)
        untrained = MoENet(ep_size=1)(x)
    engine.save_checkpoint(workdir / "moe")
    served = dsrun.init_inference(MoENet(ep_size=1), tensor_parallel={"tp_size": TP}, checkpoint=str(workdir / "moe"))
    whole = dict(MoENet(ep_size=1).named_parameters())
    split = sorted(name for name, p in served.module.named_parameters() if p.numel() < whole[name].numel())
    empty = dsrun.init_inference(params_on_meta(MoENet(ep_size=1)), tensor_parallel={"tp_size": TP},
                                 checkpoint=str(workdir / "moe"))
    experts = "moe.deepspeed_moe.experts."
    return {"logits": (served(x) - want).abs().max().item(), "logits_from_meta": (empty(x) - want).abs().max().item(),
            "moved": (want - untrained).abs().max().item(), "split": split,
            "expert_bytes": sum(nbytes(p) for n, p in empty.module.named_parameters() if n.startswith(experts)),
            "all_expert_bytes": sum(nbytes(p) for n, p in whole.items() if n.startswith(experts))}


def main() -> None:
    # Blocks of 64 KiB and more straight from mmap, so a freed tensor leaves the resident size at once (glibc would
    # otherwise raise that threshold after the first large free and keep freed tensors for reuse, hiding growth).
    ctypes.CDLL(None).mallopt(M_MMAP_THRESHOLD, 64 * 1024)
    dsrun.init_distributed()
    with tempfile.TemporaryDirectory() as shared:
        names = [shared]  # one directory for all ranks: rank 0's
        dist.broadcast_object_list(names, src=0)
        workdir = Path(names[0])
        results = {"replicas": {name: replicas(name) for name in BUILD}, "files": files(workdir),
                   "moe": moe(workdir)}
        dist.barrier()
    print(f"INFER {dist.get_rank()} {json.dumps(results)}", flush=True)


if __name__ == "__main__":
    main()
