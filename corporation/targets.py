"""M's target options (``sg.target``): bootstrapped, discounted, n-step, lambda-weighted and exact.

Notation (per update window / per receiver; all gradients batch-mean, as autograd gives them; M's target
is B times this, the per-example gradient):

- ``l``: the part of the gradient at the leaf (the receiver's detached ``dni`` input, or the window-start
  state of an RNN) that comes from the receiver's own losses (and from everything it backpropagates that is
  not the bootstrapped synthetic gradient);
- ``J^T v``: the vector-Jacobian product of the receiver's computation from that leaf to the tensor the
  bootstrapped synthetic gradient ``g_next`` (as applied: scaled, clipped, divided by B) was applied to;
- ``G``: the target the next M received (per-example), where one exists.

Targets:

- ``bootstrap`` (default, gamma 1: the engine's behaviour since the first release): ``l + gamma J^T g_next``.
- ``nstep`` (recurrent state M only): ``G_k = l_k + gamma J_k^T G_{k+1}`` unrolled over ``horizon`` windows,
  ``G_{k+horizon} = g_hat`` (the bootstrap after ``horizon`` windows of true loss).
- ``lambda``: ``G_k = l_k + gamma J_k^T [(1 - lam) g_next + lam G_next]`` (the lambda-return of TD(lambda),
  forward view: BP(lambda), Pemberton et al. 2024). On the state M it is truncated after ``horizon``
  windows (``G`` there = g_hat); on an edge ``G_next`` is the target the receiver's own out-edge M got, so
  the recursion runs down the whole chain (lam = 1, gamma = 1: the exact backprop gradient).
- ``exact`` (diagnosis only, NOT decoupled in its targets): lambda with gamma = lam = 1; on an edge the true
  gradient of the downstream loss (when every edge below is ``exact`` too), on the state M the true gradient
  of the next ``horizon`` windows' loss (exact when ``horizon`` covers the rest of the sequence).

With n-step, lambda and exact targets the receiver keeps each window's graph until the later targets it
needs arrive (the saved parameters are cloned at forward time, :class:`KeepSaved`, so the Jacobians are
those of the network as it ran); M's target therefore comes one or more windows (ticks) later. The
sender's update is never delayed: it still applies g_hat at once.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import torch
from torch import nn

CHAINED = ("nstep", "lambda", "exact")


def chained(params: object) -> bool:
    """Whether an M's target needs the receiver's graph kept past its backward pass."""
    return getattr(params, "target", "bootstrap") in CHAINED


def needs_split(params: object) -> bool:
    """Whether the leaf gradient must be split into its own-loss and bootstrapped parts (extra VJP)."""
    return chained(params) or getattr(params, "gamma", 1.0) != 1.0


def mixing(params: object) -> tuple[float, float]:
    """(gamma, lam) of an M's target (exact: 1, 1; nstep: gamma, 1)."""
    target = getattr(params, "target", "bootstrap")
    if target == "exact":
        return 1.0, 1.0
    gamma = float(getattr(params, "gamma", 1.0))
    return gamma, (1.0 if target == "nstep" else float(getattr(params, "lam", 1.0)))


def vjp(outputs: list[torch.Tensor], inputs: list[torch.Tensor], vectors: list[torch.Tensor],
        retain: bool = True) -> list[torch.Tensor]:
    """J^T v from ``outputs`` (with graphs) back to ``inputs`` (zeros where no path); the graph is kept."""
    pairs = [(o, v) for o, v in zip(outputs, vectors) if o.requires_grad]
    if not pairs:
        return [torch.zeros_like(x) for x in inputs]
    grads = torch.autograd.grad([o for o, _ in pairs], inputs, [v for _, v in pairs], retain_graph=retain,
                                allow_unused=True)
    return [torch.zeros_like(x) if g is None else g for x, g in zip(inputs, grads)]


def _pack(t: torch.Tensor) -> torch.Tensor:
    """Clone parameters (and views of them) saved for backward: the optimizer changes them in place.
    Everything is stored detached (first-order backward only needs the values): a saved output kept with
    its grad_fn would be a reference cycle through the graph that Python's gc cannot free."""
    base = t._base if t._base is not None else t
    if base.is_leaf and base.requires_grad and isinstance(base, nn.Parameter):
        return t.detach().clone()
    return t.detach()


def _unpack(t: torch.Tensor) -> torch.Tensor:
    return t


class KeepSaved:
    """Forward pre/post hooks that make a module's graph reusable after its optimizer stepped: within the
    forward, saved parameters are cloned (``torch.autograd.graph.saved_tensors_hooks``). Picklable."""

    def __init__(self) -> None:
        self.open: list = []

    def __getstate__(self) -> dict:
        return {"open": []}

    def pre(self, module: nn.Module, args: tuple) -> None:
        ctx = torch.autograd.graph.saved_tensors_hooks(_pack, _unpack)
        ctx.__enter__()
        self.open.append(ctx)

    def post(self, module: nn.Module, args: tuple, out: object) -> None:
        if self.open:
            self.open.pop().__exit__(None, None, None)

    def attach(self, module: nn.Module) -> None:
        """Install on ``module`` (once)."""
        if getattr(module, "_keep_saved", None) is None:
            module._keep_saved = self
            module.register_forward_pre_hook(self.pre)
            module.register_forward_hook(self.post)


@dataclass
class Window:
    """One closed window of a recurrent agent: leaf (window-start state) -> end (window-end state)."""

    leaf_id: int  # the state M's record id of the window-start boundary
    leaf: tuple[torch.Tensor, ...]
    end: tuple[torch.Tensor, ...]
    own: torch.Tensor  # l: the leaf gradient without the bootstrapped part (batch mean, concatenated)
    g_end: torch.Tensor  # g_hat applied at the window end (batch mean; zeros when none was applied)
    fresh: bool  # the window began a new sequence: the leaf boundary's target is zero


class StateTargets:
    """The recurrent state M's targets for ``sg.target`` other than plain bootstrap (see the module doc).

    The agent calls :meth:`before_backward` when it closes a window (with the g_hat it applies) and
    :meth:`after_backward` after the backward pass; the latter returns the (record id, per-example target)
    pairs that are complete."""

    def __init__(self, params: object):
        self.params = params
        self.gamma, self.lam = mixing(params)
        self.horizon = int(getattr(params, "horizon", 1)) if chained(params) else 1
        self.windows: deque[Window] = deque()
        self._boot: torch.Tensor | None = None  # J^T g_end of the window being closed
        self._end: tuple[torch.Tensor, ...] = ()
        self._g_end: torch.Tensor | None = None

    def __getstate__(self) -> dict:
        """Checkpoints: graphs cannot be saved; a resumed run starts its chains afresh."""
        state = self.__dict__.copy()
        state.update(windows=deque(), _boot=None, _end=(), _g_end=None)
        return state

    def before_backward(self, leaf: tuple[torch.Tensor, ...], end: tuple[torch.Tensor, ...],
                        g_end: torch.Tensor | None) -> None:
        """The window closes with ``g_end`` (concatenated, as applied) on ``end``; computes J^T g_end."""
        size = sum(s.shape[1] for s in end)
        self._end = end
        self._g_end = g_end if g_end is not None else end[0].new_zeros(end[0].shape[0], size)
        if g_end is None:
            self._boot = None
            return
        parts = g_end.split([s.shape[1] for s in end], dim=1)
        self._boot = torch.cat(vjp(list(end), list(leaf), list(parts)), dim=1)

    def after_backward(self, leaf_id: int, leaf: tuple[torch.Tensor, ...], fresh: bool
                       ) -> list[tuple[int, torch.Tensor]]:
        """After the backward pass: the complete targets, as (record id, per-example target)."""
        total = torch.cat([s.grad if s.grad is not None else torch.zeros_like(s) for s in leaf], dim=1)
        own = total if self._boot is None else total - self._boot
        rows = total.shape[0]
        if not chained(self.params):  # discounted bootstrap
            if fresh:
                return [(leaf_id, torch.zeros_like(total))]
            boot = self._boot if self._boot is not None else torch.zeros_like(total)
            return [(leaf_id, (own + self.gamma * boot) * rows)]
        if self.windows and self.windows[-1].leaf_id != leaf_id - 1:
            self.windows.clear()  # a skipped window broke the chain
        self.windows.append(Window(leaf_id, leaf, self._end, own, self._g_end, fresh))
        self._boot, self._end, self._g_end = None, (), None
        if len(self.windows) < self.horizon:
            return []
        target = self._chain(list(self.windows))
        first = self.windows.popleft()
        return [(first.leaf_id, target * rows)]

    def _chain(self, ws: list[Window]) -> torch.Tensor:
        """G of the first window's leaf: G_j = l_j + gamma J_j^T B_{j+1}, B = (1-lam) g_hat + lam G,
        B after the last window = its g_hat; G of a fresh window's leaf = 0."""
        v = ws[-1].g_end
        g = v
        for i in range(len(ws) - 1, -1, -1):
            w = ws[i]
            if w.fresh:
                g = torch.zeros_like(w.own)
            else:
                parts = v.split([s.shape[1] for s in w.end], dim=1)
                g = w.own + self.gamma * torch.cat(vjp(list(w.end), list(w.leaf), list(parts)), dim=1)
            if i > 0:
                v = (1.0 - self.lam) * ws[i - 1].g_end + self.lam * g
        return g
