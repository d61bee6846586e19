"""A model built on the meta device, split first, then filled from a consolidated `.safetensors` or `.pt` file: each
rank reads only the rows and columns of its own part of every split weight (and the whole weights, which every
rank keeps).

- `.safetensors`: `safe_open(...).get_slice(name)[rows, cols]`, a tensor over those bytes of the file's memory map.
- `.pt`: `torch.load(mmap=True)` maps the file without reading it; the slice is a view of a mapped tensor.
Copying the slice into the rank's part reads the pages it covers. A slice of columns covers every page holding part
of one of its rows: with rows shorter than a page (4 KiB: 1024 float32) that is every page of the tensor, and the
kernel maps cached neighbouring pages along with each one read (fault-around). Read pages sit in the page cache,
shared between the ranks, not in a rank's own memory; what a rank allocates is its part only.

A weight whose layout the split changed (GPT-2's Conv1D transposed into nn.Linear, the fused qkv regrouped; see
shard.Relayout) is read the same way: the rank's rows of the regrouped weight map back to a few runs of rows (or,
transposed, columns) of the saved tensor, read one run at a time.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn
from torch.distributed.tensor import DTensor, Shard

from dsrun.errors import UsageError
from dsrun.inference import weights
from dsrun.inference.shard import Relayout

Index = tuple[slice, ...]


class WeightsFile(Protocol):
    names: set[str]

    def shape(self, name: str) -> tuple[int, ...]: ...

    def read(self, name: str, index: Index) -> torch.Tensor: ...


class _Safetensors:
    def __init__(self, handle: Any):
        self._handle = handle
        self.names = set(handle.keys())

    def shape(self, name: str) -> tuple[int, ...]:
        return tuple(self._handle.get_slice(name).get_shape())

    def read(self, name: str, index: Index) -> torch.Tensor:
        if not index:
            return self._handle.get_tensor(name)
        return self._handle.get_slice(name)[index]


class _MappedPt:
    def __init__(self, state: dict[str, torch.Tensor]):
        self._state = state
        self.names = set(state)

    def shape(self, name: str) -> tuple[int, ...]:
        return tuple(self._state[name].shape)

    def read(self, name: str, index: Index) -> torch.Tensor:
        return self._state[name][index]  # a view into the map: the caller's copy reads the pages


@contextmanager
def open_weights(path: Path) -> Iterator[WeightsFile]:
    if not path.is_file():
        raise UsageError(f"checkpoint {path} does not exist")
    if path.suffix != ".safetensors":
        yield _MappedPt(weights.read_pt(path, mmap=True))
        return
    from safetensors import SafetensorError, safe_open

    try:
        handle = safe_open(str(path), framework="pt", device="cpu")
    except SafetensorError as err:
        raise UsageError(f"checkpoint {path} is not a safetensors file ({str(err).splitlines()[0][:120]})") from None
    with handle:
        yield _Safetensors(handle)


def _runs(indices: list[int]) -> list[slice]:
    """Consecutive indices as slices: [4, 5, 6, 0, 1] -> [4:7, 0:2]."""
    runs: list[slice] = []
    for index in indices:
        if runs and runs[-1].stop == index:
            runs[-1] = slice(runs[-1].start, index + 1)
        else:
            runs.append(slice(index, index + 1))
    return runs


def own_part(target: torch.Tensor) -> tuple[int, slice] | None:
    """The dimension and range of the whole tensor this rank holds of a DTensor split over a 1-D mesh (torch's
    Shard: chunks of ceil(n / size), the last ones shorter or empty); None when the rank holds it whole."""
    if not isinstance(target, DTensor):
        return None
    (placement,) = target.placements
    if not isinstance(placement, Shard):
        return None
    size, dim = target.device_mesh.size(), placement.dim
    chunk = -(-target.shape[dim] // size)
    start = min(target.device_mesh.get_local_rank() * chunk, target.shape[dim])
    return dim, slice(start, start + target.to_local().shape[dim])


def saved_runs(target: torch.Tensor, relayout: Relayout | None) -> list[list[slice]]:
    """Per dimension of the saved tensor, the runs of indices this rank's part of `target` is made of."""
    whole = [[slice(0, length)] for length in target.shape]
    part = own_part(target)
    if part is not None:
        whole[part[0]] = [part[1]]
    if relayout is None:
        return whole
    if relayout.order is not None:  # the part's rows are rows `order[part]` of the (transposed) saved tensor
        rows = whole[0][0]
        whole[0] = _runs(relayout.order[rows.start:rows.stop].tolist())
    return whole[::-1] if relayout.transposed else whole


def read_part(file: WeightsFile, name: str, target: torch.Tensor, relayout: Relayout | None) -> torch.Tensor:
    runs = saved_runs(target, relayout)
    if all(len(dim_runs) == 1 for dim_runs in runs):
        piece = file.read(name, tuple(run for (run,) in runs))
    elif len(runs) == 1:
        piece = torch.cat([file.read(name, (run,)) for run in runs[0]])
    else:  # a regrouped fused qkv weight: several runs along one of its two dimensions
        piece = torch.cat([torch.cat([file.read(name, (row, col)) for col in runs[1]], dim=1) for row in runs[0]])
    return piece.t() if relayout is not None and relayout.transposed else piece


def load(model: nn.Module, path: Path, relayouts: dict[str, Relayout]) -> None:
    """Fill the split model (its parameters materialised, uninitialised) from the file at `path`."""
    state = model.state_dict(keep_vars=True)  # tied weights are one object under several names
    with open_weights(path) as file:
        present = {id(tensor) for name, tensor in state.items() if name in file.names}
        missing = [name for name, tensor in state.items() if name not in file.names and id(tensor) not in present]
        weights.check_fits(path, missing, sorted(file.names - set(state)))
        done: set[int] = set()
        with torch.no_grad():
            for name, target in state.items():
                if name not in file.names or id(target) in done:
                    continue
                done.add(id(target))
                relayout = relayouts.get(name)
                expected = tuple(target.shape)
                if relayout is not None and relayout.transposed:
                    expected = expected[::-1]
                if file.shape(name) != expected:
                    raise UsageError(f"checkpoint {path}: {name} has shape {file.shape(name)}, the model's is"
                                     f" {expected}")
                _local(target).copy_(read_part(file, name, target, relayout))
            # Each tied tensor holds its first name's values: the file must hold the same under its other names.
            weights.check_ties(path, model, lambda first, other: first not in file.names or other not in file.names
                               or torch.equal(_local(state[first]), read_part(file, other, state[first],
                                                                               relayouts.get(other))))


def _local(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.to_local() if isinstance(tensor, DTensor) else tensor
