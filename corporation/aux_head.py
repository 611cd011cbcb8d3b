"""DNI + Aux (Jaderberg et al. 2017, sec. 3.1): an auxiliary head that predicts, from each step of an
update window, the synthetic gradient at the window's end, training the recurrent core it reads."""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

from .interfaces import Stats, debiased_rms
from .optim import clear_grads, make_optimizer

if TYPE_CHECKING:
    from .spec import AgentSpec


class AuxHead(nn.Module):
    """DNI + Aux: a zero-initialised linear head A that predicts, from each step i of the window (steps after
    a sequence start only), the synthetic gradient M(s_end) of the window's END boundary (zero where the
    sequence ends there): "the synthetic gradient T steps ahead". A reads the step's output h_i, or with
    ``state.aux_input: state`` its whole carried state s_i (for an LSTM the concatenated (h, c)).
    The regression ``aux_weight * mean_i ||A(h_i) - M(s_end)||^2`` (summed over units,
    batch mean; the target is M's raw per-example output, detached) is an auxiliary loss only: it trains A
    and this agent's recurrent body, its value is never used, and its gradient never reaches the
    window-start state, so the state M's target stays exactly the bootstrapped one. With
    ``state.aux_normalize`` the target is divided by its running RMS (EMA 0.99 of its mean square,
    bias-corrected) and the loss is averaged over units: about 1 - r2 whatever the scale of M's output,
    which grows during training (on Copy the raw loss rose 6x in 100k ticks). The logged ``aux/loss`` is
    always the per-example squared error summed over units (of the normalised target, if so), so that
    ``aux/r2`` holds. See docs/rnn.md."""

    def __init__(self, body: nn.Module, spec: AgentSpec):
        super().__init__()
        size = body.state_size()
        self.from_h = spec.state.aux_input == "h"
        with torch.random.fork_rng(devices=[]):
            self.net = nn.Linear(body.hidden if self.from_h else size, size)
        with torch.no_grad():  # zero-initialised (like M): no aux gradient reaches the core until A learns
            self.net.weight.zero_()
            self.net.bias.zero_()
        device = next(body.parameters()).device
        self.net.to(device)
        self.optimizer = make_optimizer(spec.state.sg.optimizer or spec.optimizer, self.net.parameters())
        self.states: list[torch.Tensor] = []
        self.stats = Stats(device)
        self.normalize = spec.state.aux_normalize
        self.target_sq = torch.zeros((), device=device)  # aux_normalize: running mean square of the target
        self.seen = 0

    def __setstate__(self, state: dict) -> None:
        """A checkpoint from before ``aux_normalize`` existed resumes with the raw target it was run with."""
        state.setdefault("normalize", False)
        state.setdefault("target_sq", torch.zeros(()))
        state.setdefault("seen", 0)
        super().__setstate__(state)

    def record(self, state: tuple[torch.Tensor, ...], start: bool) -> None:
        """Keep what A reads of this step (a sequence start forgets the old sequence's steps)."""
        if start:
            self.states.clear()
        self.states.append(state[0] if self.from_h else torch.cat(state, dim=1))

    def fit(self, sg: nn.Module | None, end_state: torch.Tensor, body: nn.Module, weight: float,
            tick: int) -> None:
        """Regress A(s_i) on the boundary's g_hat; accumulate the body's gradient; step A at once."""
        if not self.states:
            return
        with torch.no_grad():
            target = torch.zeros_like(end_state) if sg is None else sg(end_state.detach(), None)
        states = torch.stack(self.states)  # (steps, B, S)
        pred = self.net(states)
        if self.normalize:
            self.target_sq.mul_(0.99).add_(0.01 * target.pow(2).mean())
            self.seen += 1
            target = target / debiased_rms(self.target_sq, self.seen)
        error = ((pred - target) ** 2).sum(dim=2).mean()  # per-example squared error, as Stats' r2 needs
        loss = error / target.shape[-1] if self.normalize else error
        params = [p for p in body.parameters() if p.requires_grad]
        mine = list(self.net.parameters())
        grads = torch.autograd.grad(weight * loss, params + mine, retain_graph=True, allow_unused=True)
        for p, g in zip(params + mine, grads):
            if g is not None:
                p.grad = g if p.grad is None else p.grad + g
        self.optimizer.step()
        clear_grads(self.optimizer)
        self.stats.add(error.detach(), pred[-1].detach(), target, 0)
