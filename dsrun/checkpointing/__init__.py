"""`deepspeed.checkpointing` (deepspeed.runtime.activation_checkpointing.checkpointing) on torch.

`checkpoint(function, *args)` recomputes `function` in the backward instead of keeping its activations
(torch.utils.checkpoint, non-reentrant); `configure()` or the run config's `activation_checkpointing` section set
whether the saved inputs stay in CPU memory and whether each boundary waits for the GPU; the RNG tracker and the
seeding functions are the ones Megatron-style scripts call through DeepSpeed. Activation partitioning, its
contiguous buffer and per-call profiling need model parallelism or DeepSpeed's timers, which dsrun does not have:
asking for them prints one line saying so.
"""

import sys

from dsrun.checkpointing.function import checkpoint, non_reentrant_checkpoint
from dsrun.checkpointing.rng import (
    MODEL_PARALLEL_RNG_TRACKER_NAME,
    CudaRNGStatesTracker,
    RNGStatesTracker,
    get_cuda_rng_tracker,
    model_parallel_cuda_manual_seed,
    model_parallel_reconfigure_tp_seed,
)
from dsrun.checkpointing.settings import (
    Settings,
    active_settings,
    configure,
    configure_from,
    is_configured,
    reset,
)

# Scripts write `from deepspeed.runtime.activation_checkpointing import checkpointing`, DeepSpeed's own layout. The
# alias makes that package this module, so the name is looked up on it: it is this module again.
checkpointing = sys.modules[__name__]

__all__ = [
    "checkpoint", "non_reentrant_checkpoint", "configure", "configure_from", "is_configured", "reset",
    "active_settings", "Settings", "get_cuda_rng_tracker", "model_parallel_cuda_manual_seed",
    "model_parallel_reconfigure_tp_seed", "RNGStatesTracker", "CudaRNGStatesTracker",
    "MODEL_PARALLEL_RNG_TRACKER_NAME",
]
