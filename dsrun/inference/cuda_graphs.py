"""init_inference(enable_cuda_graph=True): the engine's forward captured as a CUDA graph, once per input signature.

A call's signature is the shape, dtype and device of every tensor argument and the value of every other one. The
first call with a signature runs the model a few times on a side stream (lazy initialisation, cuBLAS workspaces and
allocator growth must not happen during capture), then captures one run reading static copies of the inputs. Every
later call with that signature copies its inputs into those copies and replays the graph: the kernels are launched
as one unit, without Python or the CPU in between. A new signature captures again; the last GRAPH_CACHE_SIZE
signatures are kept, the least recently used one dropped (with its graph's memory).

What replays return is the graph's own output memory: the next call with the same signature overwrites it (clone
an output to keep it). Calls whose arguments are not tensors or plain values (a KV-cache object, lists of tensors)
run uncaptured, and so does `generate()`: its KV cache, and so its shapes, change with every token.

The cache is written against a `Capture` function, so its keying and copying run on the CPU in the tests with a
stand-in for `capture_on_cuda`, the only part that needs a GPU.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any

import torch
from torch import nn

from dsrun.errors import UsageError

GRAPH_CACHE_SIZE = 8
WARMUP_RUNS = 3  # what PyTorch's CUDA graph notes use before capturing a whole network

# Given `run` (the model on the static inputs), capture it: returns the replay function and the captured output.
Capture = Callable[[Callable[[], Any]], tuple[Callable[[], None], Any]]


def capture_on_cuda(run: Callable[[], Any]) -> tuple[Callable[[], None], Any]:
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(WARMUP_RUNS):
            run()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    try:
        with torch.cuda.graph(graph):  # captures on its own side stream, after a synchronize
            output = run()
    except RuntimeError as err:  # an operation a graph cannot hold: a host sync (.item()), a CPU tensor, ...
        first = str(err).strip().splitlines()[0][:160] if str(err).strip() else type(err).__name__
        raise UsageError(f"enable_cuda_graph: the model's forward cannot be captured as a CUDA graph ({first}):"
                         " remove enable_cuda_graph") from None
    return graph.replay, output


def _signature(args: tuple, kwargs: dict[str, Any]) -> tuple | None:
    """The cache key of a call, or None when an argument is neither a tensor nor a hashable plain value."""
    key: list[Hashable] = []
    for name, value in [*enumerate(args), *sorted(kwargs.items())]:
        if isinstance(value, torch.Tensor):
            key.append((name, "tensor", tuple(value.shape), value.dtype, value.device))
        elif value is None or isinstance(value, (bool, int, float, str)):
            key.append((name, "value", type(value), value))
        else:
            return None
    return tuple(key)


class _Captured:
    """One signature's graph: the static inputs it reads and the output it writes."""

    def __init__(self, module: nn.Module, args: tuple, kwargs: dict[str, Any], capture: Capture):
        def static(value: Any) -> Any:
            return value.clone() if isinstance(value, torch.Tensor) else value

        self.args = tuple(static(value) for value in args)
        self.kwargs = {name: static(value) for name, value in kwargs.items()}
        # Capturing records the kernels without running them: the first result comes from a replay, as later ones.
        self.replay, self.output = capture(lambda: module(*self.args, **self.kwargs))

    def __call__(self, args: tuple, kwargs: dict[str, Any]) -> Any:
        for mine, new in zip(self.args, args, strict=True):
            if isinstance(mine, torch.Tensor):
                mine.copy_(new)
        for name, new in kwargs.items():
            if isinstance(new, torch.Tensor):
                self.kwargs[name].copy_(new)
        self.replay()
        return self.output


class GraphedForward:
    def __init__(self, module: nn.Module, capture: Capture = capture_on_cuda, cache_size: int = GRAPH_CACHE_SIZE):
        self.module = module
        self.capture = capture
        self.cache_size = cache_size
        self.graphs: OrderedDict[tuple, _Captured] = OrderedDict()

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        key = _signature(args, kwargs)
        if key is None:
            return self.module(*args, **kwargs)
        if key in self.graphs:
            self.graphs.move_to_end(key)
        else:
            if len(self.graphs) >= self.cache_size:
                self.graphs.popitem(last=False)
            self.graphs[key] = _Captured(self.module, args, kwargs, self.capture)
        return self.graphs[key](args, kwargs)
