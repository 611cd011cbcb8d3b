"""Task ``gymnasium``: any registered Gymnasium environment, vectorised, trained by A2C (see ``a2c.py``).

Ports: ``task.obs`` (input: the N environments' observations, flattened / one-hot; as a context, the same)
and ``task.act`` (loss port: the acting agent's output in the layout of :mod:`corporation.envs.spaces`,
e.g. ``[logits | value]`` for a Discrete action space; it carries no context).

One emitted batch = one vectorised step: ``task.obs`` at tick t holds the N current observations (batch id
t); when the agent's output for id t reaches ``task.act``, the agent's :class:`~corporation.envs.a2c.ActorCritic`
(the task's ``learner``) samples the N actions (from the task's seeded generator) and keeps the transition;
the task steps the ``SyncVectorEnv`` with them (same-step autoreset: a finished row comes back already
reset) and returns the rewards. No new batch is emitted while an action is awaited, so the env runs at
the acting agent's pace whatever the clocks and latencies. Episode boundaries: the first batch has
``start``; afterwards ``Emission.reset`` marks the rows whose episode just restarted, and recurrent agents
zero those rows' state (the carried state's synthetic-gradient target is then zero for those rows).
Seeding: ``reset(seed=s)`` once, s drawn from the task's generator (row i gets s + i); tests use greedy
actions on ``test_episodes`` fresh environments seeded ``test_seed + i``.
"""
from __future__ import annotations

import functools
import importlib
import json
from dataclasses import dataclass, field
from typing import Any, Literal

import gymnasium as gym
import numpy as np
import torch
from gymnasium.vector import AsyncVectorEnv, AutoresetMode, SyncVectorEnv
from gymnasium.wrappers.vector import RecordEpisodeStatistics

from ..errors import CorporationError, ScenarioError, did_you_mean, short
from ..registry import TASKS
from ..tasks.base import Emission, Port, System
from . import ac_model  # noqa: F401  (registers the 'actor_critic' model kind)
from .a2c import A2CKeys, ActorCritic, Feedback
from .spaces import ActionHead, ObsCodec, UnsupportedSpace, action_head
from .wrappers import Wrappers
from .wrappers import apply as apply_wrappers
from .wrappers import parse as parse_wrappers


def check_env_id(env: str, path: str) -> None:
    """Import ``module:`` prefixes, then require a registered id (with a did-you-mean from the registry)."""
    if ":" in env:
        module = env.split(":", 1)[0]
        try:
            importlib.import_module(module)
        except Exception as e:  # noqa: BLE001  (ImportError, or whatever the module raises on import)
            raise ScenarioError(f"cannot import module {short(module)} for env {short(env)}: {type(e).__name__}: "
                                f"{short(str(e), 120)}", path) from None
        env = env.split(":", 1)[1]
    if env not in gym.envs.registry:
        raise ScenarioError(f"unknown Gymnasium env id {short(env)}{did_you_mean(env, gym.envs.registry.keys())}",
                            path)


def make_env(env: str, kwargs: dict[str, Any], wrappers: Wrappers = ()) -> gym.Env:
    """One copy of ``env``, wrapped by the scenario's Gymnasium wrappers."""
    return apply_wrappers(gym.make(env, **kwargs), wrappers)


@functools.lru_cache(maxsize=32)
def _spaces(env: str, kwargs_json: str, wrappers: Wrappers = ()) -> tuple[Any, Any]:
    e = make_env(env, json.loads(kwargs_json), wrappers)
    try:
        return e.observation_space, e.action_space
    finally:
        e.close()


def env_spaces(env: str, kwargs: dict[str, Any], path: str, wrappers: Wrappers = ()) -> tuple[Any, Any]:
    """(observation space, action space) of one copy of ``env`` (cached); failures are one-line errors."""
    try:
        return _spaces(env, json.dumps(kwargs, sort_keys=True), wrappers)
    except Exception as e:  # noqa: BLE001  (a missing extra, a bad kwarg: any failure is the user's to fix)
        msg = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise ScenarioError(f"cannot make env {short(env)}: {type(e).__name__}: {short(msg, 160)}", path) from None


@dataclass
class GymParams(A2CKeys):
    """Keys of ``task: {kind: gymnasium, ...}`` (docs/rl.md)."""

    kind: str = "gymnasium"
    env: str = "CartPole-v1"  # a registered id, or "module:Id" (the module is imported first)
    wrappers: list[Any] = field(default_factory=list)  # Gymnasium wrappers (corporation/envs/wrappers.py)
    vector: Literal["sync", "async"] = "sync"  # SyncVectorEnv, or AsyncVectorEnv (one process per copy)

    def check(self, path: str) -> None:
        self.check_a2c(path)
        check_env_id(self.env, f"{path}.env")
        obs_space, act_space = self.spaces(f"{path}.env", f"{path}.wrappers")
        try:
            ObsCodec.of(obs_space)
        except UnsupportedSpace as e:
            raise ScenarioError(f"env '{self.env}': {e}", f"{path}.env") from None
        try:
            action_head(act_space)
        except UnsupportedSpace as e:
            raise ScenarioError(f"env '{self.env}': {e}", f"{path}.env") from None

    def parsed_wrappers(self, path: str = "task.wrappers") -> Wrappers:
        return parse_wrappers(self.wrappers, path)

    def spaces(self, path: str = "task.env", wrappers_path: str = "task.wrappers") -> tuple[Any, Any]:
        """(observation space, action space) of one wrapped copy of the env."""
        return env_spaces(self.env, self.env_kwargs, path, self.parsed_wrappers(wrappers_path))


def check_acting_agent(scenario: Any, port: str) -> None:
    """The agent feeding an action port must update every >= 2 outputs (see a2c.py)."""
    for e in scenario.edges:
        if e.dst == f"task.{port}" and e.src in scenario.agents and scenario.agents[e.src].update.unroll < 2:
            raise ScenarioError(f"'{e.src}' feeds task.{port}, an actor-critic port: it needs unroll >= 2 "
                                "(an update trains unroll - 1 transitions)", f"agents.{e.src}.update.unroll")


@TASKS.register("gymnasium", GymParams)
class GymTask:
    """A vectorised Gymnasium environment as a task (module doc)."""

    paced = True  # emits only after the acting agent answered: no input backlog whatever the clocks

    def __init__(self, params: GymParams, device: torch.device, generator: torch.Generator):
        self.params = params
        self.device = device
        self.generator = generator
        obs_space, act_space = params.spaces()
        self.codec = ObsCodec.of(obs_space)
        self.head: ActionHead = action_head(act_space, init_log_std=params.init_log_std)
        self.wrappers = params.parsed_wrappers()
        fn = functools.partial(make_env, params.env, params.env_kwargs, self.wrappers)
        vector = AsyncVectorEnv if params.vector == "async" else SyncVectorEnv
        # Gymnasium's own episode statistics (returns and lengths of the last 100 finished episodes)
        self.env = RecordEpisodeStatistics(vector([fn] * params.num_envs, autoreset_mode=AutoresetMode.SAME_STEP),
                                           buffer_length=100)
        seed = int(torch.randint(0, 2**31 - 1, (1,), generator=generator))
        self.obs, _ = self.env.reset(seed=seed)
        self.start = True
        self.reset_rows: np.ndarray | None = None
        self.pending: int | None = None
        self.inputs: dict[int, torch.Tensor] = {}
        self.env_steps = 0

    @classmethod
    def ports(cls, params: GymParams) -> dict[str, Port]:
        obs_space, act_space = params.spaces()
        size = ObsCodec.of(obs_space).size
        return {"obs": Port("obs", "input", size, size), "act": Port("act", "loss", action_head(act_space).size, 0)}

    @classmethod
    def batch_rows(cls, params: GymParams) -> tuple[int, str]:
        return params.num_envs, "task.num_envs"

    @classmethod
    def check_scenario(cls, params: GymParams, scenario: Any) -> None:
        check_acting_agent(scenario, "act")

    def emit(self, tick: int) -> Emission | None:
        if self.pending is not None:
            return None  # the acting agent has not answered the last observation yet
        x = self.codec.encode(self.obs, self.device)
        self.inputs[tick] = x
        self.pending = tick
        reset = None
        if self.reset_rows is not None and self.reset_rows.any():
            reset = torch.as_tensor(self.reset_rows, device=self.device)
        emission = Emission({"obs": x}, start=self.start, reset=reset)
        self.start = False
        return emission

    def context(self, port: str, batch_id: int) -> torch.Tensor:
        x = self.inputs[batch_id]
        return x if port == "obs" else x.new_zeros(x.shape[0], 0)

    def learner(self, port: str) -> ActorCritic:
        """The acting agent's side of ``task.act`` (see :mod:`corporation.envs.a2c`)."""
        return ActorCritic(port, self.head, self.params, self.take, self.generator)

    def take(self, batch_id: int, action: torch.Tensor) -> Feedback:
        """Step the N environments with the actions for batch ``batch_id``; their rewards and ends."""
        if batch_id != self.pending:
            raise CorporationError(f"task.act got an output for batch {batch_id}, expected {self.pending}")
        obs, reward, terminated, truncated, _ = self.env.step(self.head.to_env(action))
        ended = np.logical_or(terminated, truncated)
        dev = action.device
        feedback = Feedback(torch.ones(len(ended), dtype=torch.bool, device=dev),
                            torch.as_tensor(reward * self.params.reward_scale, dtype=torch.float32, device=dev),
                            torch.as_tensor(terminated, device=dev), torch.as_tensor(truncated, device=dev))
        self.obs, self.reset_rows, self.pending = obs, ended, None
        self.env_steps += len(ended)
        return feedback

    def loss(self, port: str, batch_id: int, output: torch.Tensor) -> torch.Tensor | None:
        raise CorporationError("task.act is scored by the acting agent's learner (GymTask.learner), not task.loss")

    def train_metrics(self) -> dict[str, float]:
        out = {"train/env_steps": float(self.env_steps), "train/episodes": float(self.env.episode_count)}
        if self.env.return_queue:
            out["train/episode_return"] = float(np.mean(self.env.return_queue))
        return out

    @torch.no_grad()
    def policy(self, system: System, obs: Any) -> np.ndarray:
        """Greedy actions of the composed agents for a batch of raw observations (N, ...), as the env takes
        them (``Engine.act``)."""
        out = system.compose({"obs": self.codec.encode(np.asarray(obs), self.device)})["act"]
        return self.head.to_env(self.head.greedy(self.head.split(out)[0]))

    @torch.no_grad()
    def evaluate(self, system: System) -> dict[str, float]:
        """Greedy actions on ``test_episodes`` fresh environments with fixed seeds, one episode each."""
        n = self.params.test_episodes
        if n == 0:
            return {}
        envs = [make_env(self.params.env, self.params.env_kwargs, self.wrappers) for _ in range(n)]
        obs = [e.reset(seed=self.params.test_seed + i)[0] for i, e in enumerate(envs)]
        returns, live = np.zeros(n), np.ones(n, dtype=bool)
        for _ in range(self.params.test_max_steps):
            actions = self.policy(system, np.stack(obs))
            for i in np.flatnonzero(live):
                obs[i], r, term, trunc, _ = envs[i].step(actions[i])
                returns[i] += r
                live[i] = not (term or trunc)
            if not live.any():
                break
        for e in envs:
            e.close()
        return {"test/episode_return": float(returns.mean())}

    def forget(self, below: int) -> None:
        for k in [k for k in self.inputs if k < below]:
            del self.inputs[k]
