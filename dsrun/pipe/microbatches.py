"""The micro-batches of one train_batch/eval_batch: pulled from the data iterator as DeepSpeed's pipeline engine does
(each item an `(inputs, labels)` pair: the first stage uses the inputs, the last the labels, middle stages read
nothing), checked, and joined into the whole batch torch's schedule splits again into the same micro-batches.
"""

from __future__ import annotations

import hashlib
from typing import Any, Iterator

import torch

from dsrun.errors import UsageError

Batch = torch.Tensor | tuple[torch.Tensor, ...]


def pull(data_iter: Iterator[Any] | None, count: int, device: torch.device) -> tuple[list[Batch], list[Batch]]:
    """`count` (inputs, labels) pairs from `data_iter`, moved to `device`."""
    if data_iter is None:
        raise UsageError("train_batch/eval_batch on the first or last pipeline stage needs data: pass data_iter=, call"
                         " engine.set_dataiterator(), or give training_data= to dsrun.initialize")
    inputs, labels = [], []
    for index in range(count):
        try:
            item = next(data_iter)
        except StopIteration:
            raise UsageError(f"the data iterator ran out after {index} of the {count} micro-batches of this batch:"
                             " wrap it in dsrun.utils.RepeatingLoader, or size the loop to the data") from None
        if not isinstance(item, (tuple, list)) or len(item) != 2:
            raise UsageError("a pipeline's data iterator must yield (inputs, labels) pairs, got"
                             f" {type(item).__name__}{f' of {len(item)}' if isinstance(item, (tuple, list)) else ''}")
        inputs.append(_to(item[0], device, "inputs"))
        labels.append(_to(item[1], device, "labels"))
    return inputs, labels


def _to(value: Any, device: torch.device, what: str) -> Batch:
    if isinstance(value, torch.Tensor):
        return value.to(device, non_blocking=True)
    if isinstance(value, (tuple, list)) and value and all(isinstance(v, torch.Tensor) for v in value):
        return tuple(v.to(device, non_blocking=True) for v in value)
    raise UsageError(f"pipeline {what} must be a tensor or a tuple of tensors, got {type(value).__name__}: stages pass"
                     " tensors only (flatten dicts and drop None)")


def _parts(batch: Batch) -> tuple[torch.Tensor, ...]:
    return batch if isinstance(batch, tuple) else (batch,)


def join(micro: list[Batch], what: str) -> Batch:
    """The micro-batches end to end along dim 0. They must have the same shapes: torch's schedule splits the whole
    batch into equal parts again, and a pipeline stage's buffers have one shape per step."""
    first = [tuple(t.shape) for t in _parts(micro[0])]
    for index, batch in enumerate(micro[1:], start=1):
        shapes = [tuple(t.shape) for t in _parts(batch)]
        if shapes != first:
            raise UsageError(f"micro-batch {index} of this batch has {what} of shape {_show(shapes)}, micro-batch 0"
                             f" {_show(first)}: a pipeline needs equal micro-batches (set dataloader_drop_last, or"
                             " pad the last batch)")
    if isinstance(micro[0], tuple):
        return tuple(torch.cat([_parts(b)[i] for b in micro]) for i in range(len(micro[0])))
    return torch.cat([_parts(b)[0] for b in micro])


def _show(shapes: list[tuple[int, ...]]) -> str:
    return ", ".join(str(list(s)) for s in shapes)


def shape_key(batch: Batch | None) -> int:
    """A number naming the shapes and dtypes of one micro-batch (stages keep one set of buffers per key)."""
    if batch is None:
        return 0
    text = repr([(tuple(t.shape), str(t.dtype)) for t in _parts(batch)])
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=7).digest(), "big")
