"""One process (or one rank) of bench/inference_bench.py: greedy generate's tokens/s on a Llama built from a config.

    inference_worker.py interleaved REPS   (plain python) plain HF generate and init_inference at tp_size 1,
                                           alternated on the same model
    inference_worker.py tp REPS            (under a launcher) init_inference at tp_size = world size
Prints `BENCH <json>` from rank 0: tokens/s per repetition, the generated tokens, threads, peak RSS per rank (MiB).
"""

import json
import os
import resource
import sys
import time

import torch
import torch.distributed as dist
from transformers import LlamaConfig, LlamaForCausalLM

import dsrun

NEW_TOKENS, PROMPT = 64, 16


def model() -> LlamaForCausalLM:
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=8000, hidden_size=512, intermediate_size=1408, num_hidden_layers=8,
                         num_attention_heads=8, num_key_value_heads=4, max_position_embeddings=256,
                         eos_token_id=None)
    return LlamaForCausalLM(config).eval()


def timed(generate, prompt) -> tuple[float, list]:
    start = time.perf_counter()
    with torch.no_grad():
        out = generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=NEW_TOKENS,
                       min_new_tokens=NEW_TOKENS, do_sample=False)
    return NEW_TOKENS / (time.perf_counter() - start), out[0, PROMPT:].tolist()


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    mode, reps = sys.argv[1], int(sys.argv[2])
    torch.manual_seed(1)
    prompt = torch.randint(0, 8000, (1, PROMPT))
    net = model()
    if mode == "interleaved":
        engine = dsrun.init_inference(net, dtype=torch.float32, tensor_parallel={"tp_size": 1})
        timed(net.generate, prompt)  # warm-up
        timed(engine.generate, prompt)
        result: dict = {"hf": [], "engine": [], "threads": torch.get_num_threads()}
        for _ in range(reps):
            for name, generate in (("hf", net.generate), ("engine", engine.generate)):
                rate, tokens = timed(generate, prompt)
                result[name].append(rate)
                result[f"{name}_tokens"] = tokens
        result["peak_mib"] = [peak_mib()]
    else:
        engine = dsrun.init_inference(net, dtype=torch.float32,
                                      tensor_parallel={"tp_size": int(os.environ["WORLD_SIZE"])})
        timed(engine.generate, prompt)
        rates = []
        for _ in range(reps):
            rate, tokens = timed(engine.generate, prompt)
            rates.append(rate)
        peaks = [None] * dist.get_world_size()
        dist.all_gather_object(peaks, peak_mib())
        result = {"tp": rates, "tp_tokens": tokens, "threads": torch.get_num_threads(), "peak_mib": peaks}
    if not dist.is_initialized() or dist.get_rank() == 0:
        print("BENCH " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
