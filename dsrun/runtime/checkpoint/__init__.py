"""Checkpoints on torch.distributed.checkpoint: sharded, reshardable (any world size, any ZeRO stage), crash-safe."""

from dsrun.runtime.checkpoint.load import load_checkpoint
from dsrun.runtime.checkpoint.save import save_checkpoint

__all__ = ["load_checkpoint", "save_checkpoint"]
