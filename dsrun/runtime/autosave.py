"""The engine's own saves, for jobs that outlive failures and preemption (the config's `checkpoint` section):

    save_dir       where the engine saves by itself (the usual tags, `latest`, `keep_last` pruning)
    save_interval  save after every N-th optimizer step
    auto_resume    at initialize, load the newest complete checkpoint in save_dir, if there is one

With a save_dir, SIGTERM to a worker means "stop after this step": every rank finishes the step, a checkpoint is
saved (unless the interval just saved one) and the process exits with dsrun.exit_codes.PREEMPTED (preemption.py).
A restarted (`--max_restarts`) or requeued job with auto_resume then goes on from the step it stopped at: the model,
optimizer, schedule, loss scale, data position and random states all come back, so the run ends with the same
weights as one that never stopped.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from dsrun.console import say
from dsrun.exit_codes import PREEMPTED
from dsrun.runtime import preemption
from dsrun.runtime.checkpoint.layout import read_latest

if TYPE_CHECKING:
    from dsrun.runtime.engine import Engine


class AutoSave:
    def __init__(self, engine: Engine):
        settings = engine.config.checkpoint
        self.save_dir = Path(settings.save_dir) if settings.save_dir is not None else None
        self.interval = settings.save_interval
        self.auto_resume = settings.auto_resume
        if self.save_dir is not None:
            preemption.install()

    def resume(self, engine: Engine) -> None:
        """auto_resume: the newest complete checkpoint, if save_dir has one (every rank calls this)."""
        if not self.auto_resume or self.save_dir is None:
            return
        if read_latest(self.save_dir) is None:
            if engine.global_rank == 0:
                say(f"auto_resume: no checkpoint in {self.save_dir} yet; starting from the beginning")
            return
        path, _ = engine.load_checkpoint(self.save_dir)
        if engine.global_rank == 0:
            restart = os.environ.get("DSRUN_RESTART_COUNT")
            after = f" (restart {restart})" if restart not in (None, "0") else ""
            say(f"auto_resume: resumed from {path} at step {engine.global_steps}{after}")

    def after_step(self, engine: Engine) -> None:
        """After every optimizer step, on every rank."""
        if self.save_dir is None:
            return
        saved = False
        if self.interval is not None and engine.global_steps % self.interval == 0:
            engine.save_checkpoint(self.save_dir)
            saved = True
        if preemption.asked_anywhere(engine.device):
            if not saved:
                engine.save_checkpoint(self.save_dir)
            if engine.global_rank == 0:
                say(f"SIGTERM: stopped after step {engine.global_steps} with a checkpoint in {self.save_dir};"
                    f" exiting with code {PREEMPTED} (checkpoint.auto_resume resumes from it)")
            raise SystemExit(PREEMPTED)
