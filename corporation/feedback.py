"""Fixed random feedback as synthesizers (the unified view of Czarnecki et al. 2017, sec. 5).

``sg.kind: dfa`` (Direct Feedback Alignment, Nøkland 2016): g_hat for a message h is the output error at a
loss port mapped through a FIXED random matrix, g_hat = e R (e: the per-example gradient B * dL/d(output) at
``port``, shape (B, out); R: (out, h_size), drawn once from N(0, 1/out), never trained). It ignores h.

``sg.kind: fa`` (Feedback Alignment, Lillicrap et al. 2016): the receiver's backward pass to its input with
its first layer's weights W replaced by a FIXED random matrix B of the same shape: g_hat = delta B[:, h's
columns] (delta: dL/da of the receiver's first linear layer a = x W^T + b, batch mean, shape (B, units); B:
(units, in), drawn once from N(0, 1/in), never trained; x: the receiver's whole input). The receiver's own
weights still get their true gradient. delta includes what the receiver's own out-edges feed back (its
g_hats, filled first: the feedback runs top-down through the chain within the tick), so FA is locked in
the backward direction like backprop: the edge needs latency 0, and sender and receiver the same clock.

The error of batch k exists only once the agent feeding ``port`` has scored batch k, so the sender's g_hat
is a placeholder filled just before the backward pass of the tick (:func:`fill_feedback`, called by
:func:`corporation.component.backward_together`): DFA is decoupled from the backward pass of the layers
above, not from their forward pass in time, so sender and output agent must update in the same tick (same
clock and update window); a batch whose error is missing that tick gets zero. The regression target that
comes back (the bootstrapped DNI target) is only measured (``sg/<edge>/cosine``, ``r2``): R never changes.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .interfaces import Stats
from .registry import SYNTHESIZERS
from .schema import positive
from .spec import OptimizerSpec, is_port


@dataclass
class DFAParams:
    """``port``: the loss port whose output error is fed back; ``scale`` multiplies g_hat."""

    kind: str = "dfa"
    port: str = "task.y"
    scale: float = 1.0

    def check(self, path: str) -> None:
        from .errors import ScenarioError
        if not is_port(self.port):
            raise ScenarioError(f"must name a loss port 'task.<port>', got {self.port!r}", f"{path}.port")
        positive(self.scale, path, "scale", allow_zero=True)


class FixedFeedback(nn.Module):
    """What DFA and FA share: a zero placeholder g_hat per batch (filled before the backward pass), a seed
    for the fixed random matrix (drawn once its shape is known) and statistics against the target that comes
    back; nothing to train."""

    def __init__(self, params: DFAParams | FAParams, h_size: int, generator: torch.Generator,
                 device: torch.device):
        super().__init__()
        self.params = params
        self.h_size = h_size
        self.seed = int(torch.randint(0, 2**62, (), generator=generator))
        self.device = device
        self.pending: dict[int, torch.Tensor] = {}  # batch id -> the placeholder g_hat (batch mean) applied
        self.stats = Stats(device)

    def predict(self, batch_id: int, h: torch.Tensor, context: torch.Tensor | None, tick: int) -> torch.Tensor:
        """A zero placeholder for g_hat (filled by :meth:`fill` before the backward pass)."""
        g = torch.zeros_like(h.detach())
        self.pending[batch_id] = g
        if len(self.pending) > 64:
            del self.pending[min(self.pending)]
        return g

    def train_on(self, batch_id: int, target: torch.Tensor, tick: int) -> None:
        """Never trains: only measures how the fed-back g_hat compares with the target that came back."""
        g = self.pending.pop(batch_id, None)
        if g is None:
            return
        pred = g * (g.shape[0] / self.params.scale) if self.params.scale else g
        loss = ((pred - target) ** 2).sum() / g.shape[0]
        self.stats.add(loss, pred, target, 0)


@SYNTHESIZERS.register("dfa", DFAParams)
class DirectFeedback(FixedFeedback):
    """g_hat = e R with a fixed random R (a buffer, not a parameter: nothing can train it)."""

    def __init__(self, params: DFAParams, h_size: int, context_size: int, generator: torch.Generator,
                 device: torch.device, optimizer: OptimizerSpec):
        super().__init__(params, h_size, generator, device)  # R is drawn from the seed when e's size is known
        self.register_buffer("R", torch.zeros(0, h_size, device=device))

    @property
    def port(self) -> str:
        return self.params.port


    def fill(self, batch_id: int, error: torch.Tensor) -> None:
        """Batch ``batch_id``'s per-example output error ``error`` (B, out) arrived: g_hat = e R * scale / B."""
        g = self.pending.get(batch_id)
        if g is None:
            return
        if self.R.shape[0] != error.shape[1]:
            gen = torch.Generator().manual_seed(self.seed)
            r = torch.randn(error.shape[1], self.h_size, generator=gen) / error.shape[1] ** 0.5
            self.R = r.to(self.device)
        with torch.no_grad():
            g.copy_(error @ self.R * (self.params.scale / error.shape[0]))

@dataclass
class FAParams:
    """``scale`` multiplies g_hat."""

    kind: str = "fa"
    scale: float = 1.0

    def check(self, path: str) -> None:
        positive(self.scale, path, "scale", allow_zero=True)


@SYNTHESIZERS.register("fa", FAParams)
class FeedbackAlignment(FixedFeedback):
    """g_hat = delta B, B fixed random (a buffer); the receiver's component fills it (module doc)."""

    def __init__(self, params: FAParams, h_size: int, context_size: int, generator: torch.Generator,
                 device: torch.device, optimizer: OptimizerSpec):
        super().__init__(params, h_size, generator, device)  # B is drawn from the seed once its shape is known
        self.register_buffer("B", torch.zeros(0, 0, device=device))

    def feedback(self, shape: torch.Size) -> torch.Tensor:
        """B, of the receiver's first-layer weight ``shape`` (units, in)."""
        if self.B.shape != shape:
            gen = torch.Generator().manual_seed(self.seed)
            self.B = (torch.randn(*shape, generator=gen) / shape[1] ** 0.5).to(self.device)
        return self.B

    def fill(self, batch_id: int, g: torch.Tensor) -> None:
        """The feedback for batch ``batch_id``'s message: ``g`` (B, h_size), batch mean, times ``scale``."""
        placeholder = self.pending.get(batch_id)
        if placeholder is not None:
            with torch.no_grad():
                placeholder.copy_(g * self.params.scale)


class LayerTap:
    """A forward hook keeping the last input and output of a layer (picklable: they are not kept)."""

    def __init__(self) -> None:
        self.inp: torch.Tensor | None = None
        self.out: torch.Tensor | None = None

    def __getstate__(self) -> dict:
        return {"inp": None, "out": None}

    def __call__(self, module: nn.Module, args: tuple, out: torch.Tensor) -> None:
        self.inp, self.out = args[0], out


def first_linear(body: nn.Module) -> nn.Linear | None:
    """The first ``nn.Linear`` of a body (its input is the agent's whole input), if any."""
    return next((m for m in body.modules() if isinstance(m, nn.Linear)), None)


def tap_layer(module: nn.Linear) -> LayerTap:
    """Install (once) and return the input/output tap of ``module``."""
    return _installed(module, "_layer_tap", LayerTap)


def aligned_feedback(objective: torch.Tensor, tap: LayerTap, leaf: torch.Tensor, B: torch.Tensor) -> torch.Tensor:
    """FA's g_hat for ``leaf`` (one of the receiver's inputs, shape (B, h)): delta = d objective / da at the
    tapped layer, then the gradient of <delta, x B^T> with respect to ``leaf`` (= delta B restricted to the
    leaf's columns of x, however the receiver concatenates its inputs). Graphs are kept for the backward pass."""
    (delta,) = torch.autograd.grad(objective, tap.out, retain_graph=True, allow_unused=True)
    if delta is None:
        return torch.zeros_like(leaf)
    (g,) = torch.autograd.grad((delta.detach() * F.linear(tap.inp, B)).sum(), leaf, retain_graph=True,
                               allow_unused=True)
    return torch.zeros_like(leaf) if g is None else g.detach()


class OutputTap:
    """A forward hook keeping the last output of the module that feeds a loss port (picklable)."""

    def __init__(self) -> None:
        self.out: torch.Tensor | None = None

    def __getstate__(self) -> dict:
        return {"out": None}

    def __call__(self, module: nn.Module, args: tuple, out: torch.Tensor) -> None:
        self.out = out


def tap(module: nn.Module) -> OutputTap:
    """Install (once) and return the output tap of ``module``."""
    return _installed(module, "_output_tap", OutputTap)


def _installed(module: nn.Module, attr: str, make: type) -> Any:
    """The forward hook kept as ``module.<attr>``, made and registered the first time."""
    existing = getattr(module, attr, None)
    if existing is None:
        existing = make()
        setattr(module, attr, existing)
        module.register_forward_hook(existing)
    return existing
