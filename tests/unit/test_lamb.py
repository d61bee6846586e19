"""dsrun's Lamb against a direct transcription of DeepSpeed FusedLamb's kernel, plus its wiring into the engine."""

import copy
import math

import pytest
import torch

from dsrun.errors import UsageError
from dsrun.runtime.optim import ELEMENTWISE, build_optimizer, check_shardable, recipe_from_config
from dsrun.runtime.optim.lamb import Lamb


def reference_step(params, grads, state, *, lr=1e-3, bias_correction=True, betas=(0.9, 0.999), eps=1e-8,
                   eps_inside_sqrt=False, weight_decay=0.0, max_coeff=10.0, min_coeff=0.01, scale=1.0):
    """FusedLamb's kernel, one tensor at a time, written out plainly (float64 for the reference's sake)."""
    b1, b2 = betas
    coeffs = []
    for i, (p, g) in enumerate(zip(params, grads, strict=True)):
        st = state.setdefault(i, {"step": 0, "m": torch.zeros_like(p), "v": torch.zeros_like(p)})
        st["step"] += 1
        g = g / scale
        st["m"] = b1 * st["m"] + (1 - b1) * g
        st["v"] = b2 * st["v"] + (1 - b2) * g * g
        denom = torch.sqrt(st["v"] + eps) if eps_inside_sqrt else torch.sqrt(st["v"]) + eps
        update = st["m"] / denom + weight_decay * p
        w_norm = math.sqrt(float((p * p).sum()))
        u_norm = math.sqrt(float((update * update).sum()))
        coeff = 1.0
        if w_norm != 0 and u_norm != 0:
            coeff = w_norm / u_norm
            if coeff > max_coeff:
                coeff = max_coeff
            if coeff < min_coeff:
                coeff = min_coeff
        if bias_correction:
            step_size = lr * math.sqrt(1 - b2 ** st["step"]) / (1 - b1 ** st["step"])
        else:
            step_size = lr
        p -= step_size * coeff * update
        coeffs.append(coeff)
    return coeffs


def make_params(dtype=torch.float64, zero_weight=False):
    g = torch.Generator().manual_seed(0)
    shapes = [(5, 4), (4,), (1, 3), ()]
    params = [torch.randn(s, generator=g, dtype=dtype) * 0.3 for s in shapes]
    if zero_weight:
        params.append(torch.zeros(3, 2, dtype=dtype))  # ||w|| = 0: coefficient 1 however large the update
    return [torch.nn.Parameter(p) for p in params]


def gradients(params, step):
    g = torch.Generator().manual_seed(100 + step)
    return [torch.randn(p.shape, generator=g, dtype=p.dtype) for p in params]


CASES = [
    {},
    {"weight_decay": 0.1, "lr": 1e-2},
    {"weight_decay": 0.05, "bias_correction": False, "lr": 1e-2},
    {"eps_inside_sqrt": True, "eps": 1e-3, "weight_decay": 0.01},
    {"betas": (0.8, 0.99), "eps": 1e-4, "max_coeff": 0.5, "min_coeff": 0.1, "lr": 0.1},
]


@pytest.mark.parametrize("hyper", CASES)
@pytest.mark.parametrize("zero_weight", [False, True])
def test_matches_the_kernel_transcription(hyper, zero_weight):
    params = make_params(zero_weight=zero_weight)
    expected = [p.detach().clone() for p in params]
    opt = Lamb(params, **hyper)
    ref_state = {}
    for step in range(5):
        grads = gradients(params, step)
        for p, g in zip(params, grads, strict=True):
            p.grad = g.clone()
        opt.step()
        want = reference_step(expected, grads, ref_state, **hyper)
        assert opt.get_lamb_coeffs() == pytest.approx(want, rel=1e-12)
        for p, e in zip(params, expected, strict=True):
            torch.testing.assert_close(p.detach(), e, rtol=1e-12, atol=1e-14)
        if zero_weight and step == 0:
            assert opt.get_lamb_coeffs()[-1] == 1.0  # not min_coeff: with ||w|| = 0 the ratio is not used at all


def test_float32_tracks_the_float64_transcription():
    params = make_params(dtype=torch.float32)
    expected = [p.detach().double() for p in params]
    opt = Lamb(params, lr=1e-2, weight_decay=0.1)
    ref_state = {}
    for step in range(5):
        grads = gradients(params, step)
        for p, g in zip(params, grads, strict=True):
            p.grad = g
        opt.step()
        reference_step(expected, [g.double() for g in grads], ref_state, lr=1e-2, weight_decay=0.1)
    assert max((p.detach().double() - e).abs().max().item() for p, e in zip(params, expected, strict=True)) < 1e-6


def test_zero_update_norm_keeps_coefficient_one():
    """Zero gradients, fresh state and no weight decay: ||update|| = 0, so r = 1 and the weights stay."""
    p = torch.nn.Parameter(torch.ones(3))
    p.grad = torch.zeros(3)
    opt = Lamb([p], lr=0.1, max_coeff=0.5)  # a clamp would give 0.5 if it applied
    opt.step()
    assert opt.get_lamb_coeffs() == [1.0]
    assert torch.equal(p.detach(), torch.ones(3))


# First step with unit gradients and eps 0: u = m / sqrt(v) = (1 - b1) / sqrt(1 - b2) in every element (the moments
# are not bias-corrected inside u), and the step size is a = lr * sqrt(1 - b2) / (1 - b1).
U1 = 0.1 / math.sqrt(0.001)
A1 = math.sqrt(0.001) / 0.1


def test_trust_ratio_clamps():
    big = torch.nn.Parameter(torch.full((4,), 1000.0))  # ||w|| / ||u|| = 1000 / U1 -> max_coeff
    small = torch.nn.Parameter(torch.full((4,), 1e-5))  # -> min_coeff
    middle = torch.nn.Parameter(torch.full((4,), 0.5))  # 0.5 / U1, inside the bounds
    for p in (big, small, middle):
        p.grad = torch.ones(4)
    opt = Lamb([big, small, middle], lr=0.1, max_coeff=10.0, min_coeff=0.01, eps=0.0)
    opt.step()
    assert opt.get_lamb_coeffs() == pytest.approx([10.0, 0.01, 0.5 / U1])
    # p - (a r) u, and a u = lr exactly
    assert big.detach()[0].item() == pytest.approx(1000.0 - 0.1 * 10.0)
    assert small.detach()[0].item() == pytest.approx(1e-5 - 0.1 * 0.01)
    assert middle.detach()[0].item() == pytest.approx(0.5 - 0.1 * 0.5 / U1)


def test_min_coeff_wins_when_above_max_coeff():
    """The kernel clamps to max_coeff first, then to min_coeff (torch.clamp would pick max)."""
    p = torch.nn.Parameter(torch.full((4,), 0.5))
    p.grad = torch.ones(4)
    opt = Lamb([p], max_coeff=0.1, min_coeff=0.2)
    opt.step()
    assert opt.get_lamb_coeffs() == pytest.approx([0.2])


def test_get_lamb_coeffs_lists_last_step_of_parameters_with_gradients():
    a, b, c = (torch.nn.Parameter(torch.full((2,), v)) for v in (0.3, 0.4, 0.5))
    opt = Lamb([{"params": [a, b]}, {"params": [c], "min_coeff": 0.2}], eps=0.0)
    assert opt.get_lamb_coeffs() == []
    a.grad, c.grad = torch.ones(2), torch.ones(2)  # b has none: skipped, as FusedLamb does
    opt.step()
    assert opt.get_lamb_coeffs() == pytest.approx([0.3 / U1, 0.2])  # each group's own bounds
    assert b not in opt.state
    b.grad = torch.ones(2)
    opt.step()
    assert len(opt.get_lamb_coeffs()) == 3  # the previous step's list is replaced, not appended to


def test_state_dict_round_trip():
    params = make_params(dtype=torch.float32)
    opt = Lamb(params, lr=1e-2, weight_decay=0.1)
    for step in range(3):
        for p, g in zip(params, gradients(params, step), strict=True):
            p.grad = g
        opt.step()
    state = opt.state_dict()
    first = state["state"][0]
    assert first["step"].dim() == 0 and first["step"].item() == 3
    assert first["exp_avg"].shape == params[0].shape and first["exp_avg_sq"].shape == params[0].shape

    clones = [torch.nn.Parameter(p.detach().clone()) for p in params]
    other = Lamb(clones, lr=0.5)
    other.load_state_dict(copy.deepcopy(state))
    assert other.param_groups[0]["lr"] == 1e-2
    for step in range(3, 5):
        grads = gradients(params, step)
        for p, q, g in zip(params, clones, grads, strict=True):
            p.grad, q.grad = g, g.clone()
        opt.step()
        other.step()
    for p, q in zip(params, clones, strict=True):
        assert torch.equal(p.detach(), q.detach())
    assert other.get_lamb_coeffs() == opt.get_lamb_coeffs()


def test_amsgrad_refused():
    with pytest.raises(ValueError, match="AMSGrad"):
        Lamb([torch.nn.Parameter(torch.ones(2))], amsgrad=True)
    recipe = recipe_from_config("Lamb", {"amsgrad": True})
    with pytest.raises(UsageError, match="optimizer Lamb: .*AMSGrad"):
        build_optimizer(recipe, [{"params": [torch.nn.Parameter(torch.ones(2))]}], torch.device("cpu"))


def test_scale_divides_gradients():
    p, q = torch.nn.Parameter(torch.ones(3) * 0.2), torch.nn.Parameter(torch.ones(3) * 0.2)
    p.grad, q.grad = torch.tensor([4.0, -8.0, 2.0]), torch.tensor([1.0, -2.0, 0.5])
    a, b = Lamb([p], weight_decay=0.1), Lamb([q], weight_decay=0.1)
    a.step(scale=4.0)
    b.step()
    torch.testing.assert_close(p.detach(), q.detach())


def test_max_grad_norm_scales_with_given_norms():
    """FusedLamb's max_grad_norm only acts through step(grad_norms=...): a gradient whose norm exceeds it is
    divided by (norm + 1e-6) / max_grad_norm; without the norms it cannot work (FusedLamb fails, this says why)."""
    p, q = torch.nn.Parameter(torch.ones(2)), torch.nn.Parameter(torch.ones(2))
    grad = torch.tensor([3.0, 4.0])  # norm 5
    p.grad, q.grad = grad.clone(), grad / ((5.0 + 1e-6) / 2.0)
    clipped, plain = Lamb([p], max_grad_norm=2.0, eps=0.5), Lamb([q], eps=0.5)
    clipped.step(grad_norms=[[torch.tensor(5.0)]])
    plain.step()
    torch.testing.assert_close(clipped.state[p]["exp_avg"], plain.state[q]["exp_avg"])
    torch.testing.assert_close(p.detach(), q.detach())


def test_max_grad_norm_without_norms_is_refused():
    p = torch.nn.Parameter(torch.ones(2))
    p.grad = torch.ones(2)
    with pytest.raises(ValueError, match="grad_norms"):
        Lamb([p], max_grad_norm=1.0).step()


def test_grads_and_output_params_arguments():
    p, q = torch.nn.Parameter(torch.ones(3) * 0.3), torch.nn.Parameter(torch.ones(3) * 0.3)
    grad = torch.tensor([1.0, -2.0, 0.5])
    q.grad = grad.clone()
    out = torch.zeros(3, dtype=torch.float16)
    Lamb([p]).step(grads=[grad], output_params=[out])
    Lamb([q]).step()
    torch.testing.assert_close(p.detach(), q.detach())
    torch.testing.assert_close(out, q.detach().half())


def test_norm_group_is_validated_and_settable():
    opt = Lamb([torch.nn.Parameter(torch.ones(2))])
    assert opt.norm_group is None
    opt.norm_group = "world"
    assert opt.norm_group == "world"
    with pytest.raises(ValueError, match="norm_group"):
        opt.norm_group = "everyone"
    with pytest.raises(ValueError, match="norm_group"):
        Lamb([torch.nn.Parameter(torch.ones(2))], norm_group=3)


def test_world_norm_group_without_process_group_is_whole():
    """Not initialised: a world of one, so "world" changes nothing."""
    params = make_params()
    twins = [torch.nn.Parameter(p.detach().clone()) for p in params]
    a, b = Lamb(params, weight_decay=0.1, norm_group="world"), Lamb(twins, weight_decay=0.1)
    for p, q, g in zip(params, twins, gradients(params, 0), strict=True):
        p.grad, q.grad = g, g.clone()
    a.step()
    b.step()
    assert all(torch.equal(p, q) for p, q in zip(params, twins, strict=True))


@pytest.mark.parametrize("name", ["Lamb", "lamb", "LAMB"])
def test_config_builds_lamb_and_every_stage_accepts_it(name):
    recipe = recipe_from_config(name, {"lr": 0.02, "weight_decay": 0.01, "bias_correction": False,
                                       "betas": [0.8, 0.9], "max_coeff": 5.0, "min_coeff": 0.05})
    assert recipe.cls is Lamb
    params = [torch.nn.Parameter(torch.ones(2))]
    opt = build_optimizer(recipe, [{"params": params}], torch.device("cpu"))
    assert isinstance(opt, Lamb)
    group = opt.param_groups[0]
    assert (group["lr"], group["weight_decay"], group["bias_correction"], group["max_coeff"]) == (0.02, 0.01, False, 5)
    assert not isinstance(opt, ELEMENTWISE)  # the engine must step it with every gradient at once
    warnings = []
    for stage in (0, 1, 2, 3):
        check_shardable(opt, stage, allow_untested=False, warn=warnings.append)
    assert warnings == []


def test_config_rejects_parameters_fusedlamb_does_not_take():
    recipe = recipe_from_config("Lamb", {"adam_w_mode": True})
    with pytest.raises(UsageError, match="bad parameter"):
        build_optimizer(recipe, [{"params": [torch.nn.Parameter(torch.ones(2))]}], torch.device("cpu"))


def test_other_non_elementwise_optimizers_still_refused():
    opt = torch.optim.LBFGS([torch.nn.Parameter(torch.ones(2))])
    with pytest.raises(UsageError, match="zero_allow_untested_optimizer"):
        check_shardable(opt, 1, allow_untested=False, warn=print)


@pytest.mark.parametrize("name", ["Adam", "AdamW", "adam"])
def test_config_adam_decays_nothing_unless_told_as_in_deepspeed(name):
    """DeepSpeed's FusedAdam / DeepSpeedCPUAdam default to weight_decay 0; torch's AdamW to 0.01 (kept only with
    torch_adam true, where DeepSpeed builds torch's class too)."""
    assert recipe_from_config(name, {"lr": 1e-3}).defaults["weight_decay"] == 0.0
    assert recipe_from_config(name, {"lr": 1e-3, "weight_decay": 0.1}).defaults["weight_decay"] == 0.1
    assert "weight_decay" not in recipe_from_config(name, {"lr": 1e-3, "torch_adam": True}).defaults
