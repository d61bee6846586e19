"""Serve a model split over the launched processes: `dsrun --num_gpus 2 examples/infer.py` (or torchrun, or plain
`python examples/infer.py` for one process). A tiny Llama built from its config, so nothing is downloaded;
`AutoModelForCausalLM.from_pretrained(...)` goes through init_inference the same way."""

import os

import torch
from transformers import LlamaConfig, LlamaForCausalLM

import dsrun

torch.manual_seed(0)  # every rank must start from the same weights (from_pretrained gives that by itself)
model = LlamaForCausalLM(LlamaConfig(vocab_size=1000, hidden_size=256, intermediate_size=512, num_hidden_layers=4,
                                     num_attention_heads=8, num_key_value_heads=4))
world_size = int(os.environ.get("WORLD_SIZE", "1"))  # set by dsrun / torchrun
engine = dsrun.init_inference(model, dtype=torch.float32, tensor_parallel={"tp_size": world_size})

prompt = torch.tensor([[1, 15, 27, 300, 42]])
logits = engine(prompt).logits  # the whole vocabulary on every rank
tokens = engine.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=8, do_sample=False)
if dsrun.comm.get_rank() == 0:
    print("next token:", logits[0, -1].argmax().item(), "generated:", tokens[0, prompt.shape[1]:].tolist())
