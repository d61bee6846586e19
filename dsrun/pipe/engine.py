"""PipelineEngine: what `dsrun.initialize(model=<PipelineModule>)` returns. DeepSpeed's pipeline calls on
torch.distributed.pipelining.

`train_batch()` runs gradient_accumulation_steps micro-batches through the stages with torch's 1F1B schedule (GPipe
on request, or when there are fewer micro-batches than stages, which 1F1B cannot schedule), then one optimizer step:
tied weights' gradients are summed over the stages holding them, each stage's gradients averaged over its
data-parallel replicas (the ZeRO stage 0-1 strategy, on the stage's replica group), clipped by the norm over all
stages, and stepped. It returns the mean loss of the batch on every rank, as DeepSpeed does.

One PipelineStage and schedule is kept per micro-batch shape: torch sizes a stage's receive buffers once, from the
first step, and a batch of another shape through them is silently cut or aborts the receiver; the first stage tells
the others the shape of each batch (one small broadcast), so a new shape gets its own, freshly measured, stage.
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterator

import torch
import torch.distributed as dist
from torch.distributed.pipelining import PipelineStage, Schedule1F1B, ScheduleGPipe

from dsrun.console import say
from dsrun.errors import UsageError, exit_on_usage_error
from dsrun.pipe import microbatches
from dsrun.pipe.groups import PipeGroups
from dsrun.pipe.module import PipelineModule
from dsrun.runtime.distributed import Placement
from dsrun.runtime.engine import Engine, _local


class PipelineEngine(Engine):
    def __init__(self, *, groups: PipeGroups, data_placement: Placement, **engine_args: Any):
        super().__init__(**engine_args)
        assert isinstance(self.module, PipelineModule)
        self.pipe = self.module
        self.groups = groups
        self.data_placement = data_placement  # this rank among its stage's data-parallel replicas
        self.data_group = groups.data
        self.num_stages = self.pipe.num_stages
        self.stage_id = self.pipe.stage_id
        self.data_iterator: Iterator[Any] | None = None
        if self.training_dataloader is not None and (self.is_first_stage() or self.is_last_stage()):
            self.data_iterator = _epochs(self.training_dataloader)
        self._stages: dict[tuple[Any, ...], Any] = {}  # (kind, shape key, micro-batches) -> schedule
        self._micro_losses: list[torch.Tensor] = []
        self._loss_share = torch.zeros(())  # this rank's part of the batch loss, then the loss (train_batch)
        self._key_sent: Any = None  # the first stage's shape-key send, in flight
        self._key_buffer: torch.Tensor | None = None
        self.agg_train_loss: torch.Tensor | None = None
        self.agg_eval_loss: torch.Tensor | None = None
        # The norm counts each tied weight once: on the first stage holding it.
        copies = {id(param) for key, stages in self.pipe.tied_stages.items()
                  if stages[0] != self.stage_id and key in self.pipe.tied_modules
                  for param in self.pipe.tied_parameters_of(key).values()}
        self._norm_skips = {id(master) for param, master in self.strategy.masters.items() if id(param) in copies}

    # -- DeepSpeed's pipeline accessors ----------------------------------------------------------------------------
    def is_first_stage(self) -> bool:
        return self.stage_id == 0

    def is_last_stage(self) -> bool:
        return self.stage_id == self.num_stages - 1

    def set_dataiterator(self, iterator: Iterator[Any]) -> None:
        """Where the first and last stage take their micro-batches from (DeepSpeed's name)."""
        self.data_iterator = iterator

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        self._refuse("forward")

    def backward(self, *args: Any, **kwargs: Any) -> Any:
        self._refuse("backward")

    def step(self, *args: Any, **kwargs: Any) -> None:
        self._refuse("step")

    def _refuse(self, call: str) -> None:
        with exit_on_usage_error():
            raise UsageError(f"engine.{call}() is not available on a pipeline engine: call engine.train_batch(), which"
                             " runs the forward, backward and step of a whole batch (engine.eval_batch() to evaluate)")

    # -- training ---------------------------------------------------------------------------------------------------
    def train_batch(self, data_iter: Iterator[Any] | None = None) -> torch.Tensor:
        """One optimizer step over gradient_accumulation_steps micro-batches; the batch's mean loss, on every rank."""
        if not torch.is_grad_enabled():
            with exit_on_usage_error():
                raise UsageError("train_batch() ran under torch.no_grad(): training needs gradients (use eval_batch()"
                                 " to evaluate)")
        if data_iter is not None:
            self.set_dataiterator(data_iter)
        self._require_optimizer("train_batch")
        self.pipe.train()
        count = self.gradient_accumulation_steps()
        with self._stage_errors():
            schedule, inputs, labels = self._prepare("train", count, compute_loss=True)
        self._timers.start("forward")  # forward and backward interleave in the schedule: timed as one
        self.strategy.before_backward(True)
        losses: list[torch.Tensor] = []
        with self._autocast(), self._stage_errors():
            schedule.step(*inputs, target=labels, losses=losses, return_outputs=False)
        self._micro_losses = self._unscaled(losses)
        self._sum_tied_gradients()
        self.strategy.after_backward(True)
        self._timers.stop("forward")
        # The batch loss reaches every rank inside the norm's all-reduce (see _global_norm): no collective of its own.
        self._loss_share = self._batch_loss(broadcast=False, averaged=False) / self.data_placement.world_size
        self._timers.start("step")
        self._optimizer_step()
        self._timers.stop("step")
        loss = self._loss_share
        self._losses = [loss]
        self.micro_steps += count
        self.global_steps += 1
        self.global_samples += self.train_batch_size()
        self._throughput.add(self.train_batch_size())
        self._after_update()
        self._losses = []
        self.agg_train_loss = loss
        self._autosave.after_step(self)
        return loss

    def eval_batch(self, data_iter: Iterator[Any] | None, return_logits: bool = False, compute_loss: bool = True,
                   reduce_output: str | None = "avg", bcast_loss: bool = True,
                   num_micro_batches: int | None = None) -> Any:
        """Forward only over num_micro_batches (default: gradient_accumulation_steps) micro-batches of `data_iter`.

        Returns the loss (the micro-batches' mean with reduce_output "avg", their list with None), on every rank
        when bcast_loss; with return_logits `(loss, logits)`, the logits on the last stage (None elsewhere)."""
        if reduce_output not in ("avg", None):
            with exit_on_usage_error():
                raise UsageError(f'eval_batch reduce_output={reduce_output!r}: use "avg" or None')
        if data_iter is not None:
            self.set_dataiterator(data_iter)
        count = num_micro_batches or self.gradient_accumulation_steps()
        was_training = self.pipe.training
        self.pipe.eval()
        try:
            with self._stage_errors():
                schedule, inputs, labels = self._prepare("eval", count, compute_loss=compute_loss)
            losses: list[torch.Tensor] = []
            with torch.no_grad(), self._autocast(), self._stage_errors():
                logits = schedule.eval(*inputs, target=labels if compute_loss else None, losses=losses)
            self._micro_losses = self._unscaled(losses)
        finally:
            self.pipe.train(was_training)
        loss: Any = None
        if compute_loss:
            if reduce_output == "avg":
                loss = self._batch_loss(broadcast=bcast_loss)
            else:
                loss = [self._share(x) if bcast_loss else x for x in self._micro_losses_or_zeros(count)]
        self.agg_eval_loss = loss if isinstance(loss, torch.Tensor) else None
        return (loss, logits if self.is_last_stage() else None) if return_logits else loss

    def _stage_errors(self) -> Any:
        """A mistake only some stages see (their data, the loss): each such stage's first replica says it, with the
        stage's number, and every rank that saw it exits with code 2 (the launcher then ends the others)."""
        return exit_on_usage_error(speaks=self.data_placement.rank == 0, prefix=f"pipeline stage {self.stage_id}: ")

    # -- the schedule -----------------------------------------------------------------------------------------------
    def _prepare(self, kind: str, count: int, compute_loss: bool) -> tuple[Any, tuple[Any, ...], Any]:
        """This batch's schedule and the arguments its step takes on this stage."""
        inputs: tuple[Any, ...] = ()
        labels = None
        first_micro = None
        if self.is_first_stage() or self.is_last_stage():
            micro_inputs, micro_labels = microbatches.pull(self.data_iterator, count, self.device)
            if self.is_first_stage():
                whole = microbatches.join(micro_inputs, "inputs")
                if self.precision.cast_inputs:
                    whole = _cast_floating(whole, self.precision.param_dtype)
                inputs = whole if isinstance(whole, tuple) else (whole,)
                first_micro = micro_inputs[0]
            if self.is_last_stage():
                labels = microbatches.join(micro_labels, "labels")
        key = (kind, self._shared_shape_key(first_micro), count, compute_loss)
        if key not in self._stages:
            self._stages[key] = self._build_schedule(count, with_loss=compute_loss)
        return self._stages[key], inputs, labels

    def _shared_shape_key(self, first_micro: Any) -> int:
        """The first stage's batch shape, on every stage of the pipeline. The first stage only sends it: waiting
        for the others to take it would hold its first forwards back while the last stage still steps."""
        if self._key_sent is not None:
            self._key_sent.wait()  # the previous batch's: long taken by now (its schedule needed it)
            self._key_sent = None
        mine = microbatches.shape_key(first_micro)
        key = torch.tensor([mine], dtype=torch.int64, device=self.device)
        if self.groups.pipeline is not None:
            work = dist.broadcast(key, src=self.groups.first_rank, group=self.groups.pipeline,
                                  async_op=self.is_first_stage())
            if self.is_first_stage():
                self._key_sent = work
                self._key_buffer = key  # the send reads it until wait()
                return mine
        return int(key.item())

    def _build_schedule(self, count: int, with_loss: bool) -> Any:
        loss_fn = self._loss if with_loss else None
        if self.num_stages == 1:
            return OneStage(self.pipe, count, loss_fn)
        stage = PipelineStage(self.pipe, self.stage_id, self.num_stages, self.device, group=self.groups.pipeline)
        kind = self.config.pipeline.schedule
        if kind == "1F1B" and count < self.num_stages:
            kind = "GPipe"  # 1F1B needs a micro-batch per stage in flight; with fewer it is GPipe anyway
            if self.global_rank == 0 and self.global_steps == 0:
                say(f"note: {count} micro-batches for {self.num_stages} pipeline stages: running the GPipe schedule"
                    " (1F1B needs at least one micro-batch per stage)")
        schedule_class = Schedule1F1B if kind == "1F1B" else ScheduleGPipe
        # scale_grads: the schedule divides the summed gradients by the micro-batch count, as engine.backward
        # divides each loss by gradient_accumulation_steps.
        return schedule_class(stage, n_microbatches=count, loss_fn=loss_fn, scale_grads=True)

    def _loss(self, output: Any, target: Any) -> torch.Tensor:
        loss = output if self.pipe.loss_fn is None else self.pipe.loss_fn(output, target)
        if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
            raise UsageError("the pipeline's loss must be one number: give PipelineModule a loss_fn (outputs, labels)"
                             " -> scalar tensor, or make the last layer return the loss")
        # fp16: scaled in fp32, as a half-precision loss times 2^16 would itself overflow.
        return loss.float() * self.loss_scale if self.loss_scaler is not None else loss

    def _unscaled(self, losses: list[torch.Tensor]) -> list[torch.Tensor]:
        """The schedule's per-micro-batch losses (last stage only) as the loss function gave them."""
        scale = self.loss_scale if self.loss_scaler is not None else 1.0
        return [loss.detach().float().reshape(()) / scale for loss in losses]

    def _autocast(self) -> Any:
        dtype = self.precision.autocast_dtype
        return torch.autocast(self.device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()

    # -- after the schedule -----------------------------------------------------------------------------------------
    def _sum_tied_gradients(self) -> None:
        """Each stage used its own copy of a tied weight: their gradients add up to the shared weight's."""
        for key, group in self.groups.tied.items():
            for param in self.pipe.tied_parameters_of(key).values():
                if param.grad is None:
                    param.grad = torch.zeros_like(param)
                dist.all_reduce(param.grad, group=group)

    def _own_losses(self) -> list[torch.Tensor]:
        """The last stage's micro-batch losses (other stages compute none); not _losses, a share of the batch's."""
        return self._micro_losses

    def _micro_losses_or_zeros(self, count: int) -> list[torch.Tensor]:
        if self._micro_losses:
            return list(self._micro_losses)
        return [torch.zeros((), device=self.device) for _ in range(count)]

    def _batch_loss(self, broadcast: bool = True, averaged: bool = True) -> torch.Tensor:
        """The mean over micro-batches on the last stage, averaged over its replicas, sent to every stage.
        Not averaged: this replica's mean; not broadcast: zero on the other stages."""
        loss = torch.zeros((), device=self.device)
        if self.is_last_stage():
            loss = torch.stack(self._micro_losses).mean()
            if averaged and self.groups.data is not None:
                dist.all_reduce(loss, group=self.groups.data)
                loss /= len(self.groups.data_ranks)
        return self._share(loss) if broadcast else loss

    def _share(self, loss: torch.Tensor) -> torch.Tensor:
        loss = loss.clone()
        if self.groups.pipeline is not None:
            dist.broadcast(loss, src=self.groups.last_rank, group=self.groups.pipeline)
        return loss

    def _global_norm(self, pairs: list[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
        """The L2 norm of the whole model's gradients: every stage's (tied weights counted once), over all ranks.
        Replicas of a stage hold the same averaged gradients unless ZeRO-1 split them into disjoint rows.

        The same all-reduce sums the batch loss: the last stage's replicas each add theirs divided by the replica
        count (every other rank adds zero), so every rank ends with the mean, as a broadcast would give it."""
        squares = self._squares([_local(g) for master, g in pairs if id(master) not in self._norm_skips])
        if self.world_size > 1:
            both = torch.stack([squares, self._loss_share.to(squares.dtype)])
            dist.all_reduce(both)
            squares, self._loss_share = both[0], both[1]
            if not self.strategy.sharded:
                squares = squares / self.data_placement.world_size
        return squares.sqrt()

    def _reported_loss(self) -> torch.Tensor:
        """Every rank already holds the batch's mean loss: no all-reduce for the monitors."""
        return self._losses[0] if self._losses else torch.zeros((), device=self.device)


def _epochs(loader: Any) -> Iterator[Any]:
    """The training_data loader pass after pass, as DeepSpeed's pipeline engine repeats it (each pass is a new epoch
    of its sampler; started lazily, so a load_checkpoint before the first train_batch resumes its position)."""
    while True:
        yield from loader


def _cast_floating(batch: Any, dtype: torch.dtype) -> Any:
    if isinstance(batch, tuple):
        return tuple(_cast_floating(t, dtype) for t in batch)
    return batch.to(dtype) if batch.is_floating_point() else batch


class OneStage:
    """A pipeline of one stage (every rank a data-parallel replica): the micro-batches run one after another, with
    the schedules' interface (torch's PipelineStage needs a pipeline group, and there is nothing to pipeline)."""

    def __init__(self, module: PipelineModule, count: int, loss_fn: Any):
        self.module, self.count, self.loss_fn = module, count, loss_fn

    def _split(self, inputs: tuple[Any, ...], target: Any) -> list[tuple[tuple[Any, ...], Any]]:
        parts = [torch.tensor_split(t, self.count) for t in inputs]
        targets = (torch.tensor_split(target, self.count) if isinstance(target, torch.Tensor)
                   else [tuple(t[i] for t in (torch.tensor_split(x, self.count) for x in target))
                         for i in range(self.count)] if target is not None else [None] * self.count)
        return [(tuple(p[i] for p in parts), targets[i]) for i in range(self.count)]

    def step(self, *inputs: Any, target: Any = None, losses: list[torch.Tensor] | None = None,
             return_outputs: bool = True) -> Any:
        outputs = []
        for micro, micro_target in self._split(inputs, target):
            output = self.module(*micro)
            if self.loss_fn is not None:
                loss = self.loss_fn(output, micro_target)
                (loss / self.count).backward()
                if losses is not None:
                    losses.append(loss.detach())
            outputs.append(output)
        return _merge(outputs) if return_outputs else None

    def eval(self, *inputs: Any, target: Any = None, losses: list[torch.Tensor] | None = None) -> Any:
        outputs = []
        for micro, micro_target in self._split(inputs, target):
            output = self.module(*micro)
            if self.loss_fn is not None and losses is not None:
                losses.append(self.loss_fn(output, micro_target).detach())
            outputs.append(output)
        return _merge(outputs)


def _merge(outputs: list[Any]) -> Any:
    """Micro-batch outputs end to end, as torch's schedules merge the last stage's."""
    if isinstance(outputs[0], tuple):
        return tuple(torch.cat([o[i] for o in outputs]) for i in range(len(outputs[0])))
    return torch.cat(outputs)
