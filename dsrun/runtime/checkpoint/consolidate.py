"""One process, no process group: read a dsrun checkpoint's tensors whole, or export its weights as one file.

`dsrun consolidate CHECKPOINT_DIR OUT` writes the fp32 weights under "module" (the key DeepSpeed's model-states
file uses), so `model.load_state_dict(torch.load(OUT)["module"])` loads them into the bare model.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import TypeVar

import torch
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.metadata import TensorStorageMetadata

from dsrun.errors import UsageError
from dsrun.runtime.checkpoint import layout

T = TypeVar("T")


def resolve_checkpoint(path: Path) -> Path:
    """A tag directory, or a save directory whose `latest` names one."""
    if layout.is_checkpoint(path):
        return path
    tag = layout.read_latest(path)
    if tag is not None:
        found = layout.find_tag_dir(path, tag)
        if found is not None and layout.is_checkpoint(found):
            return found
    foreign = layout.describe_foreign(path) if path.is_dir() else None
    if foreign:
        raise UsageError(f"{path} is {foreign}")
    raise UsageError(f"{path} is neither a dsrun checkpoint nor a save directory with a 'latest' file")


def read_full(path: Path, prefix: str = "") -> dict[str, torch.Tensor]:
    """Every tensor whose key starts with `prefix`, assembled whole from all ranks' shards, on the CPU."""
    metadata = dcp.FileSystemReader(str(path)).read_metadata()
    wanted = {
        key: torch.empty(meta.size, dtype=meta.properties.dtype)
        for key, meta in metadata.state_dict_metadata.items()
        if isinstance(meta, TensorStorageMetadata) and key.startswith(prefix)
    }
    with warnings.catch_warnings():  # "assuming the intent is to load in a single process": it is
        warnings.simplefilter("ignore", UserWarning)
        dcp.load(wanted, checkpoint_id=str(path), no_dist=True)
    return wanted


def as_layer_list(weights: dict[str, T], tied_positions: dict[str, list[int]]) -> dict[str, T]:
    """A pipeline's weights (or anything keyed by their saved names) named as an nn.Sequential of its layers names
    them: a tied weight (`tied_modules.<key>.<attr>`) at every index where its layer appears, and a tied layer's
    untied parameters (saved at the first index of each stage's copy) at the indices that copy served."""
    out = {name: t for name, t in weights.items() if not name.startswith("tied_modules.")}
    for key, positions in tied_positions.items():
        prefix = f"tied_modules.{key}."
        for name, tensor in weights.items():
            if name.startswith(prefix):
                for index in positions:
                    out[f"{index}.{name.removeprefix(prefix)}"] = tensor
        untied = {name.split(".", 1)[1] for name in weights if name.split(".", 1)[0] in map(str, positions)}
        for attr in untied:
            saved = [index for index in positions if f"{index}.{attr}" in weights]
            for index in positions:
                if f"{index}.{attr}" not in out:  # served by the nearest copy before it (or the first one)
                    source = max((s for s in saved if s <= index), default=saved[0])
                    out[f"{index}.{attr}"] = weights[f"{source}.{attr}"]
    return out


def saved_names(source: Path, saved: list[str]) -> dict[str, str]:
    """The bare model's weight names -> the names (`saved`, without "model.") the checkpoint keeps them under: the
    same, but for a pipeline, whose bare model is the nn.Sequential of its layers (one saved tied weight serves
    several of its names)."""
    names = {name: name for name in saved}
    record = torch.load(source / layout.STATE_FILE, weights_only=False).get("pipeline")
    return as_layer_list(names, record["tied_positions"]) if record else names


def model_weights(source: Path) -> dict[str, torch.Tensor]:
    """A checkpoint's fp32 weights, named as the bare model's state_dict names them."""
    weights = {key.removeprefix("model."): t for key, t in read_full(source, "model.").items()}
    weights = {k: t.float() if t.is_floating_point() else t for k, t in weights.items()}
    return {name: weights[key] for name, key in saved_names(source, list(weights)).items()}


def consolidate(checkpoint: Path, out: Path) -> Path:
    source = resolve_checkpoint(checkpoint)
    weights = model_weights(source)
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix == ".safetensors":
        try:
            from safetensors.torch import save_file
        except ImportError:
            raise UsageError("writing .safetensors needs the safetensors package: pip install safetensors") from None
        save_file({k: t.contiguous() for k, t in weights.items()}, str(out))
    else:
        torch.save({"module": weights}, out)
    return source
