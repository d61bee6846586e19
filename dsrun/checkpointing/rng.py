"""DeepSpeed's (Megatron's) RNG tracker: named generator states that code forks into, so that e.g. the dropout of
tensor-parallel regions draws from a stream of its own, and the seeding functions Megatron calls.

The states are of the accelerator's generator (CUDA's on a GPU, the CPU generator otherwise), as DeepSpeed tracks
`get_accelerator().get_rng_state()`. dsrun.checkpointing.checkpoint puts the tracker's states back as they were
at the forward before it recomputes, so a fork() inside a checkpointed function draws the same numbers again:
torch's checkpoint restores the global generators, but fork() advances the state the tracker stores, and torch
knows nothing of that.

dsrun has no model parallelism, so the tracked "model-parallel" stream is simply a second stream seeded apart from
the default one (its seed is offset by the mpu's tensor-parallel rank when the script configured one, as in
DeepSpeed).
"""

from __future__ import annotations

import contextlib
from typing import Iterator, Mapping

import torch

from dsrun.accelerator import get_accelerator
from dsrun.checkpointing.settings import tensor_model_parallel_rank

MODEL_PARALLEL_RNG_TRACKER_NAME = "model-parallel-rng"  # DeepSpeed's and Megatron's default name
_SEED_OFFSET = 2718  # the model-parallel seed is seed + 2718 + tensor-parallel rank, in DeepSpeed and Megatron


class RNGStatesTracker:
    """DeepSpeed's CudaRNGStatesTracker: `add(name, seed)` a state, `fork(name)` to draw from it."""

    def __init__(self) -> None:
        self.states_: dict[str, torch.Tensor] = {}
        self.seeds_: set[int] = set()  # a seed is used once: two streams with one seed would draw the same numbers

    def reset(self) -> None:
        self.states_ = {}
        self.seeds_ = set()

    def get_states(self) -> dict[str, torch.Tensor]:
        """A copy of the name -> state table (fork() replaces entries, so the copy keeps the states of now)."""
        return dict(self.states_)

    def set_states(self, states: Mapping[str, torch.Tensor]) -> None:
        self.states_ = dict(states)

    def add(self, name: str, seed: int) -> None:
        if seed in self.seeds_:
            raise ValueError(f"RNG tracker: seed {seed} is already used by another state")
        if name in self.states_:
            raise ValueError(f"RNG tracker: a state named {name!r} already exists")
        self.seeds_.add(seed)
        self.states_[name] = _seeded_state(seed)

    @contextlib.contextmanager
    def fork(self, name: str = MODEL_PARALLEL_RNG_TRACKER_NAME) -> Iterator[None]:
        """Draw from the state `name` inside the block; the generator is as before afterwards."""
        if name not in self.states_:
            raise ValueError(f"RNG tracker: no state named {name!r}: call model_parallel_cuda_manual_seed(seed) or"
                             f" get_cuda_rng_tracker().add({name!r}, seed) first")
        accelerator = get_accelerator()
        outside = accelerator.get_rng_state()
        accelerator.set_rng_state(self.states_[name])
        try:
            yield
        finally:
            self.states_[name] = accelerator.get_rng_state()  # the next fork continues the stream
            accelerator.set_rng_state(outside)


CudaRNGStatesTracker = RNGStatesTracker  # DeepSpeed's name

_TRACKER = RNGStatesTracker()


def get_cuda_rng_tracker() -> RNGStatesTracker:
    """The process's tracker (DeepSpeed's name; it tracks the CPU generator when there is no GPU)."""
    return _TRACKER


def model_parallel_cuda_manual_seed(seed: int) -> None:
    """Seed torch with `seed` (the CPU generator and, when present, every CUDA device's: the default stream, the
    same on every rank that passes the same seed) and start the tracker afresh with the model-parallel stream seeded
    with seed + 2718 + the tensor-parallel rank (0 without an mpu), as DeepSpeed does. DeepSpeed needs an mpu from
    configure() here; dsrun, having no model parallelism, does not."""
    _TRACKER.reset()
    torch.manual_seed(seed)
    _TRACKER.add(MODEL_PARALLEL_RNG_TRACKER_NAME, seed + _SEED_OFFSET + tensor_model_parallel_rank())


def model_parallel_reconfigure_tp_seed(seed: int) -> None:
    """Reseed only the model-parallel stream (Megatron calls this when it loads a checkpoint), as DeepSpeed does."""
    with _TRACKER.fork():
        get_accelerator().set_rng_state(_seeded_state(seed + _SEED_OFFSET + tensor_model_parallel_rank()))


def _seeded_state(seed: int) -> torch.Tensor:
    """The accelerator generator's state after manual_seed(seed), from a generator of its own: the global
    generators are left alone (DeepSpeed seeds the global one and puts its state back)."""
    generator = torch.Generator(device=get_accelerator().device_name())
    generator.manual_seed(seed)
    return generator.get_state()
