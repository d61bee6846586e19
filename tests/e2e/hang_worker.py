"""Under dsrun with 2 ranks and --hang-timeout: trains a tiny model with dsrun's engine, then hangs at step 3.

    hang_worker.py behind      rank 1 stops in its own code between its backward and its optimizer step (it stays
                               at step 2); rank 0 finishes step 3 and waits for rank 1 in step 4's gradient
                               all-reduce: the ranks disagree on the step
    hang_worker.py collective  after step 3 rank 1 waits for a message rank 0 never sends, and rank 0 waits for
                               rank 1 in step 4's all-reduce: both at step 3, no one moves
    hang_worker.py late        rank 1 stops in its own code before dsrun.initialize; rank 0 waits for it in the
                               rendezvous
    hang_worker.py plain       never touches dsrun's runtime and sleeps a few seconds: alive, no step, no hang

Every worker writes its pid to $PID_DIR/rank{RANK}.pid so the test can check that nothing outlives the launcher.
"""

import os
import sys
import time

HANG_AT = 3


def record_pid(rank: int) -> None:
    with open(os.path.join(os.environ["PID_DIR"], f"rank{rank}.pid"), "w") as f:
        f.write(str(os.getpid()))


def stuck_in_my_own_code():
    deadline = time.monotonic() + 30  # a test whose launcher missed the hang fails instead of waiting forever
    while time.monotonic() < deadline:
        time.sleep(0.05)  # SLEEPING
    sys.exit(3)


def train(mode: str) -> None:
    import torch
    import torch.distributed as dist
    from torch import nn

    import dsrun

    config = {"train_micro_batch_size_per_gpu": 2, "optimizer": {"type": "SGD", "params": {"lr": 0.1}}}
    if mode == "late" and os.environ["RANK"] == "1":
        stuck_in_my_own_code()
    engine, *_ = dsrun.initialize(model=nn.Linear(4, 1), config=config)  # RENDEZVOUS
    rank = engine.global_rank
    for step in range(1, 1000):
        engine.backward(engine(torch.randn(2, 4)).pow(2).mean())  # BACKWARD
        if mode == "behind" and rank == 1 and step == HANG_AT:
            stuck_in_my_own_code()
        engine.step()
        if mode == "collective" and rank == 1 and step == HANG_AT:
            dist.recv(torch.zeros(1), src=0)  # HANG-COLLECTIVE
        print(f"step {step} done", flush=True)


if __name__ == "__main__":
    mode = [a for a in sys.argv[1:] if not a.startswith("--local_rank=")][0]
    record_pid(int(os.environ["RANK"]))
    if mode == "plain":
        print("READY", flush=True)
        time.sleep(4)
    else:
        train(mode)
