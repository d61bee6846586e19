"""init_inference with tensor parallelism, under a launcher (2 ranks on gloo) or plain python (1 rank).

`compare`: a tiny GPT-2 and a tiny Llama (grouped-query attention) built from configs; each rank prints
`INFER <rank> <json>` with, per model: the largest difference of the engine's logits from the unsplit model's in
this process (what tp_size 1 runs), the greedy tokens of both, the bytes this rank holds of the split layers against
their whole size, the tokens sampled from ranks seeded differently, and the same comparison after loading the
weights from a .pt and a .safetensors file into a differently initialised model.
`trained MODEL SAVE_DIR`: MODEL trained under ZeRO-3 and saved by these ranks, served from SAVE_DIR at tp_size 2
into a model with weights and into one on the meta device; prints the largest differences from the trained model's
logits (and how far training moved them), and the bytes of the split layers each rank holds after the meta load.
`error MODE`: a mistake that must end the job with one line.
"""

import json
import sys
import tempfile
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

import dsrun
from dsrun.errors import UsageError
from dsrun.inference import weights
from dsrun.inference.initialize import build
from dsrun.inference.local_linear import RowParallelLinear

VOCAB = 101


def gpt2(seed: int, heads: int = 4, layers: int = 2) -> nn.Module:
    torch.manual_seed(seed)
    config = GPT2Config(vocab_size=VOCAB, n_positions=64, n_embd=8 * heads, n_layer=layers, n_head=heads,
                        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=0, eos_token_id=VOCAB - 1,
                        pad_token_id=0)
    return GPT2LMHeadModel(config).eval()


def llama(seed: int, layers: int = 2) -> nn.Module:
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=layers,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                         bos_token_id=0, eos_token_id=VOCAB - 1, pad_token_id=0)
    return LlamaForCausalLM(config).eval()


BUILD = {"gpt2": gpt2, "llama": llama}


def nbytes(tensor: torch.Tensor) -> int:
    return tensor.numel() * tensor.element_size()


def split_bytes(engine, reference: nn.Module) -> dict:
    """Bytes of the parameters the engine split (smaller on this rank than in the whole model): this rank's and the
    whole model's; and the bytes of those the split layers keep whole on every rank (the row-wise layers' biases,
    added once after the all-reduce)."""
    mine = whole = count = 0
    full = dict(reference.named_parameters(remove_duplicate=False))
    for name, param in engine.module.named_parameters():
        if param.numel() < full[name].numel():
            count += 1
            mine += nbytes(param)
            whole += nbytes(full[name])
    replicated = sum(nbytes(module.bias) for module in engine.module.modules()
                     if isinstance(module, RowParallelLinear) and module.bias is not None)
    return {"mine": mine, "whole": whole, "tensors": count, "replicated": replicated}


def greedy(model, ids: torch.Tensor) -> list:
    out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=12, do_sample=False)
    return out.tolist()


def compare(name: str, workdir: Path) -> dict:
    # Each rank initialises its model differently: the engine must run rank 0's (the reference) on every rank.
    model = BUILD[name](seed=1 + dist.get_rank())
    reference = BUILD[name](seed=1)
    torch.manual_seed(7)
    ids = torch.randint(1, VOCAB - 1, (2, 10))
    engine = dsrun.init_inference(model, dtype=torch.float32, tensor_parallel={"tp_size": dist.get_world_size()})
    with torch.no_grad():
        want = reference(ids).logits
    got = engine(ids).logits
    result = {
        "logits": (got - want).abs().max().item(),
        "tokens": greedy(engine, ids),
        "reference_tokens": greedy(reference, ids),
        "bytes": split_bytes(engine, reference),
    }
    torch.manual_seed(100 + dist.get_rank())  # ranks whose generators differ must still sample the same tokens
    result["sampled"] = engine.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=12,
                                        do_sample=True, top_k=0).tolist()
    # The same weights from files, loaded into a model initialised otherwise.
    pt, st = workdir / f"{name}.pt", workdir / f"{name}.safetensors"
    if dist.get_rank() == 0:
        torch.save({"module": reference.state_dict()}, pt)
        from safetensors.torch import save_model

        save_model(reference, str(st))  # drops the tied lm_head.weight, as Hugging Face files do
    dist.barrier()
    for path in (pt, st):
        loaded = dsrun.init_inference(BUILD[name](seed=2), dtype="fp32", checkpoint=str(path))
        result[f"logits_from_{path.suffix[1:]}"] = (loaded(ids).logits - want).abs().max().item()
    return result


def params_on_meta(model: nn.Module) -> nn.Module:
    """The model with its parameters on the meta device and its buffers kept (as accelerate's init_empty_weights
    builds one)."""
    moved: dict[int, nn.Parameter] = {}  # tied weights (GPT-2's lm_head and wte) stay one parameter
    for module in model.modules():
        for key, param in list(module._parameters.items()):
            if param is not None:
                if id(param) not in moved:
                    moved[id(param)] = nn.Parameter(param.to("meta"), requires_grad=False)
                module._parameters[key] = moved[id(param)]
    return model


def trained(name: str, save_dir: str) -> dict:
    """A model trained a few steps under ZeRO-3 on these ranks and saved, then served from the save directory: into
    a model with weights (read whole), and into one with its parameters on the meta device (each rank reads its
    shards)."""
    engine, *_ = dsrun.initialize(model=BUILD[name](seed=1), config={
        "train_micro_batch_size_per_gpu": 2, "zero_optimization": {"stage": 3},
        "optimizer": {"type": "AdamW", "params": {"lr": 1e-2}}})
    torch.manual_seed(7 + dist.get_rank())
    for _ in range(3):
        ids = torch.randint(1, VOCAB - 1, (2, 10))
        engine.backward(engine(input_ids=ids, labels=ids).loss)
        engine.step()
    torch.manual_seed(7)
    ids = torch.randint(1, VOCAB - 1, (2, 10))
    with torch.no_grad():
        want = engine(input_ids=ids).logits
        untrained = BUILD[name](seed=1)(ids).logits
    engine.save_checkpoint(save_dir)
    served = dsrun.init_inference(BUILD[name](seed=2), dtype=torch.float32, checkpoint=save_dir)
    whole_reads = []  # the path that reads every weight whole on every rank must not be taken for the meta model
    read_whole = weights.read
    weights.read = lambda path: whole_reads.append(str(path)) or read_whole(path)
    empty = dsrun.init_inference(params_on_meta(BUILD[name](seed=2)), dtype=torch.float32, checkpoint=save_dir)
    weights.read = read_whole
    try:  # a model with fewer layers than were saved must not take the first ones silently
        build(params_on_meta(BUILD[name](seed=2, layers=1)), dtype=torch.float32, checkpoint=save_dir)
        smaller = "served"
    except UsageError as err:
        smaller = str(err)
    return {"smaller_model": smaller,
            "logits": (served(ids).logits - want).abs().max().item(),
            "logits_from_meta": (empty(ids).logits - want).abs().max().item(),
            "bytes_from_meta": split_bytes(empty, BUILD[name](seed=2)),
            "whole_reads_from_meta": len(whole_reads),
            "moved": (want - untrained).abs().max().item()}


def error(mode: str) -> None:
    world = dist.get_world_size() if dist.is_initialized() else 2
    if mode == "heads":
        dsrun.init_inference(gpt2(seed=1, heads=3), tensor_parallel={"tp_size": 2})
    elif mode == "world":
        dsrun.init_inference(gpt2(seed=1), mp_size=world + 1)
    elif mode == "unknown-model":
        dsrun.init_inference(nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 4)), tensor_parallel={"tp_size": 2})
    elif mode == "not-a-checkpoint":
        dsrun.init_inference(gpt2(seed=1), checkpoint=tempfile.mkdtemp())
    raise AssertionError(f"mode {mode} did not fail")


def main() -> None:
    if sys.argv[1] == "error":
        error(sys.argv[2])
    if sys.argv[1] == "trained":
        result = trained(sys.argv[2], sys.argv[3])
        print(f"INFER {dist.get_rank()} {json.dumps(result)}", flush=True)
        return
    dsrun.init_distributed()
    with tempfile.TemporaryDirectory() as shared:
        # One directory for both ranks: rank 0's name.
        names = [shared]
        dist.broadcast_object_list(names, src=0)
        results = {name: compare(name, Path(names[0])) for name in BUILD}
        dist.barrier()
    print(f"INFER {dist.get_rank()} {json.dumps(results)}", flush=True)


if __name__ == "__main__":
    main()
