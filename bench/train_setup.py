"""What every implementation in the train-step and memory benchmarks shares: the batch shape, the optimizer's
hyper-parameters and the DeepSpeed config that dsrun and DeepSpeed both read.

Every hyper-parameter is spelled out, because the defaults differ: DeepSpeed's Adam has weight_decay 0 where
torch's AdamW has 0.01, and DeepSpeed 0.19 clips at 1.0 unless told otherwise.
"""

from __future__ import annotations

STAGES = (0, 1, 2, 3)
PRECISIONS = ("fp32", "bf16")
WORLD = 2
MICRO_BATCH = 4  # sequences per rank per micro-batch (context 128: 512 tokens)
ACCUMULATION = 2
LR = 1e-3
BETAS = (0.9, 0.999)
EPS = 1e-8
WEIGHT_DECAY = 0.01
CLIP = 1.0  # the same global-norm clip in all three; DeepSpeed's own default
SEED = 0


def adamw_options() -> dict:
    return {"lr": LR, "betas": BETAS, "eps": EPS, "weight_decay": WEIGHT_DECAY}


def ds_config(stage: int, precision: str, communication_data_type: str | None = None) -> dict:
    """The one config dsrun.initialize and deepspeed.initialize are given. Without communication_data_type each
    sums gradients in its own default dtype: dsrun in fp32, DeepSpeed in the training dtype."""
    options = adamw_options()
    config = {
        "train_micro_batch_size_per_gpu": MICRO_BATCH,
        "gradient_accumulation_steps": ACCUMULATION,
        "optimizer": {"type": "AdamW", "params": {**options, "betas": list(options["betas"])}},
        "gradient_clipping": CLIP,
        "zero_optimization": {"stage": stage},
        "bf16": {"enabled": precision == "bf16"},
        # Progress lines would be printed (and formatted) inside the timed steps.
        "steps_per_print": 1_000_000,
        "wall_clock_breakdown": False,
    }
    if communication_data_type:
        config["communication_data_type"] = communication_data_type
    return config
