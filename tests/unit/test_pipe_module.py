"""PipelineModule in one process: each stage is built with rank=/world_size= as that rank of that world would."""

import gc
import weakref

import pytest
import torch
from torch import nn

from dsrun.errors import UsageError
from dsrun.pipe import (
    LayerSpec,
    PipeDataParallelTopology,
    PipelineModule,
    ProcessTopology,
    TiedLayerSpec,
)
from dsrun.pipe.topology import PipeModelDataParallelTopology


def stage(layers, num_stages, rank, world=None, **kwargs):
    return PipelineModule(layers, num_stages=num_stages, rank=rank, world_size=world or num_stages, **kwargs)


def n_params(module):
    return sum(p.numel() for p in module.parameters())


class Recorded(nn.Linear):
    """A Linear that records the tag of every build that allocated memory (not on the meta device)."""

    built: list = []

    def __init__(self, tag, width=4):
        super().__init__(width, width)
        if self.weight.device.type != "meta":
            Recorded.built.append(tag)


@pytest.fixture
def recorded():
    Recorded.built = []
    return Recorded.built


# ---- building: own stage only ----

def test_only_own_stage_layers_are_built(recorded):
    # 6 equal layers over 3 stages by parameters: two each.
    specs = [LayerSpec(Recorded, i) for i in range(6)]
    for rank in range(3):
        recorded.clear()
        module = stage(specs, 3, rank)
        start, stop = module.layer_range
        assert (start, stop) == (2 * rank, 2 * rank + 2)
        assert recorded == list(range(start, stop))  # counting the others went through the meta device
        assert module.layer_indices == list(range(start, stop))
        assert n_params(module) == 2 * (4 * 4 + 4)


def test_stage_parameters_are_its_share():
    widths = [8, 2, 2, 2, 6]  # Linear(w, w): w*w + w parameters each: 72, 6, 6, 6, 42
    specs = [LayerSpec(nn.Linear, w, w) for w in widths]
    counts = [w * w + w for w in widths]
    modules = [stage(specs, 2, rank) for rank in range(2)]
    # Spread: 72 | 60 (12) beats 78 | 54 (24) and 84 | 48 (36) -> [0, 1, 5].
    assert modules[0].parts == [0, 1, 5]
    for module in modules:
        start, stop = module.layer_range
        assert n_params(module) == sum(counts[start:stop])


class HalfFrozen(nn.Module):
    def __init__(self):
        super().__init__()
        self.frozen = nn.Linear(10, 10).requires_grad_(False)
        self.trained = nn.Linear(2, 2)

    def forward(self, x):
        return x


def test_only_trainable_parameters_weigh():
    # Trainable counts 6, 6, 6, 6 (the frozen 110 ignored, as DeepSpeed): 2 | 2 layers; counting all would give
    # 116, 6, 6, 6 -> 1 | 3.
    specs = [LayerSpec(HalfFrozen), LayerSpec(nn.Linear, 2, 2), LayerSpec(nn.Linear, 2, 2), LayerSpec(nn.Linear, 2, 2)]
    assert stage(specs, 2, 0).parts == [0, 2, 4]


def test_given_modules_are_dropped_by_other_stages():
    first, second = nn.Linear(4, 4), nn.Linear(4, 4)
    gone = weakref.ref(first)
    layers = [first, second]
    module = stage(layers, 2, rank=1, partition_method="uniform")
    del layers, first
    gc.collect()
    assert gone() is None  # stage 1 kept no reference to stage 0's module
    assert list(module.children()) == [module.tied_modules, second]


def test_parameter_names_are_global_layer_indices():
    specs = [LayerSpec(nn.Linear, 2, 2) for _ in range(4)]
    module = stage(specs, 2, rank=1, partition_method="uniform")
    assert sorted(module.state_dict()) == ["2.bias", "2.weight", "3.bias", "3.weight"]


def test_counting_falls_back_when_meta_cannot_build(recorded):
    class NeedsValues(nn.Linear):
        def __init__(self):
            super().__init__(3, 3)
            float(self.weight.detach().sum())  # reading a value fails on the meta device
            Recorded.built.append("values")

    module = stage([LayerSpec(NeedsValues), LayerSpec(Recorded, 1, width=3)], 2, rank=1)
    assert module.parts == [0, 1, 2] and recorded == ["values", 1]  # counted for real, then dropped
    assert n_params(module) == 12


def test_layer_spec_needs_a_module_class():
    with pytest.raises(UsageError, match="must be an nn.Module class"):
        LayerSpec(lambda: nn.Linear(1, 1))


# ---- seeds ----

def test_seed_layers_seeds_each_build_with_base_plus_index():
    specs = [LayerSpec(nn.Linear, 3, 3) for _ in range(4)]
    torch.manual_seed(0)
    split = [stage(specs, 2, rank, seed_layers=True, base_seed=100) for rank in range(2)]
    whole = stage(specs, 1, 0, seed_layers=True, base_seed=100)
    for idx in range(4):
        torch.manual_seed(100 + idx)
        expected = nn.Linear(3, 3).weight
        holder = split[0] if idx < 2 else split[1]
        assert torch.equal(getattr(holder, str(idx)).weight, expected)
        assert torch.equal(getattr(whole, str(idx)).weight, expected)  # the same weights whatever the stages


def test_seed_fn_gets_build_then_forward_seeds():
    seeds = []
    layers = [nn.Identity(), lambda x: x, nn.Identity()]
    module = stage(layers, 1, 0, seed_layers=True, seed_fn=seeds.append, base_seed=10)
    assert seeds == [10, 11, 12]  # construction: base_seed + layer index
    seeds.clear()
    module(torch.zeros(1))
    module(torch.zeros(1))
    # forward: base_seed * (call number + 1) + layer index, as DeepSpeed's micro_offset
    assert seeds == [20, 21, 22, 30, 31, 32]


# ---- tied layers ----

def tie_forward(module, x):
    return x @ module.weight


def tied_layers():
    return [
        TiedLayerSpec("embed", nn.Linear, 4, 4, bias=False),
        LayerSpec(nn.Linear, 4, 4),
        LayerSpec(nn.Linear, 4, 4),
        TiedLayerSpec("embed", nn.Linear, 4, 4, bias=False, forward_fn=tie_forward),
    ]


def test_tied_info_for_the_engine():
    first = stage(tied_layers(), 2, rank=0, world=4, partition_method="uniform")
    last = stage(tied_layers(), 2, rank=3, world=4, partition_method="uniform")
    for module in (first, last):
        assert module.tied_keys == ["embed"]
        assert module.tied_stages == {"embed": [0, 1]}
        assert module.tied_rank_groups("embed") == [[0, 2], [1, 3]]  # per data index, ordered by stage
        assert module.tied_weight_attrs == {"embed": ["weight"]}
        assert module.tied_parameters() == {"embed": {"weight": module.tied_modules["embed"].weight}}
    assert first.layer_range == (0, 2) and last.layer_range == (2, 4)
    assert first.forward_funcs[0] is first.tied_modules["embed"]  # no forward_fn: the module itself
    assert last.forward_funcs[1].func is tie_forward and last.forward_funcs[1].args == (last.tied_modules["embed"],)


def test_tied_key_twice_on_one_stage_shares_one_module():
    module = stage(tied_layers(), 1, 0)
    assert len(module.tied_modules) == 1
    shared = module.tied_modules["embed"]
    assert module.forward_funcs[0] is shared and module.forward_funcs[3].args == (shared,)
    assert n_params(module) == 16 + 2 * 20  # the shared weight counts once
    x = torch.randn(2, 4)
    expected = module.forward_funcs[2](module.forward_funcs[1](shared(x))) @ shared.weight
    assert torch.allclose(module(x), expected)


def test_tied_weight_attr_paths():
    class Wrapper(nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = nn.Linear(2, 2)

        def forward(self, x):
            return self.inner(x)

    module = stage([TiedLayerSpec("w", Wrapper, tied_weight_attr=["inner.weight", "inner.bias"])], 1, 0)
    inner = module.tied_modules["w"].inner
    assert module.tied_parameters() == {"w": {"inner.weight": inner.weight, "inner.bias": inner.bias}}
    with pytest.raises(UsageError, match="tied_weight_attr 'inner.nothing'"):
        stage([TiedLayerSpec("w", Wrapper, tied_weight_attr="inner.nothing")], 1, 0)


def test_tied_key_must_name_a_submodule():
    with pytest.raises(UsageError, match="TiedLayerSpec key 'a.b'"):
        TiedLayerSpec("a.b", nn.Linear, 2, 2)


# ---- bad input ----

@pytest.mark.parametrize(("kwargs", "message"), [
    ({"num_stages": 3, "world_size": 4}, "num_stages=3 does not divide the world size 4"),
    ({"num_stages": 4, "world_size": 4}, "2 layers cannot fill 4 pipeline stages"),
    ({"world_size": 2}, "needs num_stages or topology"),
    ({"num_stages": 1, "topology": PipeDataParallelTopology(2, 1), "world_size": 2}, "disagree"),
    ({"topology": PipeDataParallelTopology(2, 2), "world_size": 2}, "topology spans 4 ranks but the world has 2"),
    ({"topology": ProcessTopology(["pipe", "model"], [1, 2]), "world_size": 2}, "no model parallelism"),
    ({"topology": ProcessTopology(["data"], [2]), "world_size": 2}, "needs a 'pipe' axis"),
    ({"num_stages": 1, "rank": 2, "world_size": 2}, "rank=2 is outside world_size=2"),
    ({"num_stages": 1, "partition_method": "nonsense"}, "partition_method 'nonsense'"),
    ({"num_stages": 1, "activation_checkpoint_interval": -1}, "activation_checkpoint_interval=-1"),
    ({"num_stages": 1, "checkpointable_layers": "Linear"}, "checkpointable_layers='Linear'"),
])
def test_bad_arguments(kwargs, message):
    with pytest.raises(UsageError, match=message) as raised:
        PipelineModule([nn.Linear(1, 1), nn.Linear(1, 1)], **kwargs)
    assert "\n" not in str(raised.value)


def test_consistent_num_stages_and_topology_are_accepted():
    module = PipelineModule([nn.Linear(1, 1)] * 2, num_stages=2, topology=PipeDataParallelTopology(2, 1),
                            rank=1, world_size=2)
    assert module.stage_id == 1


def test_model_topology_of_one_is_accepted():
    module = PipelineModule([nn.Linear(1, 1)] * 2, topology=PipeModelDataParallelTopology(2, 1, 2), rank=3,
                            world_size=4)
    assert (module.stage_id, module.data_parallel_id, module.num_stages) == (1, 1, 2)
    assert module.topology().pipeline_ranks() == [[0, 2], [1, 3]]


@pytest.mark.parametrize(("layer", "message"), [
    (42, r"layer 1 \(int\) is not a module, LayerSpec or callable"),
    (PipelineModule([nn.Identity()], num_stages=1), "layer 1 is a PipelineModule"),
])
def test_bad_layers(layer, message):
    with pytest.raises(UsageError, match=message):
        PipelineModule([nn.Identity(), layer], num_stages=1)


def test_rank_override_needs_no_torch_distributed(monkeypatch, capsys):
    # In a worker (torch.distributed initialized) a mistake ends the process with one line and exit code 2.
    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: True)
    with pytest.raises(SystemExit) as exited:
        PipelineModule([nn.Identity()], num_stages=1, rank=0, world_size=1)
    assert exited.value.code == 2
    assert "torch.distributed, which is initialized" in capsys.readouterr().err


# ---- forward ----

def mlp_layers():
    torch.manual_seed(3)
    return [nn.Linear(5, 6), nn.Tanh(), nn.Linear(6, 6), lambda x: x * 2, nn.Linear(6, 3), nn.Tanh()]


@pytest.mark.parametrize("num_stages", [1, 2, 3])
def test_forward_equals_sequential_of_the_stage(num_stages):
    layers = mlp_layers()
    x = torch.randn(4, 5)
    out = x
    for rank in range(num_stages):
        module = stage(layers, num_stages, rank)
        start, stop = module.layer_range
        expected = x
        for layer in layers[:stop]:
            expected = layer(expected)
        reference_in = out
        out = module(out)
        assert torch.equal(out, nn.Sequential(*[_as_module(f) for f in layers[start:stop]])(reference_in))
        assert torch.equal(out, expected)


class _Fn(nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, x):
        return self.fn(x)


def _as_module(layer):
    return layer if isinstance(layer, nn.Module) else _Fn(layer)


class TakesPair(nn.Module):
    """Receives the previous layer's tuple as ONE argument (DeepSpeed calls layer(x), never layer(*x))."""

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(3.0))

    def forward(self, pair):
        assert isinstance(pair, tuple) and len(pair) == 2
        a, b = pair
        return a * self.scale, b + 1


def tuple_layers():
    return [nn.Linear(3, 3), lambda x: (x, x * 2), TakesPair(), lambda pair: pair[0] - pair[1]]


def test_tuples_pass_as_one_argument():
    torch.manual_seed(0)
    layers = tuple_layers()
    x = torch.randn(2, 3)
    h = layers[0](x)
    assert torch.allclose(stage(layers, 1, 0)(x), h * 3 - (2 * h + 1))
    # Split so a tuple crosses into the next stage's input.
    first, second = stage(layers, 2, 0, partition_method="uniform"), stage(layers, 2, 1, partition_method="uniform")
    middle = first(x)
    assert isinstance(middle, tuple)
    assert torch.allclose(second(middle), h * 3 - (2 * h + 1))


def test_several_arguments_are_the_first_layers_tuple():
    # torch.distributed.pipelining's PipelineStage calls its submodule with the received tensors unpacked.
    torch.manual_seed(0)
    module = stage(tuple_layers()[2:], 1, 0)
    a, b = torch.randn(2), torch.randn(2)
    assert torch.equal(module(a, b), module((a, b)))
    assert torch.equal(module(a, b), a * 3 - (b + 1))


# ---- activation checkpointing ----

class CountingCheckpoint:
    def __init__(self):
        self.calls = 0

    def __call__(self, function, *args):
        self.calls += 1
        return torch.utils.checkpoint.checkpoint(function, *args, use_reentrant=False)


def grads_after_backward(module, x):
    module.zero_grad()
    out = module(x)
    (out[0] if isinstance(out, tuple) else out).pow(2).sum().backward()
    return out, {name: p.grad.clone() for name, p in module.named_parameters()}


@pytest.mark.parametrize(("layers", "interval"), [(mlp_layers, 2), (mlp_layers, 4), (tuple_layers, 1),
                                                  (tuple_layers, 2)])
def test_checkpointing_matches_plain_forward_and_backward(layers, interval):
    built = layers()
    x = torch.randn(3, built[0].in_features, requires_grad=True)
    plain = stage(built, 1, 0)
    counting = CountingCheckpoint()
    checkpointed = stage(built, 1, 0, activation_checkpoint_interval=interval, activation_checkpoint_func=counting)
    out_plain, grads_plain = grads_after_backward(plain, x)
    out_ckpt, grads_ckpt = grads_after_backward(checkpointed, x)
    assert counting.calls > 0
    assert torch.equal(out_plain, out_ckpt)
    assert grads_plain.keys() == grads_ckpt.keys()
    for name in grads_plain:
        assert torch.allclose(grads_plain[name], grads_ckpt[name]), name


class TakesOne(nn.Module):
    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(2.0))

    def forward(self, single):
        assert isinstance(single, tuple) and len(single) == 1
        return single[0] * self.scale


def test_one_element_tuple_stays_a_tuple_across_checkpointed_chunks():
    # Chunks of 2: [Linear, lambda -> (h,)] then [TakesOne, Linear], both checkpointed. DeepSpeed would unwrap the
    # 1-tuple at the chunk boundary (it cannot tell it from a single tensor); dsrun hands a layer what the previous
    # layer returned, with checkpointing or without.
    torch.manual_seed(0)
    layers = [nn.Linear(3, 3), lambda x: (x,), TakesOne(), nn.Linear(3, 3)]
    x = torch.randn(2, 3)
    counting = CountingCheckpoint()
    _, plain = grads_after_backward(stage(layers, 1, 0), x)
    _, ckpt = grads_after_backward(stage(layers, 1, 0, activation_checkpoint_interval=2,
                                         activation_checkpoint_func=counting), x)
    assert counting.calls == 2
    assert all(torch.allclose(plain[name], ckpt[name]) for name in plain)


def test_checkpointing_default_function_gradients():
    built = mlp_layers()
    x = torch.randn(3, 5)
    _, plain = grads_after_backward(stage(built, 1, 0), x)
    _, ckpt = grads_after_backward(stage(built, 1, 0, activation_checkpoint_interval=2), x)
    assert all(torch.allclose(plain[name], ckpt[name]) for name in plain)


def test_which_chunks_are_checkpointed():
    layers = [nn.Linear(2, 2), nn.Tanh(), nn.Tanh(), lambda x: x, nn.Linear(2, 2)]
    x = torch.randn(1, 2)
    # Chunks of 2: [Linear, Tanh] has parameters, [Tanh, lambda] none (skipped), [Linear] has.
    counting = CountingCheckpoint()
    module = stage(layers, 1, 0, activation_checkpoint_interval=2, activation_checkpoint_func=counting)
    module(x)
    assert counting.calls == 2
    # With checkpointable_layers only chunks made wholly of listed classes: [Linear] alone.
    counting.calls = 0
    stage(layers, 1, 0, activation_checkpoint_interval=2, activation_checkpoint_func=counting,
          checkpointable_layers=["Linear"])(x)
    assert counting.calls == 1
    # Not in eval mode or without grad.
    counting.calls = 0
    module.eval()
    module(x)
    module.train()
    with torch.no_grad():
        module(x)
    assert counting.calls == 0
    # The engine may set the interval after construction (DeepSpeed's pipeline config does).
    module.activation_checkpoint_interval = 5
    module(x)
    assert counting.calls == 1


# ---- checkpoints by layer index ----

def test_layer_state_dicts_reload_under_another_partition():
    torch.manual_seed(1)
    specs = [LayerSpec(nn.Linear, 3, 3), lambda x: x, LayerSpec(nn.Linear, 3, 3), LayerSpec(nn.Linear, 3, 3)]
    saved = {}
    for rank in range(2):
        module = stage(specs, 2, rank, partition_method="uniform", seed_layers=True, base_seed=7)
        saved.update(module.layer_state_dicts())
    assert sorted(saved) == [0, 2, 3]  # the lambda has no state
    restored = stage(specs, 1, 0, seed_layers=True, base_seed=99)  # one stage: layers of both saved stages
    assert not torch.equal(getattr(restored, "2").weight, saved[2]["weight"])
    restored.load_layer_state_dicts(saved)
    for idx in (0, 2, 3):
        assert torch.equal(getattr(restored, str(idx)).weight, saved[idx]["weight"])
        assert torch.equal(getattr(restored, str(idx)).bias, saved[idx]["bias"])
    last = stage(specs, 3, 2, partition_method="uniform")  # [0, 2, 3, 4]: layer 3 alone, other entries ignored
    last.load_layer_state_dicts(saved)
    assert torch.equal(getattr(last, "3").weight, saved[3]["weight"])
    with pytest.raises(UsageError, match=r"no state for layers \[3\] of pipeline stage 2"):
        last.load_layer_state_dicts({2: saved[2]})
    last.load_layer_state_dicts({2: saved[2]}, strict=False)


def test_tied_layers_are_saved_at_each_index():
    module = stage(tied_layers(), 1, 0)
    states = module.layer_state_dicts()
    assert sorted(states) == [0, 1, 2, 3]
    assert torch.equal(states[0]["weight"], states[3]["weight"])


# ---- the partition report ----

def test_rank_zero_prints_the_partition(capsys):
    layers = [LayerSpec(nn.Linear, 4, 4), nn.ReLU(), nn.ReLU(), lambda x: x, TiedLayerSpec("head", nn.Linear, 4, 2)]
    stage(layers, 2, 0, world=4, loss_fn=nn.CrossEntropyLoss())
    lines = capsys.readouterr().err.splitlines()
    assert lines == [
        "dsrun: pipeline: 2 stages x 2 data-parallel, partition_method=parameters, loss=CrossEntropyLoss",
        "dsrun:   stage 0: layers 0-3, 20 params: Linear, ReLU x2, lambda",
        "dsrun:   stage 1: layer 4, 10 params: Linear[tied head]",
    ]
    stage(layers, 2, 1, world=4)
    assert capsys.readouterr().err == ""
