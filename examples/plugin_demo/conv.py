"""Model kind ``conv1d``: a 1-D convolution over the agent's input vector (B, in) seen as one channel of
length ``in``, ReLU, then a linear layer to ``out`` (B, out)."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from corporation.errors import ScenarioError
from corporation.registry import MODELS


@dataclass
class Conv1dParams:
    """``channels`` filters of width ``kernel`` (same padding); ``out: null`` is inferred from the edge."""

    kind: str = "conv1d"
    channels: int = 8
    kernel: int = 5
    out: int | None = None

    def check(self, path: str) -> None:
        for key in ("channels", "kernel"):
            if getattr(self, key) < 1:
                raise ScenarioError(f"must be >= 1, got {getattr(self, key)}", f"{path}.{key}")
        if self.kernel % 2 == 0:
            raise ScenarioError(f"must be odd (same padding), got {self.kernel}", f"{path}.kernel")


class Conv1dBody(nn.Module):
    def __init__(self, params: Conv1dParams, in_size: int, out_size: int):
        super().__init__()
        self.conv = nn.Conv1d(1, params.channels, params.kernel, padding=params.kernel // 2)
        self.head = nn.Linear(params.channels * in_size, out_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, in) -> (B, out)
        return self.head(torch.relu(self.conv(x.unsqueeze(1))).flatten(1))


@MODELS.register("conv1d", Conv1dParams)
def build_conv1d(params: Conv1dParams, in_size: int, out_size: int) -> nn.Module:
    """Built under corporation's forked, agent-seeded RNG (registry.MODELS rule 1): PyTorch's own init."""
    return Conv1dBody(params, in_size, out_size)
