"""The divergence guard: find the first non-finite tensor among named ones, with one device sync.

A run that produces a non-finite loss, g_hat, M / I / Aux loss or parameter stops with :class:`Diverged`
(exit code 3 from the CLI) naming the quantity, where it is and the tick; the last good checkpoint stays.
"""
from __future__ import annotations

import math

import torch


class Diverged(RuntimeError):
    """Training produced a non-finite number (not a user error: exit code 3, see README "Exit codes")."""

    def __init__(self, tick: int, what: str):
        self.tick = tick
        self.what = what
        super().__init__(f"diverged at tick {tick}: {what}")


def first_nonfinite(named: list[tuple[str, torch.Tensor]]) -> str | None:
    """The name of the first tensor holding a NaN or an infinity, else None (one sync for all of them)."""
    if not named:
        return None
    tensors = [t.detach() for _, t in named]
    if len({t.device for t in tensors}) == 1 and all(t.is_floating_point() for t in tensors):
        peaks = torch._foreach_norm(tensors, ord=math.inf)  # max |x| per tensor: nan / inf survive it
    else:
        peaks = [t.abs().max().to(tensors[0].device) if t.numel() else t.new_zeros(()) for t in tensors]
    flags = torch.stack([p.to(peaks[0].device) for p in peaks]).isfinite()
    if bool(flags.all()):
        return None
    return named[int((~flags).nonzero()[0, 0])][0]
