"""enable_cuda_graph's cache of captured forwards, on the CPU: a stand-in capture records each capture and replays
by running the model on the static inputs and writing into the captured output, as a CUDA graph does."""

import torch
from torch import nn

from dsrun.inference.cuda_graphs import GraphedForward


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.linear = nn.Linear(4, 3)

    def forward(self, x, bias=None, factor=1.0):
        out = self.linear(x) * factor
        return out if bias is None else out + bias


class FakeCapture:
    def __init__(self):
        self.captured = 0

    def __call__(self, run):
        self.captured += 1
        output = run()

        def replay():
            output.copy_(run())  # a graph reads its static inputs and writes its static output

        return replay, output


def graphed(cache_size=8):
    capture = FakeCapture()
    return GraphedForward(Net().eval(), capture=capture, cache_size=cache_size), capture


def test_one_capture_per_signature_and_new_inputs_are_copied_in():
    forward, capture = graphed()
    with torch.no_grad():
        for seed in range(3):
            x, bias = torch.randn(2, 4, generator=torch.Generator().manual_seed(seed)), torch.randn(3)
            assert torch.equal(forward(x, bias=bias), forward.module(x, bias=bias))
    assert capture.captured == 1


def test_the_output_is_the_graphs_own_memory_overwritten_by_the_next_call():
    forward, _ = graphed()
    with torch.no_grad():
        first = forward(torch.zeros(2, 4))
        second = forward(torch.ones(2, 4))
    assert first is second


def test_a_new_shape_dtype_or_plain_value_captures_again():
    forward, capture = graphed()
    x = torch.randn(2, 4)
    with torch.no_grad():
        forward(x)
        forward(torch.randn(5, 4))  # another shape
        forward(x, factor=2.0)  # another plain value
        forward(x, bias=torch.zeros(3))  # another argument
        assert torch.equal(forward(x * 3), forward.module(x * 3))  # the first graph still replays right
    assert capture.captured == 4
    forward.module.double()
    with torch.no_grad():
        forward(x.double())  # another dtype
    assert capture.captured == 5


def test_the_least_recently_used_signature_is_dropped():
    forward, capture = graphed(cache_size=2)
    a, b, c = torch.randn(1, 4), torch.randn(2, 4), torch.randn(3, 4)
    with torch.no_grad():
        forward(a)
        forward(b)
        forward(a)  # a is now the most recent
        forward(c)  # drops b
        assert capture.captured == 3 and len(forward.graphs) == 2
        forward(a)
        assert capture.captured == 3
        assert torch.equal(forward(b), forward.module(b))  # captured again
    assert capture.captured == 4


def test_arguments_that_are_not_tensors_or_plain_values_run_uncaptured():
    capture = FakeCapture()
    forward = GraphedForward(nn.Identity(), capture=capture)
    cache = [torch.randn(2)]  # a list of tensors, as a KV cache object would be
    assert forward(cache) is cache and capture.captured == 0 and not forward.graphs
