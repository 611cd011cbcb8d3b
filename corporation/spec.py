"""The scenario schema: dataclasses whose fields are the keys of a scenario file (a public contract).

Every key has a default documented here and in docs/scenario.md; the resolved copy saved with a run writes
them all out. Kind-dispatched keys (``model``, ``task``, ``sg``) are typed by their registry entry's params.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Literal

from .errors import ScenarioError, short
from .registry import MODELS, SYNTHESIZERS, TASKS
from .schema import at_most, positive, within

NAME_RE = re.compile(r"[a-z0-9_]+")  # always used with fullmatch (a trailing newline is no match)
AGENT_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
DEVICE_RE = re.compile(r"auto|cpu|cuda(:[0-9]{1,4})?")
TASK_PREFIX = "task."

# Limits (docs/scenario.md "Limits"): generous caps, so that a typo is a one-line error at validation rather
# than an allocation failure or a hang at run time. Nothing a real experiment needs comes near them.
MAX_NAME = 100  # characters of a scenario or agent name
MAX_WIDTH = 65_536  # any layer width: model out / hidden sizes, heads.out, sg.width, synthetic_input.width
MAX_LAYERS = 100  # hidden layers of one MLP, M or I
MAX_PORT = 1_048_576  # a task port's size, and an agent's concatenated input
MAX_LAYER_WEIGHTS = 2**28  # weights of one layer (inputs x outputs), about 1 GiB of float32
MAX_WEIGHTS = 2**31  # weights of all agents, heads, M and I of a scenario together
MAX_BATCH = 65_536  # rows of a batch: batch sizes, streams, test batch sizes
MAX_ACTIVATIONS = 2**30  # rows x width of one layer's output for one batch
MAX_TICKS = 10**9  # train.ticks, eval_every, log_every, clock period and phase, decay_at ticks, sg.warmup
MAX_UNROLL = 100_000  # update.unroll (ticks accumulated before an update)
MAX_LATENCY = 1_000_000  # latency and grad_latency
MAX_ENVS = 4_096  # num_envs and test_episodes of the RL tasks
MAX_VOCAB = 16_384  # distinct characters of a char_lm corpus


def is_port(node: str) -> bool:
    """Task ports are named ``task.<port>``; everything else on an edge is an agent."""
    return node.startswith(TASK_PREFIX)


def head_key(dst: str) -> str:
    """The key of an agent's head toward ``dst`` (``Agent.heads``; nn.ModuleDict keys cannot hold '.')."""
    return dst.replace(".", ":")


@dataclass
class OptimizerSpec:
    """An optimizer: ``adam`` or ``sgd``; lr divided by ``decay_factor`` at each tick in ``decay_at``."""

    kind: Literal["adam", "sgd"] = "adam"
    lr: float = 1.0e-3
    weight_decay: float = 0.0
    momentum: float = 0.0
    decay_at: list[int] = field(default_factory=list)
    decay_factor: float = 0.1

    def check(self, path: str) -> None:
        positive(self.lr, path, "lr")
        positive(self.weight_decay, path, "weight_decay", allow_zero=True)
        positive(self.momentum, path, "momentum", allow_zero=True)
        positive(self.decay_factor, path, "decay_factor")
        for i, tick in enumerate(self.decay_at):
            within(tick, 0, MAX_TICKS, f"{path}.decay_at", str(i), "a tick")


@dataclass
class ClockSpec:
    """An agent acts at ticks t with t >= phase and (t - phase) % period == 0."""

    period: int = 1
    phase: int = 0

    def check(self, path: str) -> None:
        if self.period < 1:
            raise ScenarioError(f"must be >= 1 (an agent acts every 'period' ticks), got {self.period}",
                                f"{path}.period")
        at_most(self.period, MAX_TICKS, path, "period")
        within(self.phase, 0, MAX_TICKS, path, "phase")


@dataclass
class UpdateSpec:
    """Update after ``unroll`` of the agent's own ticks, with probability ``prob`` (the paper's p_update)."""

    unroll: int = 1
    prob: float = 1.0

    def check(self, path: str) -> None:
        if self.unroll < 1:
            raise ScenarioError(f"must be >= 1 (ticks per update window T), got {self.unroll}",
                                f"{path}.unroll")
        at_most(self.unroll, MAX_UNROLL, path, "unroll")
        if not 0.0 <= self.prob <= 1.0:
            raise ScenarioError(f"must be within [0, 1], got {self.prob}", f"{path}.prob")


@dataclass
class SyntheticInputSpec:
    """Synthetic input I(c): predicts the message from ``context`` (a task port or an agent name)."""

    context: str
    hidden: int = 0
    width: int = 256
    batchnorm: bool = False
    optimizer: OptimizerSpec | None = None  # null: the receiver's optimizer settings

    def check(self, path: str) -> None:
        within(self.hidden, 0, MAX_LAYERS, path, "hidden", "hidden layers of I")
        positive(self.width, path, "width")
        at_most(self.width, MAX_WIDTH, path, "width")


@dataclass
class InterfaceSpec:
    """What an agent-to-agent edge does with gradients: ``backprop`` (locked), ``dni`` (synthetic) or
    ``bp_lambda`` (the unified view: the sender gets ``lam`` x the true gradient + (1 - lam) x g_hat, through
    the receiver's backward pass in the same tick; M regresses on the true gradient; lam 1 = backprop,
    lam 0 = DNI; sender and receiver must share a clock and an update window)."""

    kind: Literal["dni", "backprop", "bp_lambda"] = "dni"
    sg: Any = field(default=None, metadata={"registry": SYNTHESIZERS, "default_kind": "mlp"})
    context: str | None = None
    synthetic_input: SyntheticInputSpec | None = None
    lam: float = 0.5  # bp_lambda only: the weight of the true gradient

    def __post_init__(self) -> None:
        if self.sg is None:
            self.sg = SYNTHESIZERS.get("mlp").params(kind="mlp")

    def check(self, path: str) -> None:
        if not 0.0 <= self.lam <= 1.0:
            raise ScenarioError(f"must be within [0, 1] (1: backprop, 0: DNI), got {self.lam}", f"{path}.lam")
        if self.kind == "bp_lambda" and self.context is not None:
            raise ScenarioError("bp_lambda's M takes no context yet: set context: null (or use kind: dni)",
                                f"{path}.context")
        if self.kind == "bp_lambda" and self.synthetic_input is not None:
            raise ScenarioError("a synthetic input needs kind: dni (bp_lambda is locked in time)",
                                f"{path}.synthetic_input")
        if self.kind == "bp_lambda" and getattr(self.sg, "history", 0):
            raise ScenarioError("sg.history needs kind: dni (bp_lambda's M sees the message alone)",
                                f"{path}.sg.history")
        if getattr(self.sg, "target", None) == "nstep":
            raise ScenarioError("'nstep' applies to a recurrent state M (agents.<name>.state.sg); on an edge use "
                                "target: lambda (lam: 1 follows the whole chain) or bootstrap", f"{path}.sg.target")


@dataclass
class HeadSpec:
    """A linear projection of the agent's output for one out-edge (out size inferred when null)."""

    out: int | None = None

    def check(self, path: str) -> None:
        positive(self.out, path, "out")
        at_most(self.out, MAX_WIDTH, path, "out")


@dataclass
class StateSpec:
    """What a recurrent agent does at each update-window boundary (truncated BPTT with window T = unroll).

    ``bptt``: the carried state is cut, no gradient from the future. ``dni``: g_hat = M(state) is
    backpropagated into the window as the gradient of all future loss; M's target is the gradient that
    reaches that boundary state in the next window (bootstrapped). ``zero_at_end``: no synthetic gradient
    (and a zero target) where a sequence ends. ``aux``: DNI + Aux (see docs/rnn.md); ``aux_input``: the
    Aux head predicts from the RNN's output h (default; the paper's "the RNN predicts") or from the whole
    carried state (for an LSTM concat(h, c)). ``aux_normalize``: the Aux head regresses on M's output in
    units of its running RMS, the loss averaged (not summed) over units, so ``aux_weight`` keeps one meaning
    while the synthetic gradient's scale grows during training (see docs/rnn.md)."""

    kind: Literal["bptt", "dni"] = "bptt"
    sg: Any = field(default=None, metadata={"registry": SYNTHESIZERS, "default_kind": "mlp"})
    zero_at_end: bool = True
    aux: bool = False
    aux_weight: float = 1.0
    aux_input: Literal["h", "state"] = "h"  # what the Aux head reads: the RNN output h, or the whole state
    aux_normalize: bool = False  # Aux target in units of its running RMS, loss a mean over units

    def __post_init__(self) -> None:
        if self.sg is None:
            self.sg = SYNTHESIZERS.get("mlp").params(kind="mlp")

    def check(self, path: str) -> None:
        positive(self.aux_weight, path, "aux_weight", allow_zero=True)
        if self.aux and self.kind != "dni":
            raise ScenarioError("DNI + Aux needs kind: dni", f"{path}.aux")
        if getattr(self.sg, "kind", "mlp") in ("dfa", "fa"):
            raise ScenarioError(f"a state M cannot be kind: {self.sg.kind} (fixed random feedback is for edges); "
                                "use mlp", f"{path}.sg.kind")
        if getattr(self.sg, "history", 0):
            raise ScenarioError("sg.history is for an edge's M (the messages it carried); a state M sees the "
                                "state alone: remove it", f"{path}.sg.history")


@dataclass
class AgentSpec:
    model: Any = field(metadata={"registry": MODELS})
    optimizer: OptimizerSpec = field(default_factory=OptimizerSpec)
    clock: ClockSpec = field(default_factory=ClockSpec)
    update: UpdateSpec = field(default_factory=UpdateSpec)
    heads: dict[str, HeadSpec] = field(default_factory=dict)
    state: StateSpec = field(default_factory=StateSpec)  # recurrent agents only
    device: str | None = None  # null: the scenario's device; messages move between devices

    def check(self, path: str) -> None:
        if self.device is not None and not DEVICE_RE.fullmatch(self.device):
            raise ScenarioError(f"expected auto, cpu, cuda or cuda:N, got {short(self.device)}", f"{path}.device")


@dataclass
class EdgeSpec:
    """A directed link. ``interface`` applies to agent-to-agent edges only (merged over the default).

    ``hold``: the receiver never blocks on this edge, it reads the newest message (sample-and-hold).
    ``sample``: the sender posts on this edge only at ticks t when the receiver's clock fires at delivery
    (t + latency), so a slow receiver gets exactly the messages it reads and no message, no g_hat and no
    M record exist for instants it never reads (their true gradient is zero). With a synthetic input on
    the edge the receiver never waits: it processes the id of the tick it fires at (with I(c) standing
    in for a late message), so the sender posts at the ticks t when the receiver fires at t."""

    src: str
    dst: str
    interface: InterfaceSpec | None = None
    latency: int = 0
    grad_latency: int | None = None  # null: same as latency
    hold: bool = False
    sample: bool = False

    def check(self, path: str) -> None:
        within(self.latency, 0, MAX_LATENCY, path, "latency", "ticks")
        within(self.grad_latency, 0, MAX_LATENCY, path, "grad_latency", "ticks")
        if self.sample and is_port(self.dst):
            raise ScenarioError("'sample' applies to edges into agents (the sender follows the receiver's "
                                "clock); remove it here", f"{path}.sample")

    @property
    def key(self) -> str:
        """The edge's name in metrics: ``src-dst``."""
        return f"{self.src}-{self.dst}"

    @property
    def back_latency(self) -> int:
        return self.latency if self.grad_latency is None else self.grad_latency


@dataclass
class TrainSpec:
    ticks: int = 1000
    eval_every: int = 500
    log_every: int | None = None  # null: same as eval_every
    progress: bool = True

    def check(self, path: str) -> None:
        for key in ("ticks", "eval_every", "log_every"):
            positive(getattr(self, key), path, key)
            at_most(getattr(self, key), MAX_TICKS, path, key)

    @property
    def log_period(self) -> int:
        return self.log_every or self.eval_every


MAX_WORKERS = 64


@dataclass
class EngineSpec:
    """``engine:`` where the components run. ``local`` (default): one process. ``distributed``: ``workers``
    processes joined by torch.distributed (``run --workers K`` or torchrun); ``placement`` maps agents to
    workers (the rest are placed by :func:`corporation.placement.infer`); ``mode: lockstep`` gives the local
    engine's metrics to float tolerance, ``free`` lets every worker run at its own pace (docs/distributed.md)."""

    kind: Literal["local", "distributed"] = "local"
    workers: int = 1
    placement: dict[str, int] = field(default_factory=dict)
    mode: Literal["lockstep", "free"] = "lockstep"
    max_drift: int = 8  # free mode: a worker runs at most this many ticks ahead of the slowest

    def check(self, path: str) -> None:
        positive(self.workers, path, "workers")
        positive(self.max_drift, path, "max_drift")
        at_most(self.max_drift, 1024, path, "max_drift", "ticks (contexts are kept this much longer)")
        at_most(self.workers, MAX_WORKERS, path, "workers", "worker processes")
        if self.kind == "local" and self.workers != 1:
            raise ScenarioError(f"a local engine has one worker, got {self.workers}: set engine.kind: distributed "
                                "(or pass --workers K)", f"{path}.workers")
        for agent, w in self.placement.items():
            if not 0 <= w < self.workers:
                raise ScenarioError(f"worker {w} for agent '{agent}' does not exist ({self.workers} workers: "
                                    f"0..{self.workers - 1})", f"{path}.placement.{agent}")


@dataclass
class Scenario:
    name: str
    task: Any = field(metadata={"registry": TASKS})
    agents: dict[str, AgentSpec]
    edges: list[EdgeSpec]
    seed: int = 0
    device: str = "auto"
    interface: InterfaceSpec = field(default_factory=InterfaceSpec)
    train: TrainSpec = field(default_factory=TrainSpec)
    engine: EngineSpec = field(default_factory=EngineSpec)

    def check(self, path: str) -> None:
        if not NAME_RE.fullmatch(self.name) or len(self.name) > MAX_NAME:
            raise ScenarioError(f"{short(self.name)} must match [a-z0-9_]+, at most {MAX_NAME} characters "
                                "(it names the run folder)", "name")
        if not DEVICE_RE.fullmatch(self.device):
            raise ScenarioError(f"expected auto, cpu, cuda or cuda:N, got {short(self.device)}", "device")
        if not self.agents:
            raise ScenarioError("a scenario needs at least one agent", "agents")
        for name in self.agents:
            if not AGENT_RE.fullmatch(name) or name == "task" or len(name) > MAX_NAME:
                raise ScenarioError(f"agent name {short(name)} must be an identifier other than 'task', at most "
                                    f"{MAX_NAME} characters", "agents")
        if not self.edges:
            raise ScenarioError("a scenario needs edges (at least task.<input> -> agent -> task.<loss>)",
                                "edges")
