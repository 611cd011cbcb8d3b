"""What travels on an edge: a message forward, a target (gradient) back. Pure data."""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class Message:
    """An activation ``h`` about batch ``batch_id`` (the tick the task emitted that input), sent at ``sent``.
    On a ``backprop`` edge ``h`` keeps its autograd graph; on a ``dni`` edge it is detached."""

    batch_id: int
    h: torch.Tensor
    sent: int
    start: bool = False
    end: bool = False
    reset: torch.Tensor | None = None  # bool per row: that row's episode starts here (see Emission.reset)
    window: int = -1  # the sender component's update count at sending (a locked message's graph is spent after)


@dataclass
class GradientMessage:
    """A target for the sender's M: the (per-example) gradient w.r.t. the message of ``batch_id``."""

    batch_id: int
    g: torch.Tensor
    sent: int
