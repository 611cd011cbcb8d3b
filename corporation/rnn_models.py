"""Recurrent agent bodies: ``lstm``, ``gru`` and ``rnn`` (one cell stepped once per agent tick).

The state is a tuple of tensors ((h, c) for an LSTM, (h,) otherwise); it is carried across ticks, reset
at sequence starts, and cut at each update window (truncated BPTT). The output is a linear readout of h
(``readout: true``, size ``out``, inferred from a loss port when null) or h itself. Parameters are drawn
from the agent's generator (U(-1/sqrt(hidden), 1/sqrt(hidden)) for the cell, see ``models.init_parameters``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from .errors import ScenarioError
from .models import init_parameters
from .registry import MODELS
from .schema import positive


@dataclass
class RecurrentParams:
    recurrent: ClassVar[bool] = True
    kind: str = "lstm"
    hidden: int = 128
    out: int | None = None
    readout: bool = True

    def check(self, path: str) -> None:
        positive(self.hidden, path, "hidden")
        positive(self.out, path, "out")
        if not self.readout and self.out is not None and self.out != self.hidden:
            raise ScenarioError(f"without a readout the output is h, so out must equal hidden ({self.hidden})",
                                f"{path}.out")

    def fixed_out(self) -> int | None:
        """The output size this body imposes, if any (h itself when there is no readout)."""
        return self.out if self.readout else self.hidden


CELLS = {"lstm": nn.LSTMCell, "gru": nn.GRUCell, "rnn": nn.RNNCell}


class RecurrentBody(nn.Module):
    recurrent = True

    def __init__(self, kind: str, in_size: int, hidden: int, out_size: int, readout: bool):
        super().__init__()
        self.kind = kind
        self.cell = CELLS[kind](in_size, hidden)
        self.hidden = hidden
        self.readout = nn.Linear(hidden, out_size) if readout else None

    def init_state(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        zeros = x.new_zeros(x.shape[0], self.hidden)
        return (zeros, zeros.clone()) if self.kind == "lstm" else (zeros,)

    def forward(self, x: torch.Tensor, state: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, tuple]:
        if self.kind == "lstm":
            h, c = self.cell(x, state)
            new = (h, c)
        else:
            h = self.cell(x, state[0])
            new = (h,)
        return (self.readout(h) if self.readout is not None else h), new

    def state_size(self) -> int:
        return self.hidden * (2 if self.kind == "lstm" else 1)


def _register(kind: str) -> None:
    @MODELS.register(kind, RecurrentParams)
    def build(params: RecurrentParams, in_size: int, out_size: int,
              generator: torch.Generator | None = None) -> nn.Module:
        module = RecurrentBody(kind, in_size, params.hidden, out_size, params.readout)
        if generator is not None:
            init_parameters(module, generator)
        return module


for _kind in CELLS:
    _register(_kind)
