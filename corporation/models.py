"""Agent bodies: the MODELS registry (``mlp``, ``linear``; recurrent kinds register in ``rnn_models``).

A factory takes ``(params, in_size, out_size)`` and returns an ``nn.Module``. Stateless bodies map
``x -> h``. Recurrent bodies set ``recurrent = True`` and map ``(x, state) -> (h, state)``.
:func:`build_model` seeds every body from the agent's own ``torch.Generator`` (the rule is in the MODELS
docstring, :mod:`corporation.registry`), so runs never depend on, nor change, the global RNG.
"""
from __future__ import annotations

import functools
import inspect
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import nn

from .registry import MODELS
from .schema import positive
from .seeding import derive_seed

ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid, "none": nn.Identity}


@dataclass
class MLPParams:
    """Linear layers of sizes ``hidden`` then ``out``; each followed by batch norm (optional) and the
    activation, the last one too when ``out_activation`` is true. ``out_activation: null`` (the default) is
    settled by validation from the graph (:func:`settle_out_activation`): false for an output agent (every
    out-edge goes to a task port without a head: its output is logits, an action or a value), else true.
    ``out: null`` is inferred."""

    kind: str = "mlp"
    out: int | None = None
    hidden: list[int] = field(default_factory=list)
    batchnorm: bool = False
    activation: Literal["relu", "tanh", "sigmoid", "none"] = "relu"
    out_activation: bool | None = None

    def check(self, path: str) -> None:
        positive(self.out, path, "out")
        for i, h in enumerate(self.hidden):
            positive(h, f"{path}.hidden", str(i))

    def settle_out_activation(self, output_agent: bool) -> None:
        """Fill in ``out_activation: null``: no activation on an output agent's last layer (ReLU on logits
        would clip them), the activation otherwise (the output is a hidden layer of the composed network)."""
        if self.out_activation is None:
            self.out_activation = not output_agent


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
def build_mlp(params: MLPParams, in_size: int, out_size: int, generator: torch.Generator | None = None) -> nn.Module:
    out_activation = params.out_activation is not False  # null (never settled by validation): as before
    module = mlp(in_size, [*params.hidden, out_size], params.batchnorm, params.activation, out_activation)
    if generator is not None:
        init_parameters(module, generator)
    return module


@MODELS.register("linear", LinearParams)
def build_linear(params: LinearParams, in_size: int, out_size: int,
                 generator: torch.Generator | None = None) -> nn.Module:
    module = nn.Linear(in_size, out_size)
    if generator is not None:
        init_parameters(module, generator)
    return module


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


def _has_generator(fn: Callable) -> bool:
    """Whether ``fn`` takes a parameter named ``generator`` by keyword (cached per function)."""
    fn = getattr(fn, "__func__", fn)  # a bound method: cache on its function
    try:
        return _has_generator_cached(fn)
    except TypeError:  # an unhashable callable
        return _signature_has_generator(fn)


def _signature_has_generator(fn: Callable) -> bool:
    try:
        param = inspect.signature(fn).parameters.get("generator")
    except (TypeError, ValueError):  # no signature (some builtins)
        return False
    return param is not None and param.kind in (param.POSITIONAL_OR_KEYWORD, param.KEYWORD_ONLY)


_has_generator_cached = functools.lru_cache(maxsize=None)(_signature_has_generator)


def _global_seed(generator: torch.Generator) -> int:
    """The seed of the forked global RNG an agent's body is built under: a function of the agent's generator
    seed (so it differs across seeds and agents) that draws nothing from it, and a different stream from it."""
    return derive_seed(generator.initial_seed(), "global")


@torch.no_grad()
def reset_with_generator(module: nn.Module, generator: torch.Generator) -> None:
    """Call ``reset_parameters(generator=generator)`` on every submodule whose ``reset_parameters`` takes a
    ``generator`` parameter, outermost module first (``module.modules()`` order)."""
    for m in module.modules():
        reset = getattr(m, "reset_parameters", None)
        if callable(reset) and _has_generator(reset):
            reset(generator=generator)


def build_model(params, in_size: int, out_size: int, generator: torch.Generator,
                device: torch.device) -> nn.Module:
    """Build a registered body, seeded from the agent's ``generator``, then move it to ``device``.

    1. Construction runs under a forked global (CPU) RNG seeded from ``generator.initial_seed()`` (nothing is
       drawn from ``generator`` for it), so the global RNG is left untouched and whatever the module draws
       while being built differs across seeds and agents. A factory that takes a ``generator`` keyword gets
       the agent's generator and draws every parameter from it (the built-in kinds do); any other factory's
       own initialisation is kept as it is.
    2. Every submodule whose ``reset_parameters`` takes a ``generator`` is reset from ``generator``,
       outermost first (:func:`reset_with_generator`).
    """
    factory = MODELS.get(params.kind).factory
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(_global_seed(generator))  # CPU only: CUDA's global RNG is not forked
        if _has_generator(factory):
            module = factory(params, in_size, out_size, generator=generator)
        else:
            module = factory(params, in_size, out_size)
        reset_with_generator(module, generator)
    return module.to(device)
