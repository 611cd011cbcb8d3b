"""Direct Feedback Alignment as a synthesizer (``sg.kind: dfa``; Nøkland 2016, the unified view of
Czarnecki et al. 2017): g_hat for a message h is the output error at a loss port mapped through a FIXED
random matrix, g_hat = e R (e: the per-example gradient B * dL/d(output) at ``port``, shape (B, out);
R: (out, h_size), drawn once from N(0, 1/out), never trained). It ignores h.

The error of batch k exists only once the agent feeding ``port`` has scored batch k, so the sender's g_hat
is a placeholder filled just before the backward pass of the tick (:func:`fill_feedback`, called by
:func:`corporation.component.backward_together`): DFA is decoupled from the backward pass of the layers
above, not from their forward pass in time, so sender and output agent must update in the same tick (same
clock and update window); a batch whose error is missing that tick gets zero. The regression target that
comes back (the bootstrapped DNI target) is only measured (``sg/<edge>/cosine``, ``r2``): R never changes.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
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


@SYNTHESIZERS.register("dfa", DFAParams)
class DirectFeedback(nn.Module):
    """g_hat = e R with a fixed random R (a buffer, not a parameter: nothing can train it)."""

    def __init__(self, params: DFAParams, h_size: int, context_size: int, generator: torch.Generator,
                 device: torch.device, optimizer: OptimizerSpec):
        super().__init__()
        self.params = params
        self.h_size = h_size
        self.seed = int(torch.randint(0, 2**62, (), generator=generator))  # R is drawn from it when e's size is known
        self.device = device
        self.register_buffer("R", torch.zeros(0, h_size, device=device))
        self.pending: dict[int, torch.Tensor] = {}  # batch id -> the placeholder g_hat (batch mean) applied
        self.stats = Stats(device)

    @property
    def port(self) -> str:
        return self.params.port

    def predict(self, batch_id: int, h: torch.Tensor, context: torch.Tensor | None, tick: int) -> torch.Tensor:
        """A zero placeholder for g_hat (filled by :meth:`fill` before the backward pass)."""
        g = torch.zeros_like(h.detach())
        self.pending[batch_id] = g
        if len(self.pending) > 64:
            del self.pending[min(self.pending)]
        return g

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

    def train_on(self, batch_id: int, target: torch.Tensor, tick: int) -> None:
        """Never trains: only measures how the fed-back g_hat compares with the target that came back."""
        g = self.pending.pop(batch_id, None)
        if g is None:
            return
        pred = g * (g.shape[0] / self.params.scale) if self.params.scale else g
        loss = ((pred - target) ** 2).sum() / g.shape[0]
        self.stats.add(loss, pred, target, 0)


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
    existing = getattr(module, "_output_tap", None)
    if existing is None:
        existing = module._output_tap = OutputTap()
        module.register_forward_hook(existing)
    return existing
