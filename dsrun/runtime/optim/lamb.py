"""DeepSpeed's `Lamb` optimizer (its FusedLamb) in plain torch, exact when the optimizer steps shards of parameters.

The update of one parameter tensor `p` with gradient `g`, at its step t (counted per parameter from 1), as
FusedLamb's CUDA kernel computes it:

    g' = g / s                       s: step(scale=) (1 by default), raised by max_grad_norm clipping (below)
    m  = b1 * m + (1 - b1) * g'
    v  = b2 * v + (1 - b2) * g'^2
    d  = sqrt(v) + eps               (eps_inside_sqrt: d = sqrt(v + eps))
    u  = m / d + weight_decay * p    m and v are NOT bias-corrected here; weight decay joins the update itself
    r  = clamp(||p|| / ||u||)        clamped to max_coeff, then to min_coeff; r = 1 if ||p|| or ||u|| is 0
    a  = lr * sqrt(1 - b2^t) / (1 - b1^t)     (lr without bias_correction)
    p  = p - (a * r) * u

||.|| is the L2 norm of the whole tensor, taken with the weights before the update. Bias correction only scales
the step (so eps and the weight decay term are scaled by it too, unlike AdamW). `get_lamb_coeffs()` lists the
last step's r of each parameter that had a gradient, in param-group order, as DeepSpeed's does.

max_grad_norm: FusedLamb does not clip anything itself. When max_grad_norm > 0 its step() needs `grad_norms=` (a
norm of the gradient times `scale`, per parameter); a parameter whose norm exceeds max_grad_norm gets
s = scale * (norm / scale + 1e-6) / max_grad_norm, i.e. its gradient is scaled to norm max_grad_norm. Without
grad_norms FusedLamb fails (None / float); this raises a ValueError saying so. DeepSpeed's engine refuses
max_grad_norm in the config (dsrun's config does too: use "gradient_clipping", which the engine applies to every
gradient before the step) and never passes grad_norms, so through a config this never applies.

Sharding: each norm must be of the whole tensor while the elementwise part stays on the local piece. DTensor
parameters (ZeRO stage 3, FSDP2) are recognised by their type, and their norms are summed over their mesh's group
whatever `norm_group` says. Plain tensors are whole unless `norm_group` (a process group, or "world" for the
default one) says they are disjoint shards (stages 1-2 row shards) of tensors spread over that group. Every step
sums all squared norms (two per parameter, zero for a parameter without gradient or with no rows here) in one
all_reduce per group, so ranks holding no rows of a tensor still take part and all ranks get the same r.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.distributed as dist
from torch.distributed.tensor import DTensor

WORLD = "world"  # norm_group value: the default process group, resolved at each step (it may not exist yet)


def _local(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.to_local() if hasattr(tensor, "to_local") else tensor


def _dtensor_group(param: DTensor):
    """The process group over which a DTensor's pieces must be summed, or None if each rank holds all of it."""
    placements = param.placements
    if all(p.is_replicate() for p in placements):
        return None
    if param.device_mesh.ndim != 1 or not placements[0].is_shard():
        raise NotImplementedError(
            f"Lamb supports DTensor parameters sharded over a 1-D mesh (FSDP2), not placements {placements}"
        )
    return param.device_mesh.get_group()


def _sum_of_squares(tensor: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    flat = tensor.reshape(-1)
    if flat.dtype != dtype:
        flat = flat.to(dtype)  # half-precision values are summed in fp32, as the kernel accumulates them
    return torch.dot(flat, flat)


def _per_group(values: Any, groups: int) -> list:
    """FusedLamb's convention for grads= / output_params=: one flat list for a single group, or a list per group."""
    if values is None:
        return [None] * groups
    values = list(values)
    if values and not isinstance(values[0], (list, tuple)):
        return [values]
    return values


class Lamb(torch.optim.Optimizer):
    """LAMB (You et al., https://arxiv.org/abs/1904.00962) with DeepSpeed FusedLamb's arguments and arithmetic.

    `norm_group` (keyword only, also settable as an attribute before a step): None when every rank holds whole
    tensors (or DTensors), "world" or a ProcessGroup when plain tensors are row shards spread over that group.
    """

    def __init__(self, params, lr: float = 1e-3, bias_correction: bool = True,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8, eps_inside_sqrt: bool = False,
                 weight_decay: float = 0.0, max_grad_norm: float = 0.0, max_coeff: float = 10.0,
                 min_coeff: float = 0.01, amsgrad: bool = False, *, norm_group=None):
        if amsgrad:
            # FusedLamb raises RuntimeError here; a ValueError is what dsrun reports as a config mistake.
            raise ValueError("Lamb does not support the AMSGrad variant (amsgrad=true), as DeepSpeed's FusedLamb"
                             " does not: remove amsgrad")
        defaults = dict(lr=lr, bias_correction=bias_correction, betas=betas, eps=eps, weight_decay=weight_decay,
                        max_grad_norm=max_grad_norm, max_coeff=max_coeff, min_coeff=min_coeff)
        super().__init__(params, defaults)
        # One setting for the whole optimizer, not per group, as in FusedLamb (0: eps under the square root).
        self.eps_mode = 0 if eps_inside_sqrt else 1
        self.norm_group = norm_group
        self.lamb_coeffs: list[torch.Tensor] = []

    @property
    def norm_group(self):
        return self._norm_group

    @norm_group.setter
    def norm_group(self, value) -> None:
        if not (value is None or value == WORLD or isinstance(value, dist.ProcessGroup)):
            raise ValueError(f"Lamb norm_group must be None, {WORLD!r} or a torch.distributed ProcessGroup,"
                             f" got {value!r}")
        self._norm_group = value

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        state["eps_mode"] = self.eps_mode  # a process group cannot be pickled: norm_group is this process's
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        self.__dict__.setdefault("eps_mode", 1)
        self.__dict__.setdefault("_norm_group", None)
        self.__dict__.setdefault("lamb_coeffs", [])

    def get_lamb_coeffs(self) -> list[float]:
        """The last step's trust ratio of every parameter it updated, in param-group order."""
        if not self.lamb_coeffs:
            return []
        return torch.stack(self.lamb_coeffs).tolist()

    def _plain_group(self):
        """The group plain (non-DTensor) tensors are spread over, or None when they are whole."""
        if self._norm_group is None:
            return None
        if self._norm_group == WORLD:
            return dist.group.WORLD if dist.is_available() and dist.is_initialized() else None
        return self._norm_group

    @torch.no_grad()
    def step(self, closure=None, grads=None, output_params=None, scale: float = 1.0, grad_norms=None):
        """One update of every parameter with a gradient (`p.grad`, or `grads`, FusedLamb's optional list).

        `output_params`: tensors that receive a copy of the updated weights (FusedLamb's reduced-precision copies);
        `scale`: gradients are divided by it; `grad_norms`: see max_grad_norm in the module docstring.
        """
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        groups = self.param_groups
        grads_by_group = _per_group(grads, len(groups))
        outputs_by_group = _per_group(output_params, len(groups))
        norms_by_group = list(grad_norms) if grad_norms is not None else [None] * len(groups)

        # Every parameter has a slot, gradient or not, so the reduced tensor is laid out alike on every rank.
        slots: list[tuple[dict, torch.Tensor, Any]] = []  # (group, param, its reduction group)
        work: list[tuple[int, torch.Tensor | None]] = []  # (slot, output param) of each parameter with a gradient
        plain_group = self._plain_group()
        for group, group_grads, group_outputs, group_norms in zip(
                groups, grads_by_group, outputs_by_group, norms_by_group, strict=True):
            params = group["params"]
            group_grads = group_grads if group_grads is not None else [None] * len(params)
            group_outputs = group_outputs if group_outputs is not None else [None] * len(params)
            if not isinstance(group_norms, (list, tuple)):
                # FusedLamb wraps a single group norm in a list and zips it with the parameters, which silently
                # steps only the group's first parameter; here the one norm applies to every parameter.
                group_norms = [group_norms] * len(params)
            for param, grad, output, norm in zip(params, group_grads, group_outputs, group_norms, strict=True):
                reduce_over = _dtensor_group(param) if hasattr(param, "device_mesh") else plain_group
                slot = len(slots)
                slots.append((group, param, reduce_over))
                if grad is None:
                    grad = param.grad
                if grad is None:
                    continue
                if grad.is_sparse:
                    raise RuntimeError("Lamb does not support sparse gradients")
                self._moments(group, param, grad, self._grad_scale(group, scale, norm))
                work.append((slot, output))
        if not slots:
            self.lamb_coeffs = []
            return loss

        stepped = [slot for slot, _ in work]
        double = any(_local(slots[s][1]).dtype == torch.float64 for s in stepped)
        acc = torch.float64 if double else torch.float32
        home = _local(slots[stepped[0]][1]).device if stepped else _local(slots[0][1]).device
        squares = torch.zeros(len(slots), 2, dtype=acc, device=home)
        for slot, _ in work:
            _, param, _ = slots[slot]
            weight = _local(param)
            state = self.state[param]
            update = self._direction(slots[slot][0], weight, _local(state["exp_avg"]), _local(state["exp_avg_sq"]))
            squares[slot, 0] = _sum_of_squares(weight, acc).to(home)
            squares[slot, 1] = _sum_of_squares(update, acc).to(home)  # update is freed here: recomputed below
        self._sum_over_ranks(squares, [reduce_over for _, _, reduce_over in slots])

        norms = squares.sqrt()
        weight_norm, update_norm = norms[:, 0], norms[:, 1]
        maxes = torch.tensor([g["max_coeff"] for g, _, _ in slots], dtype=acc, device=home)
        mins = torch.tensor([g["min_coeff"] for g, _, _ in slots], dtype=acc, device=home)
        # Clamped to max first, then to min, as the kernel does (so min_coeff wins if it exceeds max_coeff).
        ratio = torch.minimum(weight_norm / update_norm, maxes).maximum(mins)
        coeffs = torch.where((weight_norm != 0) & (update_norm != 0), ratio, torch.ones_like(ratio))
        steps = torch.tensor([self._step_size(slots[s][0], self.state[slots[s][1]]["step"]) for s in stepped],
                             dtype=acc, device=home)
        factors = steps * coeffs[stepped]  # a * r, multiplied before it meets the update, as in the kernel
        on_device: dict[torch.device, torch.Tensor] = {home: factors}
        for index, (slot, output) in enumerate(work):
            group, param, _ = slots[slot]
            weight = _local(param)
            state = self.state[param]
            # Recomputed rather than kept from the first pass: holding every update until the norms are summed
            # would cost a copy of all the parameters (the kernel recomputes it too).
            update = self._direction(group, weight, _local(state["exp_avg"]), _local(state["exp_avg_sq"]))
            if weight.device not in on_device:
                on_device[weight.device] = factors.to(weight.device)
            weight.addcmul_(update, on_device[weight.device][index], value=-1)
            if output is not None:
                _local(output).copy_(weight)
        self.lamb_coeffs = list(coeffs[stepped].unbind())
        return loss

    def _grad_scale(self, group: dict, scale: float, grad_norm) -> float:
        """What the gradient is divided by: `scale`, raised when max_grad_norm clips (FusedLamb's combined_scale)."""
        max_norm = group["max_grad_norm"]
        if max_norm <= 0:
            return scale
        if grad_norm is None:
            raise ValueError("Lamb max_grad_norm > 0 needs the gradients' norms: step(grad_norms=...), as DeepSpeed's"
                             " FusedLamb does; to clip in a dsrun config use \"gradient_clipping\"")
        clip = (float(grad_norm) / scale + 1e-6) / max_norm
        return clip * scale if clip > 1 else scale

    def _moments(self, group: dict, param: torch.Tensor, grad: torch.Tensor, grad_scale: float) -> None:
        """Create the state at a first step, count the step, advance m and v in place."""
        state = self.state[param]
        if not state:
            # A 0-d float32 CPU step as torch's own optimizers keep it, so checkpoints treat it like Adam's.
            state["step"] = torch.zeros((), dtype=torch.float32)
            state["exp_avg"] = torch.zeros_like(param, memory_format=torch.preserve_format)
            state["exp_avg_sq"] = torch.zeros_like(param, memory_format=torch.preserve_format)
        state["step"] += 1
        weight, local_grad = _local(param), _local(grad)
        if local_grad.dtype != weight.dtype:
            local_grad = local_grad.to(weight.dtype)
        if grad_scale != 1:
            local_grad = local_grad / grad_scale
        beta1, beta2 = group["betas"]
        _local(state["exp_avg"]).mul_(beta1).add_(local_grad, alpha=1 - beta1)
        _local(state["exp_avg_sq"]).mul_(beta2).addcmul_(local_grad, local_grad, value=1 - beta2)

    def _direction(self, group: dict, weight: torch.Tensor, exp_avg: torch.Tensor,
                   exp_avg_sq: torch.Tensor) -> torch.Tensor:
        """u = m / d + weight_decay * p, a new tensor (local pieces in, local piece out)."""
        eps = group["eps"]
        if self.eps_mode == 0:
            denom = exp_avg_sq.add(eps).sqrt_()
        else:
            denom = exp_avg_sq.sqrt().add_(eps)
        update = torch.div(exp_avg, denom, out=denom)
        if group["weight_decay"] != 0:
            update.add_(weight, alpha=group["weight_decay"])
        return update

    @staticmethod
    def _step_size(group: dict, step: torch.Tensor | int) -> float:
        if not group["bias_correction"]:
            return group["lr"]
        beta1, beta2 = group["betas"]
        t = int(step)
        return group["lr"] * math.sqrt(1 - beta2**t) / (1 - beta1**t)

    @staticmethod
    def _sum_over_ranks(squares: torch.Tensor, reduce_over: list) -> None:
        """Sum the rows of `squares` over their groups: one all_reduce per distinct group (one in practice)."""
        by_group: dict[int, tuple[Any, list[int]]] = {}
        for row, group in enumerate(reduce_over):
            if group is not None:
                by_group.setdefault(id(group), (group, []))[1].append(row)
        for group, rows in by_group.values():
            if dist.get_world_size(group) == 1:
                continue
            whole = len(rows) == len(reduce_over)
            part = squares if whole else squares[rows]
            # NCCL reduces only CUDA tensors; offloaded (CPU) masters still sum over the job's group.
            staged = part.cuda() if dist.get_backend(group) == "nccl" and part.device.type != "cuda" else part
            dist.all_reduce(staged, group=group)
            if staged is not part:
                part.copy_(staged)
            if not whole:
                squares[rows] = part

