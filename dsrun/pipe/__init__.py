"""`dsrun.pipe`: DeepSpeed's pipeline module API (`from deepspeed.pipe import PipelineModule, LayerSpec, ...`).

A model given as a list of layers is split into stages (partition.py); each rank builds and runs only its stage
(module.py). The engine that trains it with train_batch() consumes a PipelineModule; see module.py for what it reads.
"""

from __future__ import annotations

from dsrun.pipe.module import PipelineModule
from dsrun.pipe.spec import LayerSpec, TiedLayerSpec
from dsrun.pipe.topology import PipeDataParallelTopology, PipeModelDataParallelTopology, ProcessTopology

__all__ = [
    "LayerSpec",
    "PipeDataParallelTopology",
    "PipeModelDataParallelTopology",
    "PipelineModule",
    "ProcessTopology",
    "TiedLayerSpec",
]
