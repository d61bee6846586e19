"""Inference with tensor parallelism: `dsrun.init_inference` (DeepSpeed's `deepspeed.init_inference`)."""

from dsrun.inference.engine import InferenceEngine
from dsrun.inference.initialize import init_inference

__all__ = ["InferenceEngine", "init_inference"]
