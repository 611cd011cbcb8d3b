"""Task ``pettingzoo``: any PettingZoo ParallelEnv (an AEC env goes through PettingZoo's ``aec_to_parallel``).

Every env agent ``a`` gets two ports: ``task.a_obs`` (input; its observation, optionally sliced by
``observe``) and ``task.a_act`` (loss port). Binding env agents to corporation agents is just edges:
``task.a_obs -> x`` and ``x -> task.a_act``. An ``a_act`` port is driven in ``policy`` mode (A2C head, layout
and loss as in the gymnasium task: see :mod:`corporation.envs.spaces` and :mod:`corporation.envs.a2c`) or in
``direct`` mode (the output, clipped to the Box, IS the action: no policy loss). Messages between corporation
agents are ordinary edges (dni / backprop), so an agent's communication action can be the very tensor it
sends to another agent: that agent's gradient (true or synthetic) reaches it while the env gets the numpy copy.

``num_envs`` copies run side by side (rows of a batch). A batch is emitted, and the copies step, only once
every env agent answered the previous one. Agents that leave an episode (terminated or truncated, gone
from ``env.agents``) get zero observations, their outputs are not passed to the env, and their rows are
masked out of their loss until that copy's episode ends (``env.agents`` empty); then the copy is reset
(seeded once, with ``seed + i``, at the first reset) and its row is marked in ``Emission.reset``.
"""
from __future__ import annotations

import functools
import importlib
import json
import re
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch

from ..errors import CorporationError, ScenarioError, did_you_mean, short
from ..registry import TASKS
from ..tasks.base import Emission, Port, System
from .a2c import A2CKeys, ActorCritic, Episodes, Feedback
from .gym_task import check_acting_agent
from .spaces import ActionHead, ObsCodec, UnsupportedSpace, action_head


def make_parallel(env: str, kwargs: dict[str, Any]) -> Any:
    """``pkg.module`` (with ``parallel_env``, else ``env``) or ``pkg.module:factory`` -> a ParallelEnv."""
    from pettingzoo import AECEnv, ParallelEnv
    from pettingzoo.utils.conversions import aec_to_parallel

    name, _, attr = env.partition(":")
    try:
        module = importlib.import_module(name)
    except ImportError as e:
        hint = " (pip install 'corporation[rl]' or pip install mpe2)" if name.startswith("mpe2") else ""
        raise CorporationError(f"cannot import PettingZoo env module {short(name)}: {short(str(e), 160)}{hint}") from None
    if attr:
        factory = getattr(module, attr, None)
    else:
        factory = getattr(module, "parallel_env", None) or getattr(module, "env", None)
    if factory is None:
        what = f"'{attr}'" if attr else "'parallel_env' or 'env'"
        raise CorporationError(f"module '{name}' has no {what}")
    made = factory(**kwargs)
    if isinstance(made, AECEnv):
        if not made.metadata.get("is_parallelizable", False):
            raise CorporationError(f"'{env}' is a turn-based AEC game (metadata is_parallelizable is not set): the "
                                   "pettingzoo task drives ParallelEnvs, where every agent acts at each step; "
                                   "turn-by-turn play with action masks is not supported")
        made = aec_to_parallel(made)
    if not isinstance(made, ParallelEnv) and not hasattr(made, "possible_agents"):
        raise CorporationError(f"'{env}' made a {type(made).__name__}, not a PettingZoo env")
    return made


def port_name(agent: str) -> str:
    """An env agent's name as a port-name stem (non-identifier characters become '_')."""
    return re.sub(r"\W", "_", agent)


@functools.lru_cache(maxsize=32)
def _spaces(env: str, kwargs_json: str) -> tuple[tuple[str, ...], dict[str, Any], dict[str, Any]]:
    e = make_parallel(env, json.loads(kwargs_json))
    agents = tuple(e.possible_agents)
    obs = {a: e.observation_space(a) for a in agents}
    act = {a: e.action_space(a) for a in agents}
    e.close()
    return agents, obs, act


def env_spaces(env: str, kwargs: dict[str, Any], path: str):
    """(agents, observation spaces, action spaces), cached; failures are one-line errors at ``path``."""
    try:
        return _spaces(env, json.dumps(kwargs, sort_keys=True))
    except CorporationError as e:
        raise ScenarioError(str(e), path) from None
    except Exception as e:  # noqa: BLE001  (whatever the env raises, as one line)
        msg = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise ScenarioError(f"cannot make env {short(env)}: {type(e).__name__}: {short(msg, 160)}", path) from None


@dataclass
class PZParams(A2CKeys):
    """Keys of ``task: {kind: pettingzoo, ...}`` (docs/rl.md)."""

    kind: str = "pettingzoo"
    env: str = "mpe2.simple_speaker_listener_v4"  # module (parallel_env / env) or "module:factory"
    actions: dict[str, Literal["policy", "one_hot", "direct"]] = field(default_factory=dict)  # env agent -> mode
    observe: dict[str, list[int]] = field(default_factory=dict)  # env agent -> [start, stop) of its obs

    def check(self, path: str) -> None:
        self.check_a2c(path)
        agents, obs, act = env_spaces(self.env, self.env_kwargs, f"{path}.env")
        for key in ("actions", "observe"):
            for a in getattr(self, key):
                if a not in agents:
                    raise ScenarioError(f"no agent '{a}' in env '{self.env}'{did_you_mean(a, agents)}",
                                        f"{path}.{key}.{a}")
        for a in agents:
            try:
                ObsCodec.of(obs[a], self.observe.get(a))
                action_head(act[a], self.actions.get(a, "policy"))
            except UnsupportedSpace as e:
                raise ScenarioError(f"env agent '{a}': {e}", f"{path}.env") from None


@TASKS.register("pettingzoo", PZParams)
class PZTask:
    """A vectorised PettingZoo ParallelEnv as a task (module doc)."""

    paced = True  # emits only after the acting agent answered: no input backlog whatever the clocks

    def __init__(self, params: PZParams, device: torch.device, generator: torch.Generator):
        self.params, self.device, self.generator = params, device, generator
        agents, obs_spaces, act_spaces = env_spaces(params.env, params.env_kwargs, "task.env")
        self.agents = list(agents)
        self.codecs = {a: ObsCodec.of(obs_spaces[a], params.observe.get(a)) for a in agents}
        self.raw = {a: ObsCodec.of(obs_spaces[a]) for a in agents}
        self.heads: dict[str, ActionHead] = {a: action_head(act_spaces[a], params.actions.get(a, "policy"),
                                                          params.init_log_std)
                                             for a in agents}
        self.by_port = {f"{port_name(a)}_act": a for a in agents}
        self.episodes = {a: Episodes(params.num_envs) for a in agents}
        self.envs = [make_parallel(params.env, params.env_kwargs) for _ in range(params.num_envs)]
        seed = int(torch.randint(0, 2**31 - 1, (1,), generator=generator))
        self.obs = [e.reset(seed=seed + i)[0] for i, e in enumerate(self.envs)]
        self.start, self.reset_rows = True, np.zeros(params.num_envs, dtype=bool)
        self.pending: int | None = None
        self.actions: dict[str, torch.Tensor] = {}
        self.feedback: dict[str, Feedback] = {}  # this step's feedback per env agent, filled when it steps
        self.inputs: dict[int, dict[str, torch.Tensor]] = {}
        self.env_steps = 0

    @classmethod
    def ports(cls, params: PZParams) -> dict[str, Port]:
        agents, obs, act = env_spaces(params.env, params.env_kwargs, "task.env")
        out: dict[str, Port] = {}
        for a in agents:
            size = ObsCodec.of(obs[a], params.observe.get(a)).size
            stem = port_name(a)
            out[f"{stem}_obs"] = Port(f"{stem}_obs", "input", size, size)
            out[f"{stem}_act"] = Port(f"{stem}_act", "loss", action_head(act[a], params.actions.get(a, "policy")).size, 0)
        return out

    @classmethod
    def batch_rows(cls, params: PZParams) -> tuple[int, str]:
        return params.num_envs, "task.num_envs"

    @classmethod
    def check_scenario(cls, params: PZParams, scenario: Any) -> None:
        agents = env_spaces(params.env, params.env_kwargs, "task.env")[0]
        for a in agents:
            if params.actions.get(a, "policy") != "direct":  # policy, one_hot: an actor-critic output
                check_acting_agent(scenario, f"{port_name(a)}_act")

    # ----- stepping ----------------------------------------------------------------------------------
    def _live(self, agent: str) -> np.ndarray:
        """Rows (copies) where ``agent`` is still in the episode."""
        return np.array([agent in e.agents for e in self.envs])

    def emit(self, tick: int) -> Emission | None:
        if self.pending is not None:
            return None  # some env agent has not answered the last observation yet
        inputs = {}
        for a in self.agents:
            rows = [o[a] if a in e.agents else np.zeros(self.raw[a].size, np.float32)
                    for o, e in zip(self.obs, self.envs)]
            inputs[f"{port_name(a)}_obs"] = self.codecs[a].encode(np.stack(rows), self.device)
        self.inputs[tick] = inputs
        self.pending = tick
        reset = torch.as_tensor(self.reset_rows, device=self.device) if self.reset_rows.any() else None
        emission = Emission(inputs, start=self.start, reset=reset)
        self.start = False
        return emission

    def context(self, port: str, batch_id: int) -> torch.Tensor:
        if port.endswith("_obs"):
            return self.inputs[batch_id][port]
        return torch.zeros(self.params.num_envs, 0, device=self.device)

    def learner(self, port: str) -> ActorCritic | None:
        """The acting agent's side of a ``policy`` port (None for a ``direct`` port: scored by ``loss``)."""
        a = self.by_port[port]
        if not self.heads[a].has_value:
            return None
        return ActorCritic(port, self.heads[a], self.params, functools.partial(self.take, port),
                           self.generator, f"train/{a}")

    def take(self, port: str, batch_id: int, action: torch.Tensor) -> Feedback:
        """Env agent ``port``'s actions for batch ``batch_id``; the copies step once every agent has acted
        (then its feedback is filled)."""
        if batch_id != self.pending:
            raise CorporationError(f"task.{port} got an output for batch {batch_id}, expected {self.pending}")
        a = self.by_port[port]
        self.actions[a] = action
        feedback = self.feedback[a] = Feedback(torch.as_tensor(self._live(a), device=action.device))
        if len(self.actions) == len(self.agents):
            self._step(action.device)
        return feedback

    def loss(self, port: str, batch_id: int, output: torch.Tensor) -> torch.Tensor | None:
        """A ``direct`` port: the output, detached and clipped by the env, is the action; no loss."""
        if batch_id != self.pending:
            raise CorporationError(f"task.{port} got an output for batch {batch_id}, expected {self.pending}")
        a = self.by_port[port]
        self.actions[a] = self.heads[a].split(output)[0].detach()
        if len(self.actions) == len(self.agents):
            self._step(output.device)
        return None

    def _step(self, device: torch.device) -> None:
        n = self.params.num_envs
        acts = {a: self.heads[a].to_env(t) for a, t in self.actions.items()}
        rew = {a: np.zeros(n, np.float32) for a in self.agents}
        term = {a: np.zeros(n, bool) for a in self.agents}
        trunc = {a: np.zeros(n, bool) for a in self.agents}
        live = {a: self._live(a) for a in self.agents}
        over = np.zeros(n, dtype=bool)
        for i, env in enumerate(self.envs):
            obs, r, te, tr, _ = env.step({a: acts[a][i] for a in env.agents})
            for a in r:
                rew[a][i], term[a][i], trunc[a][i] = r[a], te[a], tr[a]
            if not env.agents:  # the episode is over for every agent: reset this copy
                over[i] = True
                obs, _ = env.reset()
            self.obs[i] = obs
        self.env_steps += n
        for a in self.agents:
            self.episodes[a].add(rew[a], over, live[a])
            fb = self.feedback.get(a)
            if fb is not None:
                fb.fill(torch.as_tensor(rew[a] * self.params.reward_scale, device=device),
                        torch.as_tensor(term[a], device=device), torch.as_tensor(trunc[a], device=device))
        self.reset_rows, self.pending = over, None
        self.actions, self.feedback = {}, {}

    # ----- metrics -----------------------------------------------------------------------------------
    def train_metrics(self) -> dict[str, float]:
        out = {"train/env_steps": float(self.env_steps)}
        means = []
        for a in self.agents:
            m = self.episodes[a].mean()
            if m is not None:
                out[f"train/{a}/episode_return"] = m
                means.append(m)
        out["train/episodes"] = float(self.episodes[self.agents[0]].count)
        if means:
            out["train/episode_return"] = float(np.mean(means))
        return out

    @torch.no_grad()
    def evaluate(self, system: System) -> dict[str, float]:
        """Greedy (policy: the mode; direct: as is) on ``test_episodes`` copies seeded ``test_seed + i``."""
        n = self.params.test_episodes
        if n == 0:
            return {}
        envs = [make_parallel(self.params.env, self.params.env_kwargs) for _ in range(n)]
        obs = [e.reset(seed=self.params.test_seed + i)[0] for i, e in enumerate(envs)]
        returns = {a: np.zeros(n) for a in self.agents}
        for _ in range(self.params.test_max_steps):
            inputs = {}
            for a in self.agents:
                rows = [o[a] if a in e.agents else np.zeros(self.raw[a].size, np.float32)
                        for o, e in zip(obs, envs)]
                inputs[f"{port_name(a)}_obs"] = self.codecs[a].encode(np.stack(rows), self.device)
            acts = self._greedy(system, inputs)
            for i, env in enumerate(envs):
                if env.agents:
                    obs[i], r, _, _, _ = env.step({a: acts[a][i] for a in env.agents})
                    for a, v in r.items():
                        returns[a][i] += v
            if not any(env.agents for env in envs):
                break
        for e in envs:
            e.close()
        out = {f"test/{a}/episode_return": float(returns[a].mean()) for a in self.agents}
        out["test/episode_return"] = float(np.mean([returns[a].mean() for a in self.agents]))
        return out

    def _greedy(self, system: System, inputs: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
        outs = system.compose(inputs)
        return {a: self.heads[a].to_env(self.heads[a].greedy(self.heads[a].split(outs[f"{port_name(a)}_act"])[0]))
                for a in self.agents}

    @torch.no_grad()
    def policy(self, system: System, obs: dict[str, Any]) -> dict[str, np.ndarray]:
        """Greedy actions for ``{env agent: (N, ...) observations}`` (``Engine.act``); a missing agent reads
        zeros."""
        missing = [a for a in obs if a not in self.codecs]
        if missing:
            raise CorporationError(f"no env agent '{missing[0]}' in '{self.params.env}' (agents: "
                                   f"{', '.join(self.agents)})")
        rows = len(next(iter(obs.values())))
        inputs = {}
        for a in self.agents:
            raw = np.asarray(obs[a]) if a in obs else np.zeros((rows, self.raw[a].size), np.float32)
            inputs[f"{port_name(a)}_obs"] = self.codecs[a].encode(raw, self.device)
        return self._greedy(system, inputs)

    def forget(self, below: int) -> None:
        for k in [k for k in self.inputs if k < below]:
            del self.inputs[k]
