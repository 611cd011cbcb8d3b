"""Agent bodies: the MODELS registry (``mlp``, ``linear``; recurrent kinds register in ``rnn_models``).

A factory takes ``(params, in_size, out_size)`` and returns an ``nn.Module``. Stateless bodies map
``x -> h``. Recurrent bodies set ``recurrent = True`` and map ``(x, state) -> (h, state)``.
Parameters are (re)initialised from the agent's own ``torch.Generator`` by :func:`init_parameters`, so
runs never depend on the global RNG.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import nn

from .registry import MODELS
from .schema import positive

ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid, "none": nn.Identity}


@dataclass
class MLPParams:
    """Linear layers of sizes ``hidden`` then ``out``; each followed by batch norm (optional) and the
    activation (``out_activation: false`` leaves the last layer linear). ``out: null`` is inferred."""

    kind: str = "mlp"
    out: int | None = None
    hidden: list[int] = field(default_factory=list)
    batchnorm: bool = False
    activation: Literal["relu", "tanh", "sigmoid", "none"] = "relu"
    out_activation: bool = True

    def check(self, path: str) -> None:
        positive(self.out, path, "out")
        for i, h in enumerate(self.hidden):
            positive(h, f"{path}.hidden", str(i))


@dataclass
class LinearParams:
    """One linear layer (e.g. the output layer feeding a loss port); ``out: null`` is inferred."""

    kind: str = "linear"
    out: int | None = None

    def check(self, path: str) -> None:
        positive(self.out, path, "out")


def mlp(in_size: int, sizes: list[int], batchnorm: bool, activation: str, out_activation: bool) -> nn.Sequential:
    """A plain MLP; the building block of agent bodies, M and I."""
    layers: list[nn.Module] = []
    for i, size in enumerate(sizes):
        layers.append(nn.Linear(in_size, size))
        last = i == len(sizes) - 1
        if not last or out_activation:
            if batchnorm:
                layers.append(nn.BatchNorm1d(size))
            layers.append(ACTIVATIONS[activation]())
        in_size = size
    return nn.Sequential(*layers)


@MODELS.register("mlp", MLPParams)
def build_mlp(params: MLPParams, in_size: int, out_size: int) -> nn.Module:
    return mlp(in_size, [*params.hidden, out_size], params.batchnorm, params.activation, params.out_activation)


@MODELS.register("linear", LinearParams)
def build_linear(params: LinearParams, in_size: int, out_size: int) -> nn.Module:
    return nn.Linear(in_size, out_size)


@torch.no_grad()
def init_parameters(module: nn.Module, generator: torch.Generator) -> None:
    """PyTorch's default initialisation, drawn from ``generator`` (U(-1/sqrt(fan_in), 1/sqrt(fan_in)))."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            bound = 1.0 / math.sqrt(m.in_features) if m.in_features else 0.0
            m.weight.uniform_(-bound, bound, generator=generator)
            if m.bias is not None:
                m.bias.uniform_(-bound, bound, generator=generator)
        elif isinstance(m, (nn.LSTM, nn.GRU, nn.RNN, nn.LSTMCell, nn.GRUCell, nn.RNNCell)):
            bound = 1.0 / math.sqrt(m.hidden_size)
            for p in m.parameters():
                p.uniform_(-bound, bound, generator=generator)
        elif isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.reset_parameters()


def build_model(params, in_size: int, out_size: int, generator: torch.Generator,
                device: torch.device) -> nn.Module:
    """Build a registered body and initialise it from ``generator`` (global RNG left untouched)."""
    with torch.random.fork_rng(devices=[]):
        module = MODELS.get(params.kind).factory(params, in_size, out_size)
    init_parameters(module, generator)
    return module.to(device)
