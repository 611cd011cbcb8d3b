"""Spaces: how an environment's observation becomes a port tensor, and how an agent's output drives an action.

Observations: ``Box`` (any shape, flattened to float32) and ``Discrete(n)`` (one-hot). Anything else is a
one-line error naming the space.

Actions, ``policy`` mode (an actor-critic head; the loss port's size is the layout's width):

- ``Discrete(n)``: output ``[logits (n) | value (1)]``, a categorical policy.
- ``Box`` of shape ``(d,)``: output ``[mean (d) | log_std (d) | value (1)]``, a diagonal Gaussian over u;
  log_std (the output plus the task's ``init_log_std``, so a zero-initialised policy layer starts at that
  spread) is clamped to [-5, 2]. Where a dimension has finite bounds the env gets the squashed
  ``low + (high - low) * sigmoid(u)``, else u itself. The policy gradient uses the Gaussian log-probability of
  u: the squashing's Jacobian does not depend on the parameters once u is drawn, so it drops out of the
  gradient. The entropy bonus is the Gaussian's (of u). The greedy action (tests) is the squashed mean.

Actions, ``one_hot`` mode (``Box (d,)`` with finite bounds): output ``[logits (d) | value (1)]``, a categorical
policy over the box's d "axis" actions: the chosen coordinate at ``high``, the others at ``low``. For an env whose
continuous action is a set of non-negative pushes (MPE), these are exactly the discrete moves, so a categorical
policy can drive the continuous-action env (the other agents keep their continuous actions).

Actions, ``direct`` mode (``Box (d,)`` only): output ``[action (d)]``, clipped to the bounds and handed to the
env as is; no policy loss (the agent learns through its other edges, e.g. a message to another agent).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from gymnasium import spaces

LOG_STD_MIN, LOG_STD_MAX = -5.0, 2.0


class UnsupportedSpace(ValueError):
    """A space the scenario cannot drive; the caller turns it into a ScenarioError naming the key."""


@dataclass(frozen=True)
class ObsCodec:
    """Observation -> float32 tensor (flattened Box, one-hot Discrete)."""

    size: int
    onehot: int = 0  # > 0: Discrete(onehot)
    keep: tuple[int, int] | None = None  # [start, stop) slice of the flat observation

    @classmethod
    def of(cls, space: Any, keep: list[int] | None = None) -> ObsCodec:
        if isinstance(space, spaces.Box):
            size, onehot = int(np.prod(space.shape)), 0
        elif isinstance(space, spaces.Discrete):
            size = onehot = int(space.n)
        else:
            raise UnsupportedSpace(f"observation space {space} is not supported (Box or Discrete)")
        if keep is None:
            return cls(size, onehot)
        if len(keep) != 2 or not 0 <= keep[0] < keep[1] <= size:
            raise UnsupportedSpace(f"observation slice {keep} must be [start, stop) within 0..{size}")
        return cls(keep[1] - keep[0], onehot, (keep[0], keep[1]))

    def encode(self, obs: Any, device: torch.device) -> torch.Tensor:
        """A batch of observations (first axis = rows) -> (rows, size)."""
        arr = np.asarray(obs)
        if self.onehot:
            x = np.zeros((arr.shape[0], self.onehot), dtype=np.float32)
            x[np.arange(arr.shape[0]), arr.reshape(-1).astype(np.int64)] = 1.0
        else:
            x = arr.reshape(arr.shape[0], -1).astype(np.float32)
        if self.keep is not None:
            x = x[:, self.keep[0]: self.keep[1]]
        return torch.as_tensor(np.ascontiguousarray(x), device=device)


class ActionHead:
    """Maps an agent's output to actions: ``size`` is the loss port's width (see the module doc)."""

    size: int
    has_value: bool = True

    def split(self, out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(distribution parameters, value or None)."""
        if not self.has_value:
            return out, None
        return out[:, :-1], out[:, -1]

    def sample(self, params: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(action, log-probability, entropy), one per row; the last two keep their graphs."""
        raise NotImplementedError

    def greedy(self, params: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def to_env(self, action: torch.Tensor) -> np.ndarray:
        raise NotImplementedError


class CategoricalHead(ActionHead):
    def __init__(self, n: int):
        self.n = n
        self.size = n + 1

    def sample(self, params, gen):
        logp_all = torch.log_softmax(params, dim=1)
        u = torch.rand(params.shape[0], 1, generator=gen).to(params.device)
        cdf = logp_all.detach().exp().cumsum(1)
        action = (u > cdf).sum(1).clamp(max=self.n - 1)  # inverse-CDF sampling from the task's generator
        logp = logp_all.gather(1, action[:, None])[:, 0]
        entropy = -(logp_all.exp() * logp_all).sum(1)
        return action, logp, entropy

    def greedy(self, params):
        return params.argmax(1)

    def to_env(self, action):
        return action.cpu().numpy().astype(np.int64)


class OneHotHead(CategoricalHead):
    def __init__(self, low: np.ndarray, high: np.ndarray):
        super().__init__(len(low))
        self.low, self.high = low.astype(np.float32), high.astype(np.float32)

    def to_env(self, action):
        k = action.cpu().numpy().astype(np.int64)
        out = np.repeat(self.low[None, :], len(k), axis=0)
        out[np.arange(len(k)), k] = self.high[k]
        return out


class GaussianHead(ActionHead):
    def __init__(self, low: np.ndarray, high: np.ndarray, init_log_std: float = 0.0):
        self.init_log_std = init_log_std
        self.low = torch.as_tensor(low, dtype=torch.float32)
        self.high = torch.as_tensor(high, dtype=torch.float32)
        self.d = len(low)
        self.size = 2 * self.d + 1

    def sample(self, params, gen):
        mean = params[:, : self.d]
        log_std = (params[:, self.d:] + self.init_log_std).clamp(LOG_STD_MIN, LOG_STD_MAX)
        std = log_std.exp()
        eps = torch.randn(mean.shape, generator=gen).to(mean.device)
        action = (mean + std * eps).detach()
        logp = (-0.5 * ((action - mean) / std) ** 2 - log_std - 0.5 * np.log(2 * np.pi)).sum(1)
        entropy = (log_std + 0.5 * np.log(2 * np.pi * np.e)).sum(1)
        return action, logp, entropy

    def greedy(self, params):
        return params[:, : self.d]

    def to_env(self, action):
        u = action.detach().cpu()
        finite = torch.isfinite(self.low) & torch.isfinite(self.high)
        span = torch.where(finite, self.high - self.low, torch.ones_like(self.low))
        a = torch.where(finite, torch.where(finite, self.low, 0.0) + span * torch.sigmoid(u), u)
        return a.numpy().astype(np.float32)


class DirectHead(ActionHead):
    has_value = False

    def __init__(self, low: np.ndarray, high: np.ndarray):
        self.low = torch.as_tensor(low, dtype=torch.float32)
        self.high = torch.as_tensor(high, dtype=torch.float32)
        self.size = len(low)

    def greedy(self, params):
        return params

    def to_env(self, action):
        a = torch.maximum(torch.minimum(action.detach().cpu(), self.high), self.low)
        return a.numpy().astype(np.float32)


def action_head(space: Any, mode: str = "policy", init_log_std: float = 0.0) -> ActionHead:
    """The head driving ``space`` in ``mode`` (policy | one_hot | direct); UnsupportedSpace otherwise.
    ``init_log_std`` offsets a Gaussian policy's log_std output (ignored by the other heads)."""
    if isinstance(space, spaces.Discrete) and mode == "policy":
        if int(space.start) != 0:
            raise UnsupportedSpace(f"action space {space} starts at {space.start}; only Discrete(n) from 0")
        return CategoricalHead(int(space.n))
    if isinstance(space, spaces.Box) and len(space.shape) == 1:
        low = np.where(np.isfinite(space.low), space.low, -np.inf).astype(np.float32)
        high = np.where(np.isfinite(space.high), space.high, np.inf).astype(np.float32)
        if mode == "one_hot":
            if not (np.isfinite(low).all() and np.isfinite(high).all()):
                raise UnsupportedSpace(f"action space {space} has infinite bounds: one_hot needs a bounded Box")
            return OneHotHead(low, high)
        return GaussianHead(low, high, init_log_std) if mode == "policy" else DirectHead(low, high)
    if mode in ("direct", "one_hot"):
        raise UnsupportedSpace(f"action space {space} cannot be driven directly (a 1-D Box only)")
    raise UnsupportedSpace(f"action space {space} cannot be driven (Discrete or a 1-D Box)")
