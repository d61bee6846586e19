"""The Engine `dsrun.initialize()` returns: DeepSpeed's training calls, delegating the mechanics to a strategy.

Per micro-batch a script calls `loss = engine(batch)`, `engine.backward(loss)`, `engine.step()`. `backward` divides
the loss by gradient_accumulation_steps (as DeepSpeed does), so the update uses the mean over the global batch;
`step` only updates at the end of an accumulation cycle.
"""

from __future__ import annotations

import contextlib
import math
import time
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from dsrun.config.batch import BatchMath
from dsrun.config.run_config import RunConfig
from dsrun.console import say
from dsrun.errors import exit_on_usage_error
from dsrun.runtime import heartbeat
from dsrun.runtime.autosave import AutoSave
from dsrun.runtime.distributed import Placement
from dsrun.runtime.optim import ELEMENTWISE
from dsrun.runtime.precision import Precision, cast_floating
from dsrun.runtime.progress import StepStats, Throughput, Timers
from dsrun.runtime.strategies import Strategy

_CHUNKS = 16  # half-precision gradients are converted to fp32 in this many pieces per update
_MIN_CHUNK = 1 << 16  # ... but not in pieces smaller than this many elements


def _local(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.to_local() if hasattr(tensor, "to_local") else tensor


def _chunks(pairs: list, budget: int | None):
    if budget is None:
        yield pairs
        return
    chunk, size = [], 0
    for pair in pairs:
        chunk.append(pair)
        size += pair[1].numel()
        if size >= budget:
            yield chunk
            chunk, size = [], 0
    if chunk:
        yield chunk


class Engine(nn.Module):
    _made = 0  # engines created in this process (a GAN script has two): progress lines then say which one

    def __init__(self, *, model: nn.Module, strategy: Strategy, cfg: RunConfig, batch: BatchMath, placement: Placement,
                 precision: Precision,
                 optimizer, lr_scheduler, loss_scaler, param_names: dict, dataloader=None, monitor=None,
                 monitoring: bool = False):
        super().__init__()
        self.module = model
        self.param_names = param_names  # model parameter (as given) -> its name, the checkpoint key
        self.strategy = strategy
        self.config = cfg
        self.batch = batch
        self.placement = placement
        # The ranks gradients are averaged over, and this rank among them: the world here; a pipeline stage's
        # replicas in the pipeline engine.
        self.data_placement = placement
        self.data_group: dist.ProcessGroup | None = None
        self.precision = precision
        self.optimizer = optimizer
        self.lr_scheduler = lr_scheduler
        self.loss_scaler = loss_scaler
        self.training_dataloader = dataloader
        self._checkpoint_calls = 0  # counts save/load calls, identical on every rank
        self.micro_steps = 0
        self.global_steps = 0
        self.global_samples = 0
        self.skipped_steps = 0
        self._global_grad_norm: float | None = None
        self._step_applied = False
        self._engine_backwards = 0  # engine.backward calls in this accumulation cycle
        self._losses: list[torch.Tensor] = []  # this cycle's micro-batch losses, for progress lines
        self.track_model_state = False  # benchmarks: record model-state bytes during each update
        self.model_state: dict[str, int] | None = None
        self._timers = Timers(cfg.wall_clock_breakdown, placement.device)
        self._throughput = Throughput()
        self._last_update_end = time.perf_counter()
        Engine._made += 1
        self._number = Engine._made
        self.monitor = monitor  # rank 0's recorder of StepStats (CSV, TensorBoard, wandb, summary), or None
        self._monitoring = monitoring  # the same on every rank: whether each step's loss is gathered for rank 0
        self._autosave = AutoSave(self)  # checkpoint.save_dir: interval saves, the save on SIGTERM, auto_resume

    # -- DeepSpeed's accessors ----------------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return self.placement.device

    @property
    def local_rank(self) -> int:
        return self.placement.local_rank

    @property
    def global_rank(self) -> int:
        return self.placement.rank

    @property
    def world_size(self) -> int:
        return self.placement.world_size

    @property
    def loss_scale(self) -> float:
        return self.loss_scaler.loss_scale if self.loss_scaler is not None else 1.0

    def train_batch_size(self) -> int:
        return self.batch.train_batch_size

    def train_micro_batch_size_per_gpu(self) -> int:
        return self.batch.train_micro_batch_size_per_gpu

    def gradient_accumulation_steps(self) -> int:
        return self.batch.gradient_accumulation_steps

    def is_gradient_accumulation_boundary(self) -> bool:
        return (self.micro_steps + 1) % self.gradient_accumulation_steps() == 0

    def get_lr(self) -> list[float]:
        return [group["lr"] for group in self.optimizer.param_groups] if self.optimizer is not None else []

    def get_global_grad_norm(self) -> float | None:
        return self._global_grad_norm

    def was_step_applied(self) -> bool:
        return self._step_applied

    def fp16_enabled(self) -> bool:
        return self.precision.param_dtype == torch.float16

    def bfloat16_enabled(self) -> bool:
        return self.precision.param_dtype == torch.bfloat16

    def zero_optimization_stage(self) -> int:
        return self.config.zero.stage

    # -- training ------------------------------------------------------------------------------------------------
    def forward(self, *args: Any, **kwargs: Any) -> Any:
        self.strategy.before_forward(self.is_gradient_accumulation_boundary())
        if self.precision.cast_inputs:
            dtype = self.precision.param_dtype
            args, kwargs = cast_floating(args, dtype), cast_floating(kwargs, dtype)
        autocast = (
            torch.autocast(self.device.type, dtype=self.precision.autocast_dtype)
            if self.precision.autocast_dtype is not None else contextlib.nullcontext()
        )
        self._timers.start("forward")
        with autocast:
            output = self.strategy.module(*args, **kwargs)
        self._timers.stop("forward")
        return output

    def backward(self, loss: torch.Tensor, retain_graph: bool = False) -> torch.Tensor:
        self._require_optimizer("backward")
        self._losses.append(loss.detach())
        scaled = loss / self.gradient_accumulation_steps()
        boundary = self.is_gradient_accumulation_boundary()
        self._engine_backwards += 1
        self._timers.start("backward")
        self.strategy.before_backward(boundary)
        # fp16: scale in fp32, as a half-precision loss times 2^16 would itself overflow.
        to_differentiate = scaled.float() * self.loss_scale if self.loss_scaler is not None else scaled
        to_differentiate.backward(retain_graph=retain_graph)
        self.strategy.after_backward(boundary)
        self._timers.stop("backward")
        return scaled.detach()

    def step(self) -> None:
        self._require_optimizer("step")
        boundary = self.is_gradient_accumulation_boundary()
        if boundary:
            self._timers.start("step")
            if self._engine_backwards == 0:
                self._catch_up()
            self._engine_backwards = 0
            self._optimizer_step()
            self._timers.stop("step")
            self.global_steps += 1
            self.global_samples += self.train_batch_size()
            self._throughput.add(self.train_batch_size())
            self._after_update()
            self._losses = []
        self.micro_steps += 1
        if boundary:  # with the counters as a checkpoint must record them
            self._autosave.after_step(self)

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.strategy.zero_grad()

    # -- checkpoints: every rank must call these ----------------------------------------------------------------
    def save_checkpoint(self, save_dir, tag: str | None = None, client_state: dict | None = None,
                        save_latest: bool = True, exclude_frozen_parameters: bool = False) -> bool:
        """Save to `save_dir/tag` (default tag `global_step{N}`) and point `save_dir/latest` at it."""
        from dsrun.runtime.checkpoint import save_checkpoint

        with exit_on_usage_error():
            return save_checkpoint(self, save_dir, tag=tag, client_state=client_state, save_latest=save_latest,
                                   exclude_frozen_parameters=exclude_frozen_parameters)

    def save_16bit_model(self, save_dir, save_filename: str = "pytorch_model.bin",
                         exclude_frozen_parameters: bool = False) -> bool:
        """Write the model's weights in the training dtype to `save_dir/save_filename` (every rank must call it)."""
        from dsrun.runtime.checkpoint.weights16 import save_16bit_model

        return save_16bit_model(self, save_dir, save_filename, exclude_frozen_parameters)

    def zero_gather_16bit_weights_on_model_save(self) -> bool:
        return self.config.zero.gather_16bit_weights_on_model_save

    def load_checkpoint(self, load_dir, tag: str | None = None, load_optimizer_states: bool = True,
                        load_lr_scheduler_states: bool = True, load_module_only: bool = False):
        """Load `load_dir/tag` (default: the `latest` one); returns (path, client_state), or (None, None)."""
        from dsrun.runtime.checkpoint import load_checkpoint

        with exit_on_usage_error():
            return load_checkpoint(self, load_dir, tag=tag, load_optimizer_states=load_optimizer_states,
                                   load_lr_scheduler_states=load_lr_scheduler_states,
                                   load_module_only=load_module_only)

    def _catch_up(self) -> None:
        """The script ran the backward itself (`loss.backward()`, which DeepSpeed accepts too): its gradients are
        synchronised now. They carry no loss scale and no 1/gradient_accumulation_steps, which engine.backward applies;
        with fp16 loss scaling that would silently unscale them wrongly, so it is refused."""
        if self.loss_scaler is not None:
            raise RuntimeError("engine.step() after a backward the engine did not run: with fp16 loss scaling the"
                               " loss must be scaled, so call engine.backward(loss) instead of loss.backward()")
        self.strategy.catch_up()

    def _require_optimizer(self, call: str) -> None:
        if self.optimizer is None:
            raise RuntimeError(f"engine.{call}() needs an optimizer: pass optimizer= to dsrun.initialize or add an"
                               " \"optimizer\" section to the config")

    def _global_norm(self, pairs: list[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
        """L2 norm over every rank's gradients. Sharded stages hold disjoint pieces, experts included (their rows
        are spread over their expert-data-parallel group, the groups over the expert-parallel ranks): the squares
        add up over all ranks. Replicated, each rank holds all dense gradients, and experts spread over ranks
        (MoE, ep_size > 1) count once each: their squares add up over their expert-parallel group."""
        if self.strategy.sharded:
            squares = self._squares([_local(g) for _, g in pairs])
            if self.world_size > 1:
                dist.all_reduce(squares)
            return squares.sqrt()
        expert_groups = {id(self.strategy.masters[param]): group.parallel_group
                         for group in self.strategy.experts for param in group.params}
        squares = self._squares([_local(g) for master, g in pairs if id(master) not in expert_groups])
        for group in self.strategy.experts:
            ids = {id(self.strategy.masters[param]) for param in group.params}
            expert_squares = self._squares([_local(g) for master, g in pairs if id(master) in ids])
            dist.all_reduce(expert_squares, group=group.parallel_group)
            squares = squares + expert_squares
        return squares.sqrt()

    def _squares(self, grads: list[torch.Tensor]) -> torch.Tensor:
        if not grads:
            return torch.zeros((), device=self.device)
        norms = torch._foreach_norm(grads, 2, dtype=torch.float32)
        return torch.stack([n.to(self.device) for n in norms]).pow(2).sum()

    def _optimizer_step(self) -> None:
        pairs = self.strategy.grad_pairs()
        scale = self.loss_scale
        norm = self._global_norm(pairs).item() / scale
        self._global_grad_norm = norm
        finite = math.isfinite(norm)
        if not finite and (self.loss_scaler is not None or self.precision.half):
            # Every rank sees the same global norm, so they all skip together.
            self.skipped_steps += 1
            self._step_applied = False
            if self.loss_scaler is not None:
                self.loss_scaler.update(True)
            self.strategy.zero_grad()
            return
        clip = self.config.gradient_clipping
        # DeepSpeed's combined factor: undo the loss scale and clip in one multiplication.
        factor = scale * max(1.0, (norm + 1e-6) / clip) if clip and clip > 0 and finite else scale
        self._update(pairs, 1.0 / factor)
        self._step_applied = True
        if self.loss_scaler is not None:
            self.loss_scaler.update(False)
        if self.lr_scheduler is not None:
            self.lr_scheduler.step()
        self.strategy.after_step()
        self.strategy.zero_grad()

    def _update(self, pairs: list[tuple[torch.Tensor, torch.Tensor]], multiplier: float) -> None:
        """Step the optimizer, giving it fp32 (or CPU-offloaded) copies of gradients a chunk at a time.

        Masters without a gradient are skipped by torch optimizers, so stepping chunk by chunk is one update;
        converting everything at once would hold a full fp32 gradient copy (4 bytes per parameter) on top of
        what the ZeRO formulas allow.
        """
        converting = any(g.dtype != m.dtype or g.device != m.device for m, g in pairs)
        # Stepping in pieces is one update only for element-wise optimizers; others get every gradient at once.
        chunked = converting and isinstance(self.optimizer, ELEMENTWISE)
        budget = max(sum(g.numel() for _, g in pairs) // _CHUNKS, _MIN_CHUNK) if chunked else None
        chunks = list(_chunks(pairs, budget))
        for index, chunk in enumerate(chunks):
            grads = []
            for master, grad in chunk:
                same = grad.dtype == master.dtype and grad.device == master.device
                master.grad = grad if same else grad.to(device=master.device, dtype=master.dtype)
                grads.append(_local(master.grad))
            if multiplier != 1.0:
                torch._foreach_mul_(grads, multiplier)
            self.optimizer.step()
            if self.track_model_state and index == len(chunks) - 1:  # every optimizer state exists by now
                from dsrun.runtime.memory import model_state_bytes

                self.model_state = model_state_bytes(self.module, self.strategy.masters, self.optimizer,
                                                     grads=[g for _, g in pairs])
            for master, _ in chunk:
                master.grad = None

    def _after_update(self) -> None:
        """Progress line every steps_per_print steps; a StepStats row for the monitors every step."""
        # For --hang-timeout and --live: the node's supervisor sees this rank's step, samples and loss.
        heartbeat.report(self.global_steps, self.global_samples, self._loss_for_progress(self._own_losses()))
        every = self.config.steps_per_print
        printing = every is not None and every > 0 and self.global_steps % every == 0
        now = time.perf_counter()
        step_time, self._last_update_end = now - self._last_update_end, now
        breakdown = self._timers.take_step()
        if not printing and not self._monitoring:
            return
        loss = self._reported_loss()
        if self.global_rank != 0:
            if printing:
                self._timers.report()
            return
        stats = StepStats(
            step=self.global_steps, samples=self.global_samples, loss=loss.item(), lr=(self.get_lr() or [0.0])[0],
            grad_norm=self._global_grad_norm, loss_scale=self.loss_scale if self.loss_scaler is not None else None,
            applied=self._step_applied, skipped_steps=self.skipped_steps, step_time_s=step_time,
            samples_per_sec=self.train_batch_size() / max(step_time, 1e-9),
            forward_ms=breakdown.get("forward"), backward_ms=breakdown.get("backward"),
            optimizer_ms=breakdown.get("step"),
        )
        if self.monitor is not None:
            self.monitor.log(stats)
        if printing:
            self._print_progress(stats)

    def _own_losses(self) -> list[torch.Tensor]:
        """This rank's micro-batch losses of the step just taken."""
        return self._losses

    def _loss_for_progress(self, losses: list[torch.Tensor]) -> float | None:
        """This rank's loss (the mean of its micro-batch losses) for the node's supervisor, only when someone reads
        it and it costs no device sync: on the CPU reading a tensor's value is cheap; on an accelerator it would make
        every step wait for the device, so none is published there. Not _reported_loss: that one is a collective."""
        if not heartbeat.active() or not losses or any(loss.device.type != "cpu" for loss in losses):
            return None
        return sum(loss.item() for loss in losses) / len(losses)

    def _reported_loss(self) -> torch.Tensor:
        """The step's loss as the monitors and progress lines show it: the mean over micro-batches and ranks."""
        # Every rank takes part in the mean (same steps, same config), even though only rank 0 reports it.
        loss = torch.stack(self._losses).float().mean() if self._losses else torch.zeros((), device=self.device)
        if self.world_size > 1:
            dist.all_reduce(loss)
            loss /= self.world_size
        return loss

    def _print_progress(self, stats: StepStats) -> None:
        lrs = ",".join(f"{lr:.3e}" for lr in self.get_lr())
        line = f"step {stats.step} loss {stats.loss:.4f} lr {lrs} samples/s {self._throughput.rate():.1f}"
        if Engine._made > 1:
            line = f"engine {self._number} ({type(self.module).__name__}): {line}"
        if stats.loss_scale is not None:
            line += f" loss_scale {stats.loss_scale:g}"
        if stats.skipped_steps:
            line += f" skipped {stats.skipped_steps}"
        if self.config.wall_clock_breakdown:
            line += f" | {self._timers.report()}"
        say(line)
