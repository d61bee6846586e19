"""Kernels: DeepSpeed JIT-compiles its own (op builders); dsrun has none and runs on torch's ops.

A DeepSpeed script that asks for an op builder gets an error naming torch's counterpart, rather than DeepSpeed's
`None` (which surfaces later as an AttributeError far from the cause).
"""

from __future__ import annotations

import importlib
from typing import Any

from dsrun.errors import UsageError

# What torch offers in place of the DeepSpeed ops scripts ask for most.
_INSTEAD = {
    "FusedAdamBuilder": "torch.optim.Adam/AdamW (fused=True on CUDA)",
    "CPUAdamBuilder": "torch.optim.Adam/AdamW on CPU parameters",
    "CPUAdagradBuilder": "torch.optim.Adagrad",
    "FusedLambBuilder": "the config's \"optimizer\": {\"type\": \"Lamb\"} (dsrun.runtime.optim.lamb.Lamb, plain torch)",
    "FusedLionBuilder": "a Lion implementation outside DeepSpeed",
    "TransformerBuilder": "torch.nn.TransformerEncoderLayer / torch.nn.functional.scaled_dot_product_attention",
    "InferenceBuilder": "torch.nn.functional.scaled_dot_product_attention and torch.compile",
    "QuantizerBuilder": "torch.ao.quantization",
    "AsyncIOBuilder": "torch.save/torch.load (dsrun has no NVMe offload)",
}


class NoCustomOpError(UsageError, NotImplementedError):
    """DeepSpeed op builder requested. A UsageError, so a worker stops with one line instead of a traceback."""


def no_op_builder(class_name: str | None) -> NoCustomOpError:
    what = f"op builder {class_name!r}" if class_name else "op builder directory"
    instead = _INSTEAD.get(class_name or "", "torch's own operators (torch.nn, torch.optim, torch.compile)")
    return NoCustomOpError(f"dsrun has no custom (DeepSpeed JIT-compiled) ops, so there is no {what}; "
                           f"use {instead} instead")


class TorchKernels:
    """The kernel-related part of DeepSpeed's accelerator API, shared by every dsrun accelerator."""

    _name: str
    _compile_backend = "inductor"  # torch.compile's default, and DeepSpeed's starting point on CUDA and CPU

    def op_builder_dir(self) -> str:
        raise no_op_builder(None)

    def create_op_builder(self, class_name: str) -> Any:
        raise no_op_builder(class_name)

    def get_op_builder(self, class_name: str) -> Any:
        raise no_op_builder(class_name)

    def build_extension(self) -> Any:
        # torch's own builder, for users compiling their own C++/CUDA extensions; nothing of DeepSpeed's.
        from torch.utils.cpp_extension import BuildExtension

        return BuildExtension

    def get_compile_backend(self) -> str:
        return self._compile_backend

    def set_compile_backend(self, backend: str) -> None:
        # torch._dynamo takes seconds to import: only a call that changes the backend pays for it.
        known = importlib.import_module("torch._dynamo").list_backends(exclude_tags=())
        if backend not in known:
            raise ValueError(f"torch.compile backend {backend!r} is unknown on {self._name}; known: {', '.join(known)}")
        self._compile_backend = backend
