"""Optimizers from an :class:`OptimizerSpec`, with the step-decay schedule the paper uses."""
from __future__ import annotations

from collections.abc import Iterable

import torch
from torch.optim.adam import adam as adam_fn

from .spec import OptimizerSpec


def make_optimizer(spec: OptimizerSpec, params: Iterable[torch.nn.Parameter] | list[dict]) -> torch.optim.Optimizer:
    """The optimizer of ``spec`` over ``params`` (parameters, or param-group dicts with extra keys kept)."""
    params = list(params)
    if spec.kind == "sgd":
        return torch.optim.SGD(params, lr=spec.lr, momentum=spec.momentum, weight_decay=spec.weight_decay)
    return torch.optim.Adam(params, lr=spec.lr, weight_decay=spec.weight_decay, foreach=True)


def clear_grads(optimizer: torch.optim.Optimizer) -> None:
    """``optimizer.zero_grad(set_to_none=True)`` without its per-call profiling and hook overhead (tens of
    microseconds a call, paid by every agent and every M every tick)."""
    for group in optimizer.param_groups:
        for p in group["params"]:
            p.grad = None


def lr_at(spec: OptimizerSpec, tick: int) -> float:
    """The learning rate at ``tick``: ``lr`` times ``decay_factor`` for every milestone already passed."""
    return spec.lr * spec.decay_factor ** sum(1 for m in spec.decay_at if tick >= m)


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


def _adam_key(group: dict) -> tuple | None:
    """Adam hyperparameters of a param group that allow one fused call (None: step it on its own)."""
    if group.get("fused") or group.get("capturable") or group.get("differentiable") or not group.get("foreach"):
        return None
    return (group["lr"], group["betas"], group["eps"], group["weight_decay"], group["amsgrad"],
            group["maximize"], group.get("decoupled_weight_decay", False))


@torch.no_grad()
def step_together(optimizers: list[torch.optim.Optimizer]) -> None:
    """Step several optimizers as if one after the other, in fewer calls: Adam param groups with the same
    hyperparameters go through ONE multi-tensor Adam update (the update is elementwise per parameter, with
    each parameter's own state and step count, so the result is the same as separate steps); anything else
    steps on its own. Many small agents each own an optimizer: this removes most of the per-call cost."""
    fused: dict[tuple, list[tuple[torch.optim.Adam, dict]]] = {}
    for opt in optimizers:
        keys = [_adam_key(g) for g in opt.param_groups] if type(opt) is torch.optim.Adam else [None]
        if getattr(opt, "grad_scale", None) is not None or None in keys:
            opt.step()  # every group of it, once
            continue
        for group, key in zip(opt.param_groups, keys):
            fused.setdefault(key, []).append((opt, group))
    for key, members in fused.items():
        if len(members) == 1 and len(members[0][0].param_groups) == 1:
            members[0][0].step()  # opt.step() steps ALL of an optimizer's groups: only for a one-group one
            continue
        lists: tuple[list, ...] = ([], [], [], [], [], [])
        has_complex = False
        for opt, group in members:
            has_complex |= opt._init_group(group, *lists)
        (lr, (beta1, beta2), eps, weight_decay, amsgrad, maximize, decoupled) = key
        adam_fn(*lists, amsgrad=amsgrad, has_complex=has_complex, beta1=beta1, beta2=beta2, lr=lr,
                              weight_decay=weight_decay, eps=eps, maximize=maximize, foreach=True,
                              capturable=False, differentiable=False, fused=None, grad_scale=None,
                              found_inf=None, decoupled_weight_decay=decoupled)
