"""Under dsrun: a small model with dropout trained to STEPS optimizer steps with the engine's own saves
(`checkpoint.save_dir`, `save_interval` 2, `auto_resume`), its data from the engine's loader (training_data), so a
run that stops and starts again must come back to the same weights, data position and random streams.

Arguments: SAVE_DIR OUT STEPS [fail_at=K] [slow]
  fail_at=K  rank 1 dies (exit 1) right after optimizer step K, in the first attempt only (DSRUN_RESTART_COUNT unset
             or 0), so a restart or a second launch goes on from the newest checkpoint
  slow[=S]   sleep S seconds (default 0.3) per step, for tests that signal the job while it trains
  csv=DIR    csv_monitor writes DIR/resume/training_metrics.csv
Rank 0 saves the final weights to OUT and prints `RESUME {"steps": N}`.
"""

import json
import os
import sys
import time

import torch
from torch import nn

import dsrun

SAVE_DIR, OUT, STEPS = sys.argv[1], sys.argv[2], int(sys.argv[3])
OPTIONS = dict(arg.split("=", 1) if "=" in arg else (arg, "") for arg in sys.argv[4:])
MICRO = 4


def main() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Dropout(0.3), nn.Linear(16, 1))
    g = torch.Generator().manual_seed(1)
    data = torch.utils.data.TensorDataset(torch.randn(256, 6, generator=g), torch.randn(256, 1, generator=g))
    config = {"train_micro_batch_size_per_gpu": MICRO, "gradient_accumulation_steps": 2,
              "optimizer": {"type": "AdamW", "params": {"lr": 0.01}},
              "scheduler": {"type": "WarmupLR", "params": {"warmup_num_steps": 5, "warmup_max_lr": 0.01}},
              "checkpoint": {"save_dir": SAVE_DIR, "save_interval": 2, "auto_resume": True}}
    if "csv" in OPTIONS:
        config["csv_monitor"] = {"enabled": True, "output_path": OPTIONS["csv"], "job_name": "resume"}
    engine, _, loader, _ = dsrun.initialize(model=model, model_parameters=model.parameters(), training_data=data,
                                            config=config)
    batches = iter(loader)  # after initialize: auto_resume has put the loader at the saved position
    first_attempt = os.environ.get("DSRUN_RESTART_COUNT", "0") == "0"
    while engine.global_steps < STEPS:
        x, y = next(batches)
        before = engine.global_steps
        engine.backward(nn.functional.mse_loss(engine(x), y))
        engine.step()  # every second call steps the optimizer (and may save)
        if engine.global_steps == before:
            continue
        if "slow" in OPTIONS:
            time.sleep(float(OPTIONS["slow"] or 0.3))
        if first_attempt and engine.global_rank == 1 and str(engine.global_steps) == OPTIONS.get("fail_at"):
            os._exit(1)
    if engine.global_rank == 0:
        torch.save({k: v.clone() for k, v in model.state_dict().items()}, OUT)
        print(f"RESUME {json.dumps({'steps': engine.global_steps})}", flush=True)


if __name__ == "__main__":
    main()
