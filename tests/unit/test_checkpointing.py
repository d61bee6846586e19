"""dsrun.checkpointing.checkpoint: the outputs and gradients of a checkpointed function are exactly those of the plain
one; the forward keeps only the function's inputs and the backward runs it again; the generators (and DeepSpeed's RNG
tracker) give the recomputation the same dropout; cpu_checkpointing and synchronize do what they say."""

from __future__ import annotations

from typing import Any, Callable, Sequence

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import dsrun.checkpointing as ckpt
from dsrun.accelerator import get_accelerator
from dsrun.checkpointing import settings as settings_module
from dsrun.config import parse_run_config

TRACKED = ckpt.MODEL_PARALLEL_RNG_TRACKER_NAME


@pytest.fixture(autouse=True)
def fresh():
    """Each test starts unconfigured with an empty tracker, and leaves it so (both are process-wide)."""
    settings_module.restore_defaults()
    ckpt.get_cuda_rng_tracker().reset()
    yield
    settings_module.restore_defaults()
    ckpt.get_cuda_rng_tracker().reset()


class Block(nn.Module):
    """A pre-norm MLP block with a residual, the kind of layer scripts checkpoint."""

    def __init__(self, width: int = 16, dropout: float = 0.0):
        super().__init__()
        self.norm, self.fc1, self.fc2 = nn.LayerNorm(width), nn.Linear(width, 4 * width), nn.Linear(4 * width, width)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.drop(self.fc2(F.gelu(self.fc1(self.norm(x)))))


class Attention(nn.Module):
    def __init__(self, width: int = 16, heads: int = 4):
        super().__init__()
        self.heads, self.qkv, self.proj = heads, nn.Linear(width, 3 * width), nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, time, width = x.shape
        q, k, v = (t.view(batch, time, self.heads, -1).transpose(1, 2) for t in self.qkv(x).split(width, dim=2))
        return x + self.proj(F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).flatten(2))


class TwoWay(nn.Module):
    """Two tensor inputs, non-tensor arguments, and a tuple out with non-tensors in it."""

    def __init__(self, width: int = 16):
        super().__init__()
        self.a, self.b = nn.Linear(width, width), nn.Linear(width, width)

    def forward(self, x: torch.Tensor, y: torch.Tensor, scale: float, mask: torch.Tensor | None = None,
                mode: str = "tanh") -> tuple[Any, ...]:
        h = torch.tanh(self.a(x)) if mode == "tanh" else self.a(x)
        if mask is not None:
            h = h * mask
        return h * scale + self.b(y), "label", torch.sigmoid(self.b(x * y)), 7


def leaves(*tensors: torch.Tensor, requires_grad: bool = True) -> list[torch.Tensor]:
    return [t.detach().clone().requires_grad_(requires_grad) for t in tensors]


def forward_backward(run: Callable[..., Any], inputs: Sequence[Any], params: Sequence[nn.Parameter]):
    """Outputs, and the gradients of a loss over every float tensor output w.r.t. the inputs and parameters."""
    for param in params:
        param.grad = None
    outputs = run(*inputs)
    flat = outputs if isinstance(outputs, tuple) else (outputs,)
    tensors = [o for o in flat if isinstance(o, torch.Tensor) and o.is_floating_point()]
    loss = sum((o * torch.linspace(-1, 1, o.numel()).view_as(o)).sum() for o in tensors)
    loss.backward()
    grads = [t.grad for t in inputs if isinstance(t, torch.Tensor) and t.requires_grad]
    return outputs, grads + [p.grad for p in params]


def assert_same(plain, checkpointed) -> None:
    (out_a, grads_a), (out_b, grads_b) = plain, checkpointed
    flat_a = out_a if isinstance(out_a, tuple) else (out_a,)
    flat_b = out_b if isinstance(out_b, tuple) else (out_b,)
    assert len(flat_a) == len(flat_b)
    for a, b in zip(flat_a, flat_b, strict=True):
        if isinstance(a, torch.Tensor):
            torch.testing.assert_close(b, a, rtol=0, atol=0)
        else:
            assert a == b
    assert len(grads_a) == len(grads_b) and all(g is not None for g in grads_b)
    for a, b in zip(grads_a, grads_b, strict=True):
        torch.testing.assert_close(b, a, rtol=0, atol=0)


def cases() -> dict[str, tuple[nn.Module, Callable[[], list[Any]]]]:
    torch.manual_seed(0)
    stack = nn.Sequential(Block(), Attention(), Block())
    return {
        "mlp block": (Block(), lambda: leaves(torch.randn(3, 5, 16))),
        "attention": (Attention(), lambda: leaves(torch.randn(2, 6, 16))),
        "three blocks in one checkpoint": (stack, lambda: leaves(torch.randn(2, 6, 16))),
        "two inputs, tuple out": (TwoWay(), lambda: [*leaves(torch.randn(4, 16), torch.randn(4, 16)), 0.5,
                                                     (torch.rand(4, 16) > 0.3).float(), "linear"]),
    }


@pytest.mark.parametrize("case", list(cases()))
def test_gradients_equal_those_without_checkpointing(case):
    module, make_inputs = cases()[case]
    params = list(module.parameters())
    inputs = make_inputs()
    plain = forward_backward(module, inputs, params)
    checkpointed = forward_backward(lambda *a: ckpt.checkpoint(module, *a), make_inputs_like(inputs), params)
    assert_same(plain, checkpointed)


def make_inputs_like(inputs: Sequence[Any]) -> list[Any]:
    return [leaves(t, requires_grad=t.requires_grad)[0] if isinstance(t, torch.Tensor) else t for t in inputs]


def test_the_forward_keeps_only_the_inputs_and_the_backward_recomputes():
    block, calls = Block(), []

    def counted(x):
        calls.append(x.shape)
        return block(x)

    saved: list[torch.Tensor] = []

    def pack(tensor):
        saved.append(tensor)
        return tensor

    x = torch.randn(3, 16, requires_grad=True)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        block(x)
    kept_without = len(saved)
    saved.clear()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = ckpt.checkpoint(counted, x)
    assert kept_without > 4 and len(saved) == 1 and saved[0] is x  # the activations were not kept
    assert len(calls) == 1
    out.sum().backward()
    assert len(calls) == 2  # recomputed in the backward


def test_parameters_get_gradients_when_no_input_requires_grad():
    # DeepSpeed's (reentrant) checkpoint gives the parameters no gradient here: a first layer fed token ids.
    block = Block()
    x = torch.randn(3, 16)
    plain = forward_backward(block, [x], list(block.parameters()))
    checkpointed = forward_backward(lambda t: ckpt.checkpoint(block, t), [x], list(block.parameters()))
    assert_same(plain, checkpointed)


def test_returns_what_deepspeed_returns():
    x = torch.randn(2, 3, requires_grad=True)
    assert isinstance(ckpt.checkpoint(torch.tanh, x), torch.Tensor)
    single = ckpt.checkpoint(lambda t: (t * 2,), x)  # DeepSpeed unwraps a one-element tuple
    assert isinstance(single, torch.Tensor)
    pair = ckpt.checkpoint(lambda t: [t * 2, t * 3], x)  # and returns a list as a tuple
    assert isinstance(pair, tuple) and len(pair) == 2
    out, label, count = ckpt.checkpoint(lambda t, word, n: (t.exp(), word, n + 1), x, "w", 4)
    assert (label, count) == ("w", 5)
    out.sum().backward()
    torch.testing.assert_close(x.grad, x.detach().exp())


def test_tensor_keyword_arguments_get_gradients():
    x, bias = torch.randn(2, 3, requires_grad=True), torch.randn(3, requires_grad=True)
    ckpt.checkpoint(lambda t, *, shift: (t * shift).sum(), x, shift=bias).backward()
    torch.testing.assert_close(bias.grad, x.detach().sum(0))
    torch.testing.assert_close(x.grad, bias.detach().expand(2, 3))


def test_dropout_with_the_same_seed_gives_identical_gradients():
    block = Block(dropout=0.5)
    params = list(block.parameters())
    x = torch.randn(4, 16)
    torch.manual_seed(7)
    plain = forward_backward(block, leaves(x), params)
    after_plain = torch.rand(4)
    torch.manual_seed(7)
    checkpointed = forward_backward(lambda t: ckpt.checkpoint(block, t), leaves(x), params)
    after_checkpointed = torch.rand(4)
    assert_same(plain, checkpointed)
    # The recomputation drew its mask from a restored generator and put it back: the stream goes on as without.
    torch.testing.assert_close(after_checkpointed, after_plain, rtol=0, atol=0)


def test_a_tracker_fork_inside_a_checkpoint_draws_the_same_mask_again():
    block = Block()
    params = list(block.parameters())
    tracker = ckpt.get_cuda_rng_tracker()

    def forked_dropout(x):
        h = block(x)
        with tracker.fork():
            return F.dropout(h, 0.5)

    x = torch.randn(4, 16)
    ckpt.model_parallel_cuda_manual_seed(1234)
    plain = forward_backward(forked_dropout, leaves(x), params)
    tracked_after_plain = tracker.get_states()[TRACKED]
    ckpt.model_parallel_cuda_manual_seed(1234)
    checkpointed = forward_backward(lambda t: ckpt.checkpoint(forked_dropout, t), leaves(x), params)
    assert_same(plain, checkpointed)
    # The recomputation's fork did not advance the stream a second time.
    assert torch.equal(tracker.get_states()[TRACKED], tracked_after_plain)


def first_draws(seed: int, count: int = 6) -> torch.Tensor:
    return torch.rand(count, generator=torch.Generator().manual_seed(seed))


def test_the_tracker_forks_into_its_own_stream_and_leaves_the_default_one_alone():
    tracker = ckpt.get_cuda_rng_tracker()
    torch.manual_seed(0)
    tracker.add("stream", 99)
    with tracker.fork("stream"):
        first = torch.rand(3)
    outside = torch.rand(6)
    with tracker.fork("stream"):
        second = torch.rand(3)
    assert torch.equal(torch.cat([first, second]), first_draws(99))  # one stream, continued by the next fork
    assert torch.equal(outside, first_draws(0))  # the default generator drew as if no fork had happened
    with pytest.raises(ValueError, match="already used"):
        tracker.add("other", 99)
    with pytest.raises(ValueError, match="already exists"):
        tracker.add("stream", 100)
    with pytest.raises(ValueError, match="model_parallel_cuda_manual_seed"):
        with tracker.fork("missing"):
            pass


class FakeMPU:
    def get_tensor_model_parallel_rank(self) -> int:
        return 3


@pytest.mark.parametrize("mpu, rank", [(None, 0), (FakeMPU(), 3)])
def test_model_parallel_seeds(mpu, rank, capsys):
    if mpu is not None:
        ckpt.configure(mpu)
    ckpt.model_parallel_cuda_manual_seed(5)
    ckpt.model_parallel_cuda_manual_seed(5)  # starts the tracker afresh: no "seed already used"
    default = torch.rand(6)
    with ckpt.get_cuda_rng_tracker().fork():
        tracked = torch.rand(6)
    assert torch.equal(default, first_draws(5))
    assert torch.equal(tracked, first_draws(5 + 2718 + rank))
    ckpt.model_parallel_reconfigure_tp_seed(40)
    after = torch.rand(6)
    with ckpt.get_cuda_rng_tracker().fork():
        reseeded = torch.rand(6)
    assert torch.equal(reseeded, first_draws(40 + 2718 + rank))
    assert torch.equal(after, torch.rand(12, generator=torch.Generator().manual_seed(5))[6:])  # default untouched


class RecordingSaveOnCpu(torch.autograd.graph.save_on_cpu):
    """torch's save_on_cpu, recording the pin_memory it was asked for and every tensor it packs."""

    pins: list[bool] = []
    packed: list[tuple[torch.device, torch.Tensor]] = []

    def __init__(self, pin_memory: bool = False, device_type: str = "cuda"):
        super().__init__(pin_memory=False)  # pinning needs CUDA; the request is what is checked
        RecordingSaveOnCpu.pins.append(pin_memory)
        pack = self.pack_hook

        def recording_pack(tensor: torch.Tensor):
            result = pack(tensor)
            RecordingSaveOnCpu.packed.append(result)
            return result

        self.pack_hook = recording_pack


@pytest.fixture
def recording(monkeypatch):
    RecordingSaveOnCpu.pins, RecordingSaveOnCpu.packed = [], []
    monkeypatch.setattr("dsrun.checkpointing.function.save_on_cpu", RecordingSaveOnCpu)
    return RecordingSaveOnCpu


def run_two_way(module: TwoWay, x: torch.Tensor, y: torch.Tensor):
    params = list(module.parameters())
    return forward_backward(lambda a, b: ckpt.checkpoint(module, a, b, 2.0, None, "tanh"), leaves(x, y), params)


@pytest.mark.parametrize("how", ["configure", "config section"])
def test_cpu_checkpointing_keeps_the_saved_inputs_in_cpu_memory(how, recording):
    module, x, y = TwoWay(), torch.randn(4, 16), torch.randn(4, 16)
    plain = run_two_way(module, x, y)
    assert recording.pins == []  # off by default
    if how == "configure":
        ckpt.configure(None, checkpoint_in_cpu=True)
    else:  # what dsrun.initialize does with the run's config, without any configure() call
        ckpt.configure_from(parse_run_config({"activation_checkpointing": {"cpu_checkpointing": True}})
                            .activation_checkpointing)
    checkpointed = run_two_way(module, x, y)
    assert_same(plain, checkpointed)
    assert recording.pins == [False]  # CPU inputs: nothing to pin
    # Exactly the two tensor inputs went through it (the function's own activations are recomputed, not kept),
    # each held as a CPU tensor with the input's values.
    assert [tuple(t.shape) for _, t in recording.packed] == [(4, 16), (4, 16)]
    assert all(device.type == "cpu" and t.device.type == "cpu" for device, t in recording.packed)
    assert torch.equal(recording.packed[0][1], x) and torch.equal(recording.packed[1][1], y)


@pytest.fixture
def cuda_events(monkeypatch):
    """Pretend CUDA is in use and record each torch.cuda.synchronize() among the function's calls."""
    get_accelerator()  # chosen before CUDA is faked, so the fake cannot pick it
    events: list[str] = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: events.append("sync"))
    return events


def test_synchronize_waits_at_every_boundary(cuda_events):
    block = Block()

    def traced(x):
        cuda_events.append("fn")
        return block(x)

    x = torch.randn(2, 16, requires_grad=True)
    out = ckpt.checkpoint(traced, x)
    assert cuda_events == ["fn"]
    out.sum().backward()
    ckpt.configure(None, synchronize=True)
    cuda_events.clear()
    out = ckpt.checkpoint(traced, x)
    assert cuda_events == ["sync", "fn", "sync"]  # around the forward
    out.sum().backward()
    assert cuda_events == ["sync", "fn", "sync", "sync", "fn", "sync"]  # before the recomputation, after the grads
    ckpt.checkpoint(traced, x).sum().backward()
    assert cuda_events.count("sync") == 8  # the hook fired once for its backward only: no hooks pile up


def test_synchronize_does_not_touch_cuda_on_the_cpu(monkeypatch):
    calls: list[int] = []
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: calls.append(1))
    ckpt.configure(None, synchronize=True)
    x = torch.randn(2, 16, requires_grad=True)
    ckpt.checkpoint(Block(), x).sum().backward()
    assert calls == [] and x.grad is not None


def test_non_reentrant_checkpoint_is_the_same_checkpoint():
    block = Block()
    x = torch.randn(3, 16)
    plain = forward_backward(block, leaves(x), list(block.parameters()))
    other = forward_backward(lambda t: ckpt.non_reentrant_checkpoint(block, t), leaves(x), list(block.parameters()))
    assert_same(plain, other)
