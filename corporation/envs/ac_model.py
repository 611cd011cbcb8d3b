"""Model kind ``actor_critic``: separate policy and value MLPs whose outputs are concatenated as
``[policy parameters (out - 1) | value (1)]``, the layout of an action port (see :mod:`corporation.envs.spaces`).

The policy's last layer starts at exactly zero (a uniform categorical, or a Gaussian with mean 0 and
log_std 0), a deterministic version of the usual small-gain init of actor-critic policies. It is not an
``nn.Linear``, so ``init_parameters`` (which the factory runs with the agent's generator) leaves it alone;
every other layer is drawn from the agent's generator as usual. Separate networks keep the value regression from swamping the policy
features (with one shared trunk, A2C did not learn MPE speaker-listener within budget; see docs/rl.md).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from ..models import init_parameters, mlp
from ..registry import MODELS
from ..schema import positive


@dataclass
class ActorCriticParams:
    """``hidden``: layer sizes of each of the two MLPs; ``out: null`` is inferred from the action port."""

    kind: str = "actor_critic"
    out: int | None = None
    hidden: list[int] = field(default_factory=lambda: [64, 64])
    activation: Literal["relu", "tanh"] = "tanh"

    def check(self, path: str) -> None:
        positive(self.out, path, "out")
        if self.out is not None and self.out < 2:
            from ..errors import ScenarioError

            raise ScenarioError(f"needs out >= 2 (policy parameters and a value), got {self.out}", f"{path}.out")
        for i, h in enumerate(self.hidden):
            positive(h, f"{path}.hidden", str(i))


class ZeroLinear(nn.Module):
    """A linear layer initialised to zero (deliberately not an nn.Linear: ``init_parameters`` skips it)."""

    def __init__(self, in_size: int, out_size: int):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(out_size, in_size))
        self.bias = nn.Parameter(torch.zeros(out_size))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight, self.bias)


class ActorCritic(nn.Module):
    def __init__(self, in_size: int, out_size: int, hidden: list[int], activation: str):
        super().__init__()
        last = hidden[-1] if hidden else in_size
        self.pi = nn.Sequential(mlp(in_size, hidden, False, activation, True) if hidden else nn.Identity(),
                                ZeroLinear(last, out_size - 1))
        self.vf = nn.Sequential(mlp(in_size, hidden, False, activation, True) if hidden else nn.Identity(),
                                nn.Linear(last, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.pi(x), self.vf(x)], dim=1)


@MODELS.register("actor_critic", ActorCriticParams)
def build_actor_critic(params: ActorCriticParams, in_size: int, out_size: int,
                       generator: torch.Generator | None = None) -> nn.Module:
    module = ActorCritic(in_size, out_size, params.hidden, params.activation)
    if generator is not None:
        init_parameters(module, generator)  # every nn.Linear; the zero policy layer stays zero
    return module
