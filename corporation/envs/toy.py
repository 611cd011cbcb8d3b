"""``relay_v0``: a tiny cooperative PettingZoo ParallelEnv for tests and examples (no extra dependencies).

``speaker`` observes the goal, one of ``k`` (one-hot). Its action, a ``Box(0, 1, (k,))``, is a message that
the env copies into ``listener``'s NEXT observation (``[message (k) | t / max_cycles]``), as MPE does.
``listener`` picks one of ``k`` (``Discrete(k)``); every agent still in the episode gets reward 1 when it
picks the goal, else 0. The speaker leaves the episode (terminated) after ``speaker_steps`` steps if set;
the episode is truncated after ``max_cycles`` steps. Use it as ``env: corporation.envs.toy``.
"""
from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
from gymnasium import spaces
from pettingzoo import ParallelEnv


class RelayEnv(ParallelEnv):
    metadata: ClassVar[dict] = {"name": "relay_v0", "render_modes": [], "is_parallelizable": True}

    def __init__(self, k: int = 3, max_cycles: int = 5, speaker_steps: int | None = None):
        self.k, self.max_cycles, self.speaker_steps = k, max_cycles, speaker_steps
        self.possible_agents = ["speaker", "listener"]
        self.agents: list[str] = []
        self.render_mode = None
        self._obs_spaces = {"speaker": spaces.Box(0.0, 1.0, (k,), np.float32),
                            "listener": spaces.Box(0.0, 1.0, (k + 1,), np.float32)}
        self._act_spaces = {"speaker": spaces.Box(0.0, 1.0, (k,), np.float32), "listener": spaces.Discrete(k)}
        self.rng = np.random.default_rng()
        self.goal, self.t, self.message = 0, 0, np.zeros(k, np.float32)

    def observation_space(self, agent: str) -> spaces.Space:
        return self._obs_spaces[agent]

    def action_space(self, agent: str) -> spaces.Space:
        return self._act_spaces[agent]

    def _observe(self, agent: str) -> np.ndarray:
        if agent == "speaker":
            return np.eye(self.k, dtype=np.float32)[self.goal]
        return np.append(self.message, np.float32(self.t / self.max_cycles)).astype(np.float32)

    def reset(self, seed: int | None = None, options: dict | None = None) -> tuple[dict, dict]:
        if seed is not None:
            self.rng = np.random.default_rng(seed)
        self.agents = list(self.possible_agents)
        self.goal, self.t = int(self.rng.integers(self.k)), 0
        self.message = np.zeros(self.k, np.float32)
        return {a: self._observe(a) for a in self.agents}, {a: {} for a in self.agents}

    def step(self, actions: dict[str, Any]) -> tuple[dict, dict, dict, dict, dict]:
        if "speaker" in actions:
            self.message = np.clip(np.asarray(actions["speaker"], np.float32), 0.0, 1.0)
        reward = 1.0 if "listener" in actions and int(actions["listener"]) == self.goal else 0.0
        self.t += 1
        rewards = {a: reward for a in self.agents}
        truncated = {a: self.t >= self.max_cycles for a in self.agents}
        terminated = {a: a == "speaker" and self.speaker_steps is not None and self.t >= self.speaker_steps
                      for a in self.agents}
        obs = {a: self._observe(a) for a in self.agents}
        infos = {a: {} for a in self.agents}
        self.agents = [a for a in self.agents if not (terminated[a] or truncated[a])]
        return obs, rewards, terminated, truncated, infos


def parallel_env(**kwargs: Any) -> RelayEnv:
    return RelayEnv(**kwargs)
