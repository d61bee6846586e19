"""Under dsrun: train / save / resume / reload with dsrun checkpoints, printing what the tests compare.

    checkpoint_worker.py train STAGE STEPS SAVE_DIR MODE     MODE: none | save | resume | save-each-step
    checkpoint_worker.py reload STAGE SRC DST                load SRC into a differently initialised model, save DST
    checkpoint_worker.py rank0-only SAVE_DIR                 the classic mistake: only rank 0 saves
"""

import json
import sys

import torch
from torch import nn
from torch.utils.data import TensorDataset

import dsrun


def config(stage):
    return {"train_micro_batch_size_per_gpu": 4, "gradient_accumulation_steps": 2, "gradient_clipping": 0,
            "optimizer": {"type": "AdamW", "params": {"lr": 1e-2, "weight_decay": 0.1}},
            "zero_optimization": {"stage": stage},
            "scheduler": {"type": "WarmupLR", "params": {"warmup_num_steps": 4, "warmup_max_lr": 0.01}}}


def model(seed, width=16, hidden_layers=0):
    torch.manual_seed(seed)
    middle = [m for _ in range(hidden_layers) for m in (nn.Linear(width, width), nn.GELU())]
    return nn.Sequential(nn.Linear(8, width), nn.GELU(), *middle, nn.Linear(width, 1))


def data():
    g = torch.Generator().manual_seed(5)
    return TensorDataset(torch.randn(64, 8, generator=g), torch.randn(64, 1, generator=g))


def train(stage, steps, save_dir, mode):
    # Saves of ~4M parameters (+ Adam state) take long enough for a test to kill a rank in the middle of one.
    big = mode == "save-each-step"
    net = model(0, width=2048, hidden_layers=1) if big else model(0)
    engine, _, loader, _ = dsrun.initialize(model=net, config=config(stage), training_data=data())
    if mode == "resume":
        path, client = engine.load_checkpoint(save_dir)
        assert client == {"step_note": "saved"}, client
    batches = dsrun.utils.RepeatingLoader(loader)
    losses = []
    for _ in range(steps * engine.gradient_accumulation_steps()):
        x, y = next(batches)
        loss = nn.functional.mse_loss(engine(x), y)
        engine.backward(loss)
        engine.step()
        losses.append(loss.item())
        if big and engine.micro_steps % engine.gradient_accumulation_steps() == 0:  # an update just happened
            print(f"SAVING {engine.global_steps}", flush=True)
            engine.save_checkpoint(save_dir, client_state={"step_note": "saved"})
            print(f"SAVED {engine.global_steps}", flush=True)
    if mode in ("save", "resume"):
        engine.save_checkpoint(save_dir, client_state={"step_note": "saved"})
    print(f"LOSSES {engine.global_rank} " + json.dumps(losses), flush=True)


def reload(stage, src, dst):
    engine, *_ = dsrun.initialize(model=model(123), config=config(stage))
    path, _ = engine.load_checkpoint(src)
    assert path is not None
    engine.save_checkpoint(dst)


def rank0_only(save_dir):
    engine, *_ = dsrun.initialize(model=model(0), config=config(1))
    if engine.global_rank == 0:
        engine.save_checkpoint(save_dir)


if __name__ == "__main__":
    args = sys.argv[1:]
    if args[0] == "train":
        train(int(args[1]), int(args[2]), args[3], args[4])
    elif args[0] == "reload":
        reload(int(args[1]), args[2], args[3])
    else:
        rank0_only(args[1])
