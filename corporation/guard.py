"""The divergence guard: find the first non-finite tensor among named ones, with one device sync.

A run that produces a non-finite loss, g_hat, M / I / Aux loss or parameter stops with :class:`Diverged`
(exit code 3 from the CLI) naming the quantity, where it is and the tick; the last good checkpoint stays.
"""
from __future__ import annotations

import torch


class Diverged(RuntimeError):
    """Training produced a non-finite number (not a user error: exit code 3, see README "Exit codes")."""

    def __init__(self, tick: int, what: str):
        self.tick = tick
        self.what = what
        super().__init__(f"diverged at tick {tick}: {what}")

    def __reduce__(self) -> tuple:
        """Picklable (raised in a worker process, it reaches the parent whole)."""
        return (Diverged, (self.tick, self.what))


def first_nonfinite(named: list[tuple[str, torch.Tensor]]) -> str | None:
    """The name of the first tensor holding a NaN or an infinity, else None (one sync for all of them).

    Fast path: one sum per tensor (a NaN or an infinity makes the sum non-finite, and a sum is several
    times cheaper than a max-abs pass). Only when some sum is not finite, which an overflow of large
    finite values can also cause, are the tensors checked exactly."""
    if not named:
        return None
    tensors = [t.detach() for _, t in named]
    device = tensors[0].device
    if all(t.device == device and t.is_floating_point() for t in tensors):
        sums = torch.stack([t.sum() for t in tensors])
        if bool(sums.isfinite().all()):
            return None
    peaks = [t.abs().max().to(device) if t.numel() else t.new_zeros((), device=device) for t in tensors]
    flags = torch.stack([p.to(device, torch.float32) for p in peaks]).isfinite()
    if bool(flags.all()):
        return None
    return named[int((~flags).nonzero()[0, 0])][0]
