"""init_inference(checkpoint=...): the model's weights from a dsrun checkpoint or a consolidated file.

Read whole on every rank before the split (the split then keeps each rank's share). A model whose parameters are
on the meta device takes the other way: each rank reads its own part only, from a dsrun checkpoint directory
(shard_load) or a consolidated file (file_shards).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from dsrun.errors import UsageError


def read(path: Path) -> dict[str, torch.Tensor]:
    if path.is_dir():
        from dsrun.runtime.checkpoint.consolidate import model_weights, resolve_checkpoint

        return model_weights(resolve_checkpoint(path))
    if not path.is_file():
        raise UsageError(f"checkpoint {path} does not exist")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    return read_pt(path)


def read_pt(path: Path, mmap: bool = False) -> dict[str, torch.Tensor]:
    """A torch weights file's state_dict. `mmap`: its tensors stay in the file's memory map until touched."""
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as err:  # pickle, zip or weights_only errors: all mean "not a weights file we can read"
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UsageError(f"checkpoint {path} is not a torch weights file ({first[:120]})") from None
    if isinstance(loaded, dict) and isinstance(loaded.get("module"), dict):
        loaded = loaded["module"]  # `dsrun consolidate` and DeepSpeed's model-states files keep them here
    if not isinstance(loaded, dict) or not all(isinstance(t, torch.Tensor) for t in loaded.values()):
        raise UsageError(f"checkpoint {path} does not hold a state_dict (name -> tensor), nor one under 'module'")
    return loaded


def check_fits(path: Path, missing: list[str], unexpected: list[str]) -> None:
    if missing or unexpected:
        what = []
        if missing:
            what.append(f"{len(missing)} of the model's weights missing (first {missing[0]!r})")
        if unexpected:
            what.append(f"{len(unexpected)} names the model does not have (first {unexpected[0]!r})")
        raise UsageError(f"checkpoint {path} does not fit the model: {'; '.join(what)}")


def load_into(model: nn.Module, path: Path) -> None:
    weights = read(path)
    expected = model.state_dict()
    # A tied weight (GPT-2's lm_head.weight is wte.weight) is saved once by many writers: present under any name.
    storage = {name: t.untyped_storage().data_ptr() for name, t in expected.items() if not t.is_meta}
    present = {storage.get(name) for name in expected if name in weights}
    missing = [name for name in expected if name not in weights and (name not in storage or storage[name] not in
                                                                    present)]
    unexpected = [name for name in weights if name not in expected]
    check_fits(path, missing, unexpected)
    for name, tensor in expected.items():
        if name in weights and tensor.shape != weights[name].shape:
            raise UsageError(f"checkpoint {path}: {name} has shape {tuple(weights[name].shape)}, the model's is"
                             f" {tuple(tensor.shape)}")
    check_ties(path, model, lambda first, other: first not in weights or other not in weights
               or torch.equal(weights[first], weights[other]))
    on_meta = any(t.is_meta for t in expected.values())
    model.load_state_dict(weights, strict=False, assign=on_meta)


def check_ties(path: Path, model: nn.Module, same: Callable[[str, str], bool]) -> None:
    """One parameter of the model under several names must get one value from the checkpoint (`same(first, other)`:
    the checkpoint's values for those names are equal). A pipeline's tied layer shares only its tied weights: the
    bias of each stage's copy is its own, so a model tying the whole layer cannot hold them: a silent last-wins load
    would run one copy's bias at every index."""
    first: dict[int, str] = {}
    for name, tensor in model.state_dict(keep_vars=True).items():
        if id(tensor) in first and not same(first[id(tensor)], name):
            raise UsageError(f"checkpoint {path} holds different values for {first[id(tensor)]} and {name}, which"
                             " are one parameter of the model: build them as separate parameters (a pipeline's"
                             " tied layer shares only its tied_weight_attr, each stage's copy has its own others)")
        first.setdefault(id(tensor), name)
