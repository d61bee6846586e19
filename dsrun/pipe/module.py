"""PipelineModule: DeepSpeed's layer-list model, of which each rank builds and runs only its own stage.

What the pipeline engine reads from it (all set at construction, the same partition on every rank):
  num_stages, stage_id, data_parallel_id, global_rank, world_size, topology() (a ProcessTopology), loss_fn,
  parts (stage s owns layers [parts[s], parts[s+1])), layer_range == (start, stop) of this stage,
  forward_funcs / layer_indices (this stage's callables and their global layer indices),
  tied_keys, tied_stages {key: stages holding it}, tied_modules (this stage's copies), tied_weight_attrs,
  tied_parameters() {key: {attr: parameter}} on this stage, tied_rank_groups(key) (the all-reduce groups),
  layer_state_dicts() / load_layer_state_dicts() keyed by global layer index.
Parameters are registered under the global layer index ("3.weight") and tied ones as "tied_modules.KEY.weight", so a
state_dict names the same layer the same way whatever the number of stages.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from functools import partial
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from dsrun.console import say
from dsrun.errors import UsageError, one_line_in_workers
from dsrun.pipe import activation, tied
from dsrun.pipe.layers import display_name, layer_name, parameter_counts
from dsrun.pipe.partition import partition
from dsrun.pipe.report import partition_lines
from dsrun.pipe.spec import LayerSpec, TiedLayerSpec
from dsrun.pipe.topology import PipeDataParallelTopology, ProcessTopology


class PipelineModule(nn.Module):
    """`PipelineModule(layers, num_stages=None, topology=None, loss_fn=None, seed_layers=False, seed_fn=None,
    base_seed=1234, partition_method="parameters", activation_checkpoint_interval=0,
    activation_checkpoint_func=checkpoint, checkpointable_layers=None, dynamic_shape=False)`, as in DeepSpeed.

    `rank=` and `world_size=` (keyword only, dsrun's) stand in for torch.distributed when it is not initialized: they
    build the module as that rank of that world would (tests; a tool inspecting one stage). Without them and without
    torch.distributed the module is rank 0 of a world of 1."""

    @one_line_in_workers
    def __init__(self, layers: Iterable[Any], num_stages: int | None = None, topology: ProcessTopology | None = None,
                 loss_fn: Callable[..., Any] | None = None, seed_layers: bool = False,
                 seed_fn: Callable[[int], Any] | None = None, base_seed: int = 1234,
                 partition_method: str = "parameters", activation_checkpoint_interval: int = 0,
                 activation_checkpoint_func: Callable[..., Any] = activation.checkpoint,
                 checkpointable_layers: Sequence[str] | None = None, dynamic_shape: bool = False, *,
                 rank: int | None = None, world_size: int | None = None):
        super().__init__()
        self.global_rank, self.world_size = _rank_and_world(rank, world_size)
        self._topo = _resolve_topology(num_stages, topology, self.world_size)
        self.num_stages = self._topo.get_dim("pipe")
        self.stage_id = self._topo.stage_of(self.global_rank)
        self.data_parallel_id = self._topo.data_index_of(self.global_rank)
        self.loss_fn = loss_fn
        self.seed_layers, self.seed_fn, self.base_seed = seed_layers, seed_fn, base_seed
        self.partition_method = partition_method
        if activation_checkpoint_interval < 0:
            raise UsageError(f"activation_checkpoint_interval={activation_checkpoint_interval}: use 0 (off) or a"
                             " positive number of layers")
        if checkpointable_layers is not None and not isinstance(checkpointable_layers, (list, tuple)):
            raise UsageError(f"checkpointable_layers={checkpointable_layers!r}: give a list of layer class names")
        self.activation_checkpoint_interval = activation_checkpoint_interval
        self.activation_checkpoint_func = activation_checkpoint_func
        self.checkpointable_layers = None if checkpointable_layers is None else list(checkpointable_layers)
        self.dynamic_shape = dynamic_shape
        self.micro_offset = 0  # forward calls so far; with seed_layers it varies the per-layer seeds

        # Only names and tied keys of the whole list are kept: other stages' modules are not referenced after this.
        specs = list(layers)
        _check_layers(specs)
        self.layer_names = [display_name(layer) for layer in specs]
        counts: list[int] = []

        def counted() -> list[int]:
            if not counts:
                counts.extend(parameter_counts(specs))
            return counts

        self.parts = partition(partition_method, self.num_stages, [layer_name(s) for s in specs], counted)
        self._local_start, self._local_stop = self.parts[self.stage_id], self.parts[self.stage_id + 1]
        self.tied_stages = tied.tied_stages([s.key if isinstance(s, TiedLayerSpec) else None for s in specs],
                                            self.parts)
        self.tied_keys = list(self.tied_stages)
        self._tied_key_of = [s.key if isinstance(s, TiedLayerSpec) else None for s in specs]

        self.forward_funcs: list[Callable[..., Any]] = []
        self.layer_indices: list[int] = []
        self.tied_modules = nn.ModuleDict()
        self.tied_weight_attrs: dict[str, list[str]] = {}
        self._stateful: dict[int, nn.Module] = {}  # global layer index -> the module whose state it checkpoints
        self._build(specs)
        self._checkpointable: dict[int, list[bool]] = {}  # interval -> per chunk, computed on first use

        if self.global_rank == 0:
            loss_name = None if loss_fn is None else getattr(loss_fn, "__name__", type(loss_fn).__name__)
            for line in partition_lines(self.parts, self.layer_names, counted(), method=partition_method,
                                        data_parallel=self._topo.get_dim("data") or 1, loss_name=loss_name):
                say(line)

    # ---- construction ----

    def _build(self, specs: Sequence[Any]) -> None:
        """Build this stage's layers in order, each seeded with base_seed + its global index when seed_layers (the
        seed is set for every layer, callables included, as DeepSpeed does)."""
        seed = self.seed_fn or _default_seed
        for idx in range(self._local_start, self._local_stop):
            layer = specs[idx]
            if self.seed_layers:
                seed(self.base_seed + idx)
            func: Callable[..., Any]
            if isinstance(layer, TiedLayerSpec):
                if layer.key not in self.tied_modules:  # a second use on this stage shares the first's module
                    self.tied_modules[layer.key] = layer.build()
                    self.tied_weight_attrs[layer.key] = list(layer.tied_weight_attr)
                module = self.tied_modules[layer.key]
                func = module if layer.forward_fn is None else partial(layer.forward_fn, module)
                self._stateful[idx] = module
            elif isinstance(layer, (LayerSpec, nn.Module)):
                module = layer.build() if isinstance(layer, LayerSpec) else layer
                self.add_module(str(idx), module)
                func = self._stateful[idx] = module
            else:
                func = layer
            self.forward_funcs.append(func)
            self.layer_indices.append(idx)
        for key in self.tied_modules:
            self.tied_parameters_of(key)  # a wrong tied_weight_attr fails here, at construction

    # ---- forward ----

    def forward(self, *inputs: Any) -> Any:
        """Run this stage's layers in order, each one's output the next one's input: `x = layer(x)`, a tuple passed
        as one argument, as DeepSpeed does. In training with grad enabled and activation_checkpoint_interval N > 0,
        chunks of N layers run through activation_checkpoint_func (those that qualify, see activation.py).

        Called with one argument as in DeepSpeed; with several (torch.distributed.pipelining's PipelineStage calls
        its submodule with the received tensors unpacked), they are the tuple the first layer gets."""
        forward_input = inputs[0] if len(inputs) == 1 else inputs
        self.micro_offset += 1
        seed_offset = self.micro_offset + 1  # DeepSpeed's value, fixed per call so a recomputation sees the same
        interval = self.activation_checkpoint_interval
        num_funcs = len(self.forward_funcs)
        if interval == 0 or not (self.training and torch.is_grad_enabled()):
            return self._run(0, num_funcs, forward_input, seed_offset)
        x = forward_input
        plan = zip(activation.chunks(num_funcs, interval), self._chunk_plan(interval), strict=True)
        for (start, stop), worth_it in plan:
            if not worth_it:
                x = self._run(start, stop, x, seed_offset)
                continue
            # Tensors go to the checkpoint function as positional arguments (a reentrant checkpoint only sees
            # those); the chunk gets back the value it was given, a tuple staying a tuple even of one element.
            was_tuple = isinstance(x, tuple)
            x = self.activation_checkpoint_func(partial(self._run_args, start, stop, seed_offset, was_tuple),
                                                *(x if was_tuple else (x,)))
        return x

    def _run(self, start: int, stop: int, x: Any, seed_offset: int) -> Any:
        for local in range(start, stop):
            if self.seed_layers:
                # DeepSpeed reseeds each layer of each forward with base_seed * offset + layer index (it uses the
                # index within the checkpoint chunk there; this uses the global index, which it meant).
                (self.seed_fn or _default_seed)(self.base_seed * seed_offset + self.layer_indices[local])
            x = self.forward_funcs[local](x)
        return x

    def _run_args(self, start: int, stop: int, seed_offset: int, was_tuple: bool, *args: Any) -> Any:
        return self._run(start, stop, args if was_tuple else args[0], seed_offset)

    def _chunk_plan(self, interval: int) -> list[bool]:
        """Per chunk of `interval` layers: checkpoint it or not (the interval may be changed after construction, as
        DeepSpeed's engine sets it from the config's pipeline section)."""
        if interval not in self._checkpointable:
            self._checkpointable[interval] = [
                activation.is_checkpointable(self.forward_funcs[start:stop], self.checkpointable_layers)
                for start, stop in activation.chunks(len(self.forward_funcs), interval)]
        return self._checkpointable[interval]

    # ---- what the engine and scripts query ----

    def topology(self) -> ProcessTopology:
        """The ProcessTopology mapping ranks to (stage, data index) (DeepSpeed's accessor)."""
        return self._topo

    def num_pipeline_stages(self) -> int:
        return self.num_stages

    def partitions(self) -> list[int]:
        return list(self.parts)

    @property
    def layer_range(self) -> tuple[int, int]:
        """[start, stop) global layer indices this stage runs."""
        return self._local_start, self._local_stop

    def stage_owner(self, layer_idx: int) -> int:
        """The stage running a global layer index."""
        return tied.stage_of_layer(self.parts, layer_idx)

    def tied_parameters_of(self, key: str) -> dict[str, torch.Tensor]:
        """{attr: tensor} of the tied weights of `key` on this stage (KeyError where the stage holds no copy)."""
        module = self.tied_modules[key]
        return {attr: tied.resolve_attr(module, attr) for attr in self.tied_weight_attrs[key]}

    def tied_parameters(self) -> dict[str, dict[str, torch.Tensor]]:
        """{key: {attr: tensor}} for every tied key this stage holds, keys sorted (the same order on every rank)."""
        return {key: self.tied_parameters_of(key) for key in sorted(self.tied_modules)}

    def tied_rank_groups(self, key: str) -> list[list[int]]:
        """The ranks whose copies of `key` must agree: one list per data-parallel index, ordered by stage. The engine
        creates one process group per list (every rank, every list, in this order) when it has more than one rank."""
        return tied.tied_rank_groups(self.tied_stages[key], self._topo)

    # ---- checkpoints by layer index ----

    def checkpoint_names(self) -> dict[nn.Parameter, str]:
        """The name each parameter is checkpointed under, the same for any number of stages: `<layer index>.<name>`
        (the module's own names), a tied weight `tied_modules.<key>.<attr>` (its copies are equal), and a tied
        layer's other parameters, which each stage's copy has for itself, `<first index of the copy>.<name>`."""
        names: dict[nn.Parameter, str] = {}
        for name, param in self.named_parameters():
            names[param] = name
        for key, module in self.tied_modules.items():
            first = min(idx for idx, holder in self._stateful.items() if holder is module)
            tied = set(self.tied_weight_attrs[key])
            for name, param in module.named_parameters():
                if name not in tied:
                    names[param] = f"{first}.{name}"
        return names

    def tied_positions(self) -> dict[str, list[int]]:
        """{key: every global layer index where the tied layer appears} (for exporting the whole list)."""
        return {key: [idx for idx, spec_key in enumerate(self._tied_key_of) if spec_key == key]
                for key in self.tied_keys}

    def layer_state_dicts(self) -> dict[int, dict[str, Any]]:
        """{global layer index: state_dict} for this stage's layers that hold state (callables have none). A tied
        layer is saved at each index it appears, so any partition later finds it at one of its own indices."""
        return {idx: module.state_dict() for idx, module in self._stateful.items()}

    def load_layer_state_dicts(self, states: Mapping[int, Mapping[str, Any]], strict: bool = True) -> None:
        """Load this stage's layers from {global layer index: state_dict}; indices of other stages are ignored, so a
        checkpoint written with any number of stages loads. With strict, a missing index of this stage is an error."""
        missing = [idx for idx in self._stateful if idx not in states]
        if strict and missing:
            raise UsageError(f"the checkpoint has no state for layers {missing} of pipeline stage {self.stage_id}")
        for idx, module in self._stateful.items():
            if idx in states:
                module.load_state_dict(states[idx], strict=strict)


def _default_seed(seed: int) -> None:
    from dsrun.runtime.utils import set_random_seed  # DeepSpeed's default: Python's, NumPy's and torch's RNGs

    set_random_seed(seed)


def _rank_and_world(rank: int | None, world_size: int | None) -> tuple[int, int]:
    initialized = dist.is_available() and dist.is_initialized()
    if rank is None and world_size is None:
        return (dist.get_rank(), dist.get_world_size()) if initialized else (0, 1)
    if initialized:
        raise UsageError("PipelineModule rank=/world_size= stand in for torch.distributed, which is initialized:"
                         " leave them out")
    rank, world_size = rank or 0, world_size or 1
    if not 0 <= rank < world_size:
        raise UsageError(f"PipelineModule rank={rank} is outside world_size={world_size}")
    return rank, world_size


def _resolve_topology(num_stages: int | None, topology: ProcessTopology | None, world_size: int) -> ProcessTopology:
    if topology is None:
        if num_stages is None:
            raise UsageError("PipelineModule needs num_stages or topology (the number of pipeline stages)")
        if num_stages < 1 or world_size % num_stages:
            raise UsageError(f"PipelineModule num_stages={num_stages} does not divide the world size {world_size}:"
                             " every stage needs the same number of data-parallel ranks")
        return PipeDataParallelTopology(num_pp=num_stages, num_dp=world_size // num_stages)
    axes = topology.get_axis_names()
    if "pipe" not in axes or not set(axes) <= {"pipe", "data", "model"} or topology.get_dim("model") > 1:
        raise UsageError(f"PipelineModule topology {topology.shape()}: dsrun needs a 'pipe' axis, optionally 'data',"
                         " and no model parallelism ('model' of size 1)")
    if num_stages is not None and num_stages != topology.get_dim("pipe"):
        raise UsageError(f"PipelineModule num_stages={num_stages} and a topology of {topology.get_dim('pipe')} stages"
                         " disagree: give only one of them")
    if topology.world_size() != world_size:
        raise UsageError(f"PipelineModule topology spans {topology.world_size()} ranks but the world has {world_size}")
    return topology


def _check_layers(specs: Sequence[Any]) -> None:
    """Every rank checks the whole list, so a bad layer fails on all ranks alike rather than on its stage only."""
    for idx, layer in enumerate(specs):
        if isinstance(layer, PipelineModule):
            raise UsageError(f"layer {idx} is a PipelineModule: nesting pipelines is not supported; list its layers")
        if not (isinstance(layer, (LayerSpec, nn.Module)) or callable(layer)):
            raise UsageError(f"layer {idx} ({type(layer).__name__}) is not a module, LayerSpec or callable")
