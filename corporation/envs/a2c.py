"""A2C inside the tick model: the acting agent's side of an action port (:class:`ActorCritic`: sampling,
the rollout segment WITH its autograd graphs, the loss) and the environment's side (:class:`Feedback`,
episode bookkeeping).

The split follows the seams: the task is the environment. It hands the acting agent an
:class:`ActorCritic` for each action port (the task hook ``learner(port)``), which lives in that agent
(``Agent.loss_ports``). At each of the agent's outputs the learner samples an action and passes it, detached,
to the task (``act(batch_id, action) -> Feedback``), which steps the environment and fills the feedback
(reward, termination) now or when every env agent has acted. The learner stores the transition with its
graph (log-prob, entropy, value); the task holds no graph. A transition can only be trained inside the
update window that produced its graph: once the agent's locked component has stepped (``window_closed``,
called by the agent when its window ends), stored graphs are spent. So, at the LAST output of each window,
the learner returns the loss of every stored transition of that window, bootstrapped with that last output's
value (detached); that last transition's env step is taken but never trained on (one transition of the
window is lost: an update window of T ticks trains T - 1 transitions with up-to-(T-1)-step returns).

The rollout learns the window length T from the calls between two ``window_closed`` (the first window is
therefore lost too); T = 1 cannot train anything and is an error (set the agent's ``update.unroll >= 2``).

Loss, averaged over the window's valid (transition, row) pairs:
``-log pi(a|s) * A + value_coef * 0.5 * (R - V)^2 - entropy_coef * H``, with the n-step return
``R_t = r_t + gamma * R_{t+1}`` cut at termination (R = r), bootstrapped at truncation with the
transition's own V(s_t) (the final observation's value is not computable by the task), at the window's end
with the last value, and advantage ``A = R - V`` (detached; standardised over
the window's valid pairs when ``normalize_advantage``).
"""
from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ..errors import CorporationError, ScenarioError
from ..schema import at_most, positive, within
from ..spec import MAX_ENVS, MAX_TICKS

if TYPE_CHECKING:
    from .spaces import ActionHead


@dataclass
class A2CKeys:
    """The keys the RL tasks share (``gymnasium``, ``pettingzoo``; docs/rl.md): the environment, the A2C loss and
    the greedy test episodes. Each task overrides ``kind`` and ``env`` (their defaults) and adds its own keys."""

    kind: str = ""
    env: str = ""
    env_kwargs: dict[str, Any] = field(default_factory=dict)  # passed to the env's factory
    num_envs: int = 16  # vectorised environments = rows of a batch
    gamma: float = 0.99
    value_coef: float = 0.5
    entropy_coef: float = 0.01
    reward_scale: float = 1.0  # rewards are multiplied by this in the loss (metrics stay raw)
    normalize_advantage: bool = False  # standardise the advantages of each update window
    init_log_std: float = 0.0  # Box actions: added to the policy's log_std output (its starting spread)
    test_episodes: int = 10
    test_seed: int = 1_000_000
    test_max_steps: int = 100_000

    def check_a2c(self, path: str) -> None:
        """The shared keys' ranges (one-line errors at ``path.key``)."""
        positive(self.num_envs, path, "num_envs")
        at_most(self.num_envs, MAX_ENVS, path, "num_envs", "environments stepped side by side")
        positive(self.value_coef, path, "value_coef", allow_zero=True)
        positive(self.entropy_coef, path, "entropy_coef", allow_zero=True)
        positive(self.reward_scale, path, "reward_scale")
        within(self.test_episodes, 0, MAX_ENVS, path, "test_episodes", "test environments")
        positive(self.test_max_steps, path, "test_max_steps")
        at_most(self.test_max_steps, MAX_TICKS, path, "test_max_steps")
        within(self.test_seed, 0, 2**32 - 1 - MAX_ENVS, path, "test_seed", "environment seeds")
        if not 0.0 <= self.gamma <= 1.0:
            raise ScenarioError(f"must be within [0, 1], got {self.gamma}", f"{path}.gamma")


@dataclass
class Feedback:
    """The environment's answer to one batch of actions (N rows), made by the task when it gets the actions;
    reward and termination are filled once the environment has stepped (at once, or when every env agent
    has acted). No autograd graph: this is all that crosses from the environment to the learner."""

    valid: torch.Tensor  # (N,) bool: rows whose agent acted in a live episode
    reward: torch.Tensor | None = None  # (N,) scaled by reward_scale
    terminated: torch.Tensor | None = None  # (N,) bool
    truncated: torch.Tensor | None = None  # (N,) bool

    def fill(self, reward: torch.Tensor, terminated: torch.Tensor, truncated: torch.Tensor) -> None:
        """The environment has stepped."""
        self.reward, self.terminated, self.truncated = reward, terminated, truncated


@dataclass
class Transition:
    """One output's share of the rollout, kept by the learner: its graphs and the env's feedback."""

    logp: torch.Tensor  # (N,) with graph
    entropy: torch.Tensor  # (N,) with graph
    value: torch.Tensor  # (N,) with graph
    feedback: Feedback


class Rollout:
    """The stored transitions of one action port within the current update window."""

    def __init__(self, port: str, gamma: float, value_coef: float, entropy_coef: float,
                 normalize_advantage: bool = False):
        self.port = port
        self.normalize_advantage = normalize_advantage
        self.gamma = gamma
        self.value_coef = value_coef
        self.entropy_coef = entropy_coef
        self.steps: list[Transition] = []
        self.calls = 0  # outputs seen in the current window
        self.window: int | None = None  # learned window length (outputs per update window)
        self.dropped = 0
        self.stats = {"policy_loss": 0.0, "value_loss": 0.0, "entropy": 0.0, "updates": 0}

    def on_output(self, value: torch.Tensor) -> torch.Tensor | None:
        """Called with each output's value BEFORE its transition is added: the window's loss, or None."""
        self.calls += 1
        if self.window is not None and self.calls >= self.window and self.steps:
            loss = self.loss(value.detach())
            self.steps.clear()
            return loss
        return None

    def add(self, step: Transition) -> None:
        self.steps.append(step)

    def window_closed(self) -> None:
        """The agent stepped: the stored graphs are spent. Learn the window length from this window."""
        if self.calls == 1 and self.window == 1:  # two windows of one output each
            raise CorporationError(f"the agent feeding task.{self.port} updates after every output "
                                   "(update.unroll: 1): an actor-critic update needs update.unroll >= 2 "
                                   "(it trains unroll - 1 transitions per update)")
        if self.calls:
            self.window = self.calls
        self.dropped += len(self.steps)
        self.steps.clear()
        self.calls = 0

    def loss(self, bootstrap: torch.Tensor) -> torch.Tensor:
        ret = bootstrap
        returns = []
        for s in reversed(self.steps):
            fb = s.feedback
            nxt = torch.where(fb.terminated, torch.zeros_like(ret),
                              torch.where(fb.truncated, s.value.detach(), ret))
            ret = fb.reward + self.gamma * nxt
            returns.append(ret)
        returns.reverse()
        R = torch.stack(returns)
        V = torch.stack([s.value for s in self.steps])
        logp = torch.stack([s.logp for s in self.steps])
        ent = torch.stack([s.entropy for s in self.steps])
        mask = torch.stack([s.feedback.valid for s in self.steps]).to(V.dtype)
        count = mask.sum().clamp_min(1.0)
        adv = (R - V).detach()
        if self.normalize_advantage:  # standardised over the window's valid pairs
            mean = (adv * mask).sum() / count
            std = (((adv - mean) ** 2 * mask).sum() / count).sqrt()
            adv = (adv - mean) / (std + 1e-8)
        policy = (-(logp * adv) * mask).sum() / count
        value = (0.5 * (R - V) ** 2 * mask).sum() / count
        entropy = (ent * mask).sum() / count
        st = self.stats
        st["policy_loss"] += float(policy.detach())
        st["value_loss"] += float(value.detach())
        st["entropy"] += float(entropy.detach())
        st["updates"] += 1
        return policy + self.value_coef * value - self.entropy_coef * entropy

    def read(self, prefix: str) -> dict[str, float]:
        """Loss components averaged since the last read; dropped transitions so far."""
        st = self.stats
        out = {f"{prefix}/dropped_transitions": float(self.dropped)}
        if st["updates"]:
            for k in ("policy_loss", "value_loss", "entropy"):
                out[f"{prefix}/{k}"] = st[k] / st["updates"]
        self.stats = {"policy_loss": 0.0, "value_loss": 0.0, "entropy": 0.0, "updates": 0}
        return out


class ActorCritic:
    """The acting agent's side of one action port (module doc): samples actions from the policy head, hands
    them to the environment (``act``), keeps the window's transitions and returns the A2C loss.

    ``generator`` draws the actions (the task's, so an environment and its actions form one seeded stream);
    ``prefix`` names the metrics (``train`` or ``train/<env agent>``)."""

    def __init__(self, port: str, head: ActionHead, keys: A2CKeys,
                 act: Callable[[int, torch.Tensor], Feedback], generator: torch.Generator, prefix: str = "train"):
        self.head = head
        self.act = act
        self.generator = generator
        self.prefix = prefix
        self.rollout = Rollout(port, keys.gamma, keys.value_coef, keys.entropy_coef, keys.normalize_advantage)

    def score(self, batch_id: int, output: torch.Tensor) -> torch.Tensor | None:
        """The agent's output for ``batch_id`` (layout of :mod:`corporation.envs.spaces`): the window's loss
        at its last output, else None."""
        params, value = self.head.split(output)
        loss = self.rollout.on_output(value)
        action, logp, entropy = self.head.sample(params, self.generator)
        feedback = self.act(batch_id, action)
        self.rollout.add(Transition(logp, entropy, value, feedback))
        return loss

    def window_closed(self) -> None:
        self.rollout.window_closed()

    def at_rest(self) -> bool:
        return not self.rollout.steps

    def read(self) -> dict[str, float]:
        return self.rollout.read(self.prefix)


class Episodes:
    """Per-row running returns of vectorised episodes; the last ``keep`` finished episodes' returns."""

    def __init__(self, rows: int, keep: int = 100):
        self.running = np.zeros(rows, dtype=np.float64)
        self.done: deque[float] = deque(maxlen=keep)
        self.count = 0

    def add(self, reward: np.ndarray, ended: np.ndarray, live: np.ndarray | None = None) -> None:
        self.running += np.where(live, reward, 0.0) if live is not None else reward
        for i in np.flatnonzero(ended):
            self.done.append(float(self.running[i]))
            self.running[i] = 0.0
            self.count += 1

    def mean(self) -> float | None:
        return float(np.mean(self.done)) if self.done else None
