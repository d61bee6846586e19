"""One process (or one rank) of bench/inference_bench.py: greedy generate's tokens/s on a Llama built from a config.

    inference_worker.py interleaved REPS   (plain python) plain HF generate and init_inference at tp_size 1,
                                           alternated on the same model
    inference_worker.py tp REPS            (under a launcher) init_inference at tp_size = world size
    inference_worker.py tp REPS FILE       the same, the model built on the meta device and its weights read from
                                           FILE (.safetensors): each rank reads only its share
    inference_worker.py save FILE          writes the benchmark model's weights to FILE (.safetensors)
Prints `BENCH <json>` from rank 0: tokens/s per repetition, the generated tokens, threads, peak RSS per rank (MiB).
"""

import contextlib
import json
import os
import resource
import sys
import threading
import time

import torch
import torch.distributed as dist
from torch import nn
from transformers import LlamaConfig, LlamaForCausalLM

import dsrun

NEW_TOKENS, PROMPT = 64, 16


def model() -> LlamaForCausalLM:
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=8000, hidden_size=512, intermediate_size=1408, num_hidden_layers=8,
                         num_attention_heads=8, num_key_value_heads=4, max_position_embeddings=256,
                         eos_token_id=None)
    return LlamaForCausalLM(config).eval()


@contextlib.contextmanager
def parameters_on_meta():
    """Build a model with its parameters on the meta device and its buffers real (as accelerate's
    init_empty_weights does): each parameter exists for a moment while its module is built, never all at once."""
    register = nn.Module.register_parameter

    def on_meta(module: nn.Module, name: str, param) -> None:
        register(module, name, param)
        if param is not None and not param.is_meta:
            module._parameters[name] = nn.Parameter(param.to("meta"), requires_grad=param.requires_grad)

    nn.Module.register_parameter = on_meta  # type: ignore[method-assign]
    try:
        yield
    finally:
        nn.Module.register_parameter = register  # type: ignore[method-assign]


def timed(generate, prompt) -> tuple[float, list]:
    start = time.perf_counter()
    with torch.no_grad():
        out = generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=NEW_TOKENS,
                       min_new_tokens=NEW_TOKENS, do_sample=False)
    return NEW_TOKENS / (time.perf_counter() - start), out[0, PROMPT:].tolist()


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class AnonPeak:
    """The highest RssAnon (memory the process allocated itself, not the pages of a mapped weights file, which are
    the kernel's shared page cache) seen by sampling /proc/self/status every 2 ms; the kernel keeps no such peak."""

    def __init__(self) -> None:
        self.peak_kib = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        while not self._stop.wait(0.002):
            with open("/proc/self/status") as status:
                line = next(line for line in status if line.startswith("RssAnon:"))
            self.peak_kib = max(self.peak_kib, int(line.split()[1]))

    def stop_mib(self) -> float:
        self._stop.set()
        self._thread.join()
        return self.peak_kib / 1024


def main() -> None:
    mode = sys.argv[1]
    if mode == "save":
        from safetensors.torch import save_model

        save_model(model(), sys.argv[2])  # drops the tied copies, as Hugging Face files do
        return
    reps = int(sys.argv[2])
    anon = AnonPeak()
    torch.manual_seed(1)
    prompt = torch.randint(0, 8000, (1, PROMPT))
    weights = sys.argv[3] if len(sys.argv) > 3 else None
    if weights is None:
        net = model()
    else:
        with parameters_on_meta():
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
        result["anon_peak_mib"] = [anon.stop_mib()]
    else:
        engine = dsrun.init_inference(net, dtype=torch.float32, checkpoint=weights,
                                      tensor_parallel={"tp_size": int(os.environ["WORLD_SIZE"])})
        timed(engine.generate, prompt)
        rates = []
        for _ in range(reps):
            rate, tokens = timed(engine.generate, prompt)
            rates.append(rate)
        peaks = [None] * dist.get_world_size()
        dist.all_gather_object(peaks, peak_mib())
        anon_peaks = [None] * dist.get_world_size()
        dist.all_gather_object(anon_peaks, anon.stop_mib())
        result = {"tp": rates, "tp_tokens": tokens, "threads": torch.get_num_threads(), "peak_mib": peaks,
                  "anon_peak_mib": anon_peaks}
    if not dist.is_initialized() or dist.get_rank() == 0:
        print("BENCH " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
