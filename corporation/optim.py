"""Optimizers from an :class:`OptimizerSpec`, with the step-decay schedule the paper uses."""
from __future__ import annotations

from collections.abc import Iterable

import torch

from .spec import OptimizerSpec


def make_optimizer(spec: OptimizerSpec, params: Iterable[torch.nn.Parameter]) -> torch.optim.Optimizer:
    params = list(params)
    if spec.kind == "sgd":
        return torch.optim.SGD(params, lr=spec.lr, momentum=spec.momentum, weight_decay=spec.weight_decay)
    return torch.optim.Adam(params, lr=spec.lr, weight_decay=spec.weight_decay, foreach=True)


def lr_at(spec: OptimizerSpec, tick: int) -> float:
    """The learning rate at ``tick``: ``lr`` times ``decay_factor`` for every milestone already passed."""
    return spec.lr * spec.decay_factor ** sum(1 for m in spec.decay_at if tick >= m)


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr
