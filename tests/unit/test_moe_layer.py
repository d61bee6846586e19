"""dsrun.moe.layer.MoE in one process (ep_size 1): outputs and gradients against DeepSpeed's dense formulation (dispatch
and combine einsums over the reference gating of test_moe_gating), residual MoE, the experts' initialisation and
marks, the optimizer param groups, and the one-line errors."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.distributions import Uniform

from dsrun.errors import UsageError
from dsrun.moe.layer import MoE
from dsrun.moe.utils import (
    configure_moe_param_groups,
    has_moe_layers,
    is_moe_param,
    split_params_into_different_moe_groups_for_optimizer,
)
from tests.unit.test_moe_gating import reference_top1, reference_top2

WIDTH = 6


def expert_template() -> nn.Module:
    return nn.Sequential(nn.Linear(WIDTH, 10), nn.Tanh(), nn.Linear(10, WIDTH))


def build(seed: int = 0, **kwargs) -> MoE:
    torch.manual_seed(seed)
    options = {"num_experts": 4, "min_capacity": 0, **kwargs}
    return MoE(WIDTH, expert_template(), **options)


def reference_forward(moe: MoE, x: torch.Tensor, used_token=None):
    """DeepSpeed's dense path: einsum dispatch with the 0/1 mask, each expert on its [C, M] slots, einsum combine."""
    gate = moe.deepspeed_moe.gate
    tokens = x.reshape(-1, WIDTH)
    gate_input = tokens.float()
    if gate.noisy_gate_policy == "Jitter" and moe.training:
        gate_input = gate_input * Uniform(torch.tensor(0.99), torch.tensor(1.01)).rsample(gate_input.shape)
    logits = gate_input @ gate.wg.weight.float().t()
    factor = gate.capacity_factor if moe.training else gate.eval_capacity_factor
    if gate.k == 1:
        noise = gate.noisy_gate_policy if moe.training else None
        l_aux, combine, counts = reference_top1(logits, factor, gate.min_capacity, used_token, noise,
                                                gate.drop_tokens, gate.use_rts)
    else:
        l_aux, combine, counts = reference_top2(logits, factor, gate.min_capacity, gate.drop_tokens,
                                                gate.top2_2nd_expert_sampling)
    dispatched = torch.einsum("sec,sm->ecm", combine.bool().to(tokens.dtype), tokens)
    experts = moe.deepspeed_moe.experts.deepspeed_experts
    results = torch.stack([expert(dispatched[e]) for e, expert in enumerate(experts)])
    output = torch.einsum("sec,ecm->sm", combine, results).reshape(x.shape)
    if moe.use_residual:
        coef = F.softmax(moe.coefficient(x), dim=-1)
        output = output * coef[..., 0:1] + moe.mlp(x) * coef[..., 1:]
    return output, l_aux, counts


def grads(module: nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    found = {name: p.grad.clone() for name, p in module.named_parameters() if p.grad is not None}
    found["input"] = x.grad.clone()
    module.zero_grad()
    x.grad = None
    return found


LAYERS = [
    {"k": 1},  # random token selection, drops
    {"k": 1, "use_rts": False, "capacity_factor": 0.5},
    {"k": 1, "noisy_gate_policy": "RSample"},
    {"k": 1, "noisy_gate_policy": "Jitter", "drop_tokens": False},
    {"k": 1, "use_residual": True, "min_capacity": 4},
    {"k": 2},
    {"k": 2, "capacity_factor": 0.5, "top2_2nd_expert_sampling": False},
    {"k": 2, "use_residual": True, "drop_tokens": False, "noisy_gate_policy": "Jitter"},
]


@pytest.mark.parametrize("options", LAYERS, ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()))
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_layer_matches_deepspeeds_dense_formulas(options, training):
    moe = build(**options, eval_capacity_factor=0.75).train(training)
    torch.manual_seed(1)
    x = torch.randn(3, 8, WIDTH, requires_grad=True)
    weight = torch.randn(3, 8, WIDTH)
    torch.manual_seed(2)
    output, l_aux, counts = moe(x)
    (output * weight).sum().add(0.1 * l_aux).backward()
    ours = grads(moe, x)
    torch.manual_seed(2)
    ref_output, ref_l_aux, ref_counts = reference_forward(moe, x)
    (ref_output * weight).sum().add(0.1 * ref_l_aux).backward()
    reference = grads(moe, x)
    assert output.shape == x.shape
    assert torch.allclose(output, ref_output, atol=1e-6)
    assert torch.allclose(l_aux, ref_l_aux, atol=1e-6)
    assert torch.equal(counts, ref_counts)
    assert ours.keys() == reference.keys()
    for name, grad in ours.items():
        assert torch.allclose(grad, reference[name], atol=1e-5), name
    # every expert took part (else its gradient says nothing)
    assert all(ours[f"deepspeed_moe.experts.deepspeed_experts.{e}.0.weight"].abs().sum() > 0 for e in range(4))


def test_used_token_masks_tokens_out():
    moe = build(use_rts=False)
    torch.manual_seed(1)
    x = torch.randn(16, WIDTH)
    used = (torch.arange(16) % 4 != 0).long()
    output, _, counts = moe(x, used)
    ref_output, _, ref_counts = reference_forward(moe, x, used)
    assert torch.allclose(output, ref_output, atol=1e-6) and torch.equal(counts, ref_counts)
    assert counts.sum() == 12 and torch.all(output[::4] == 0)  # unused tokens go nowhere


def test_residual_mixes_the_template_as_a_dense_mlp():
    torch.manual_seed(0)
    template = expert_template()
    moe = MoE(WIDTH, template, num_experts=2, use_residual=True, min_capacity=0)
    assert moe.mlp is template and moe.coefficient.out_features == 2
    x = torch.randn(5, WIDTH)
    with torch.no_grad():  # a coefficient that picks the dense MLP for every token
        moe.coefficient.weight.zero_()
        moe.coefficient.bias.copy_(torch.tensor([-30.0, 30.0]))
        assert torch.allclose(moe(x)[0], template(x), atol=1e-6)


def test_experts_start_independent_and_by_global_index():
    whole = build(seed=3, num_experts=4, ep_size=1)
    after_whole = torch.rand(1)
    half = build(seed=3, num_experts=4, ep_size=2, rank=1, world_size=2)  # rank 1 holds global experts 2 and 3
    after_half = torch.rand(1)
    assert torch.equal(after_whole, after_half), "the ep size must not move the global random stream"
    assert half.expert_global_ids == [2, 3] and half.num_local_experts == 2
    full = whole.deepspeed_moe.experts.deepspeed_experts
    local = half.deepspeed_moe.experts.deepspeed_experts
    for slot, global_id in enumerate(half.expert_global_ids):
        for a, b in zip(local[slot].parameters(), full[global_id].parameters(), strict=True):
            assert torch.equal(a, b)
    assert torch.equal(half.deepspeed_moe.gate.wg.weight, whole.deepspeed_moe.gate.wg.weight)
    weights = [expert[0].weight for expert in full]
    assert all(not torch.equal(weights[i], weights[j]) for i in range(4) for j in range(i + 1, 4))


def test_gate_and_coefficient_draw_what_deepspeeds_would():
    """DeepSpeed builds the gate's Linear, then the coefficient's, from the global generator (the experts are
    copies): the same seed gives the same gate and coefficient here."""
    torch.manual_seed(8)
    expert_template()
    gate, coefficient = nn.Linear(WIDTH, 4, bias=False), nn.Linear(WIDTH, 2)
    moe = build(seed=8, use_residual=True)
    assert torch.equal(moe.deepspeed_moe.gate.wg.weight, gate.weight)
    assert torch.equal(moe.coefficient.weight, coefficient.weight) and torch.equal(moe.coefficient.bias,
                                                                                    coefficient.bias)
    # And after the layer the global generator is where DeepSpeed leaves it: a layer built next gets its weights.
    after = nn.Linear(WIDTH, 3)
    torch.manual_seed(8)
    expert_template()
    nn.Linear(WIDTH, 4, bias=False), nn.Linear(WIDTH, 2)
    assert torch.equal(after.weight, nn.Linear(WIDTH, 3).weight)


def test_expert_parameters_carry_deepspeeds_marks():
    moe = build(num_experts=4, ep_size=2, rank=0, world_size=2, use_residual=True)
    for name, param in moe.named_parameters():
        expert = ".deepspeed_experts." in name
        assert is_moe_param(param) == expert, name
        if expert:
            assert param.allreduce is False and param.group_name == "ep_size_2"
    assert has_moe_layers(nn.Sequential(nn.Linear(2, 2), moe)) == (True, 4)
    assert has_moe_layers(nn.Linear(2, 2)) == (False, 0)


@pytest.mark.parametrize("k", [1, 2])
def test_tutel_and_expert_tensor_parallelism_change_nothing(k):
    x = torch.randn(12, WIDTH, generator=torch.Generator().manual_seed(0))
    torch.manual_seed(4)
    plain, _, counts = build(seed=1, k=k, capacity_factor=0.5)(x)
    torch.manual_seed(4)
    flagged = build(seed=1, k=k, capacity_factor=0.5, use_tutel=True, enable_expert_tensor_parallelism=True)(x)[0]
    capacity = 2 if k == 1 else 3  # ceil(12 / 4 * 0.5 * k): 12 * k routes over 4 experts overflow one of them
    assert counts.max() > capacity and torch.equal(plain, flagged)


def test_half_precision_input_gives_half_output():
    moe = build(k=2).to(torch.bfloat16)
    output, l_aux, _ = moe(torch.randn(2, 5, WIDTH, dtype=torch.bfloat16))
    assert output.dtype == torch.bfloat16 and l_aux.dtype == torch.float32


@pytest.mark.parametrize(("options", "message"), [
    ({"num_experts": 3, "ep_size": 2}, "num_experts=3 is not divisible by ep_size=2"),
    ({"num_experts": 4, "ep_size": 4, "world_size": 6}, "ep_size=4 does not divide the world size 6"),
    ({"k": 3}, "k=3: DeepSpeed's MoE layer gates top-1 or top-2"),
    ({"k": 0}, "k=0"),
    ({"noisy_gate_policy": "Gumbel"}, "noisy_gate_policy='Gumbel' is unknown"),
    ({"num_experts": 0}, "num_experts=0"),
])  # fmt: skip
def test_bad_arguments_are_one_line(options, message):
    with pytest.raises(UsageError, match=message) as info:
        build(**options)
    assert "\n" not in str(info.value)


def test_expert_parallelism_without_torch_distributed_is_one_line():
    moe = build(num_experts=4, ep_size=2)  # fine to build (a world size is not known yet) ...
    with pytest.raises(UsageError, match="needs torch.distributed") as info:
        moe(torch.randn(8, WIDTH))  # ... but the tokens have nowhere to go
    assert "\n" not in str(info.value)


def cifar_net(ep_size: int = 1) -> nn.Module:
    """DeepSpeed's CIFAR example's MoE part: fc3 is the expert template of every MoE layer."""
    torch.manual_seed(0)
    fc3 = nn.Linear(84, 84)
    layers = [MoE(84, fc3, num_experts=n, ep_size=ep_size, use_residual=True, k=1, min_capacity=0,
                  noisy_gate_policy="RSample", rank=0, world_size=2) for n in (2, 4)]
    return nn.ModuleDict({"fc2": nn.Linear(120, 84), "moe_layer_list": nn.ModuleList(layers), "fc4": nn.Linear(84, 10)})


def test_param_groups_as_the_cifar_example_builds_them():
    net = cifar_net(ep_size=2)
    groups = split_params_into_different_moe_groups_for_optimizer({"params": list(net.parameters()),
                                                                   "name": "parameters", "lr": 0.01})
    assert [(g["name"], g.get("moe", False)) for g in groups] == [("parameters", False), ("ep_size_2", True)]
    dense, experts = groups
    assert all(not is_moe_param(p) for p in dense["params"]) and all(is_moe_param(p) for p in experts["params"])
    assert {id(p) for p in dense["params"] + experts["params"]} == {id(p) for p in net.parameters()}
    assert experts["lr"] == 0.01  # the other options come along
    torch.optim.SGD(groups, lr=0.1)  # a torch optimizer takes them as they are


def test_param_groups_split_by_size_and_keep_the_given_list():
    net = cifar_net(ep_size=2)
    given = [{"params": iter([p for n, p in net.named_parameters() if "bias" not in n]), "name": "decay"},
             {"params": [p for n, p in net.named_parameters() if "bias" in n], "name": "no_decay", "weight_decay": 0}]
    result = split_params_into_different_moe_groups_for_optimizer(given, max_group_size=84 * 84)
    assert result is given  # changed in place and returned, as DeepSpeed does
    # 3 local experts (1 + 2 at ep_size 2), each Linear(84, 84): a weight fills a group, the 3 biases share one
    expert_groups = [g for g in result if g.get("moe")]
    assert [sum(p.numel() for p in g["params"]) for g in expert_groups] == [84 * 84] * 3 + [3 * 84]
    assert [g.get("weight_decay") for g in expert_groups] == [None, None, None, 0]
    assert all(g["name"] == "ep_size_2" for g in expert_groups)
    biases = [p for n, p in net.named_parameters() if "bias" in n and ".deepspeed_experts." in n]
    runs = split_params_into_different_moe_groups_for_optimizer({"params": biases, "name": "b"}, max_group_size=168)
    assert [len(g["params"]) for g in runs] == [0, 2, 1]  # a run may fill max_group_size exactly
    # fc2, fc4, two gates, two coefficients and fc3: the residual MLP of both layers, one module
    assert len(result[0]["params"]) == 7


def test_configure_moe_param_groups_as_the_engine_would():
    net = cifar_net()
    groups = configure_moe_param_groups(list(net.parameters()))
    assert [(g["name"], g.get("moe", False)) for g in groups] == [("dense-params", False), ("ep_size_1", True)]
    assert configure_moe_param_groups(groups) is groups  # already split: left as is
    with pytest.raises(UsageError, match="not str"):
        configure_moe_param_groups(["weights"])
