"""Plug your own Gymnasium environment and your own agent model into corporation.

1. Register the env with Gymnasium (any id); the ``gymnasium`` task then drives it by id.
2. Register a model kind with its params dataclass: its keys become the scenario's ``model:`` keys.
3. Write the scenario (a dict here; a YAML file works the same) and run it.

    python examples/custom_gym_env.py            # about 15 s of CPU time
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from corporation import Engine, from_dict
from corporation.registry import MODELS


class Reach(gym.Env):
    """A point on [-1, 1] must reach a random target: actions left / stay / right, reward -|x - target|."""

    metadata: ClassVar[dict] = {"render_modes": []}
    observation_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
    action_space = gym.spaces.Discrete(3)

    def reset(self, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)  # seeds self.np_random: reset(seed=...) makes episodes reproducible
        self.x, self.target, self.t = 0.0, float(self.np_random.uniform(-1, 1)), 0
        return self._obs(), {}

    def _obs(self) -> np.ndarray:
        return np.array([self.x, self.target], dtype=np.float32)

    def step(self, action):
        self.x = float(np.clip(self.x + 0.1 * (int(action) - 1), -1.0, 1.0))
        self.t += 1
        return self._obs(), -abs(self.x - self.target), False, self.t >= 30, {}


@dataclass
class ResMLPParams:
    """Scenario keys of ``model: {kind: resmlp, ...}``; ``out: null`` is inferred from the loss port."""

    kind: str = "resmlp"
    out: int | None = None
    width: int = 64
    blocks: int = 2


class ResMLP(nn.Module):
    def __init__(self, in_size: int, out_size: int, width: int, blocks: int):
        super().__init__()
        self.inp = nn.Linear(in_size, width)
        self.blocks = nn.ModuleList(nn.Sequential(nn.Tanh(), nn.Linear(width, width)) for _ in range(blocks))
        self.out = nn.Linear(width, out_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.inp(x)
        for block in self.blocks:
            h = h + block(h)
        return self.out(torch.tanh(h))


def register() -> None:
    """Idempotent registration of the env id and the model kind."""
    if "Reach-v0" not in gym.envs.registry:
        gym.register("Reach-v0", entry_point=Reach)
    if "resmlp" not in MODELS:
        MODELS.register("resmlp", ResMLPParams)(lambda p, i, o: ResMLP(i, o, p.width, p.blocks))


SCENARIO = {
    "name": "reach", "seed": 0, "device": "cpu",
    "task": {"kind": "gymnasium", "env": "Reach-v0", "num_envs": 16, "reward_scale": 0.1, "gamma": 0.95},
    "interface": {"kind": "dni", "sg": {"hidden": 0}},  # perception -> policy through a synthetic gradient
    "agents": {
        "perception": {"model": {"kind": "mlp", "out": 32, "activation": "tanh"}, "optimizer": {"lr": 1.0e-3}},
        "policy": {"model": {"kind": "resmlp", "width": 32}, "optimizer": {"lr": 1.0e-3}, "update": {"unroll": 6}},
    },
    "edges": [{"src": "task.obs", "dst": "perception"}, {"src": "perception", "dst": "policy"},
              {"src": "policy", "dst": "task.act"}],
    "train": {"ticks": 6000, "eval_every": 2000, "progress": False},
}


if __name__ == "__main__":
    torch.set_num_threads(1)
    register()
    engine = Engine(from_dict(SCENARIO))
    engine.run(on_log=lambda r: print(f"tick {r['tick']}: train return {r.get('train/episode_return', 0):.2f}, "
                                      f"test return {r.get('test/episode_return', 0):.2f}"))
