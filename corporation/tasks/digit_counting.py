"""Task ``digit_counting``: the paper's two-timescale hierarchical task (Jaderberg et al. 2017, sec. 3.3).

``batch_size`` independent streams of digit images run in lockstep, one image per stream per tick (batch
id = tick). Ports:

- ``task.x`` (input): the image, followed (``clock_input: true``, the default) by a one-hot of
  ``tick % T``. The paper does not say how A knows where its T-step windows begin; with a continuous
  stream and no cue A would have to learn a mod-T clock, so the cue is on by default (set it false for the
  harder variant). As a context it is the same vector.
- ``task.a`` (loss): at ids with ``(id + 1) % T == 0`` (every T steps), how many odd digits were shown
  in ids ``id-T+1 .. id``; cross-entropy over the counts 0..T (``T + 1`` logits).
- ``task.b`` (loss): how many 3s were shown in the last T² ids (``id-T²+1 .. id``); cross-entropy over
  0..T² (``T² + 1`` logits). The task has this target at every id >= T²-1 that is asked for; B's clock
  (period T) makes that every T steps (and an edge latency only shifts B's windows, it never starves B).

Loss ports return None at ids without a target. As contexts, ``a`` and ``b`` are the one-hot targets
(zeros where there is none). Evaluation runs ``test_streams`` fixed streams of ``test_ticks`` ticks drawn
from the dataset's held-out split (the same streams for every run and seed) through the composed system
tick by tick (``system.compose({'x': x}, tick=t)``, each agent acting on its own clock), and scores A's
output at A's target ticks and B's output wherever B acted and has a target.

Metrics: ``test/A/accuracy`` and ``test/B/accuracy`` (exact count), ``test/B/mae`` (mean absolute error
of the predicted count), ``test/A/majority`` and ``test/B/majority`` (the majority-class accuracy on the
same test targets: the baseline to beat), ``test/A/loss``, ``test/B/loss``; in training ``train/A/...``
and ``train/B/...`` (loss, accuracy) since the last log. A and B name the networks the targets are for.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..errors import ScenarioError, did_you_mean
from ..registry import DATASETS, TASKS
from ..schema import at_most, positive
from ..spec import MAX_BATCH
from . import datasets
from .base import Emission, Port, System

TEST_SEED = 20170101  # the fixed test streams: the same for every run and seed
MAX_T = 100  # A's window (B's has T² = 10,000 ticks and T² + 1 classes)
MAX_TEST_TICKS = 1_000_000
MAX_TEST_IMAGES = 2**28  # test_streams x test ticks (the fixed test streams' index table)


@dataclass
class DigitCountingParams:
    """``T``: A's window (B's window is T²); ``batch_size``: training streams; ``test_ticks`` null: 4·T²
    (at least 8·T)."""

    kind: str = "digit_counting"
    T: int = 4
    dataset: str = "digits"  # digits | mnist | fashion_mnist (see the DATASETS registry)
    batch_size: int = 32
    clock_input: bool = True
    test_streams: int = 256
    test_ticks: int | None = None
    data_dir: str | None = None  # folder with IDX files; else $CORPORATION_DATA, then system folders

    def check(self, path: str) -> None:
        if self.T < 1:
            raise ScenarioError(f"must be >= 1 (A's window in ticks), got {self.T}", f"{path}.T")
        at_most(self.T, MAX_T, path, "T", "B's window is T² ticks")
        if self.dataset not in DATASETS:
            raise ScenarioError(f"unknown dataset '{self.dataset}'{did_you_mean(self.dataset, DATASETS.names())}",
                                f"{path}.dataset")
        for key in ("batch_size", "test_streams"):
            positive(getattr(self, key), path, key)
            at_most(getattr(self, key), MAX_BATCH, path, key)
        if self.test_ticks is not None and self.test_ticks < self.T * self.T:
            raise ScenarioError(f"must be >= T² = {self.T * self.T} (B's first target comes at T²-1), "
                                f"got {self.test_ticks}", f"{path}.test_ticks")
        at_most(self.test_ticks, MAX_TEST_TICKS, path, "test_ticks")
        at_most(self.test_streams * self.eval_ticks, MAX_TEST_IMAGES, path, "test_streams",
                f"test_streams x test ticks ({self.eval_ticks})")
        datasets.check_data_dir(self.dataset, self.data_dir, path)
        datasets.check_batch(self.dataset, self.batch_size, None, path)

    @property
    def eval_ticks(self) -> int:
        return self.test_ticks if self.test_ticks is not None else max(4 * self.T * self.T, 8 * self.T)


def counts(labels: torch.Tensor, T: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Targets for a (streams, ticks) label matrix: ``a[:, t]`` = odd digits in ticks t-T+1..t and
    ``b[:, t]`` = 3s in ticks t-T²+1..t (-1 where the window is incomplete). Every tick gets a value here;
    the task asks for ``a`` only at ticks with (t + 1) % T == 0."""
    def window_sum(flags: torch.Tensor, n: int) -> torch.Tensor:
        c = torch.cumsum(flags.long(), dim=1)
        out = c.clone()
        out[:, n:] = c[:, n:] - c[:, :-n]
        out[:, : n - 1] = -1
        return out

    return window_sum(labels % 2 == 1, T), window_sum(labels == 3, T * T)


@TASKS.register("digit_counting", DigitCountingParams)
class DigitCounting:
    """Streams of digits; A counts odd digits per T ticks, B counts 3s per T² ticks."""

    static_data = ("x_train", "y_train", "x_test", "y_test")  # rebuilt, not saved in checkpoints

    def __init__(self, params: DigitCountingParams, device: torch.device, generator: torch.Generator):
        self.params = params
        self.T = params.T
        self.device = device
        self.generator = generator
        x_tr, y_tr, x_te, y_te = datasets.load(params.dataset, params.data_dir)
        datasets.check_loaded(params.dataset, params.batch_size, len(x_tr))
        self.x_train = torch.as_tensor(x_tr, device=device)
        self.y_train = torch.as_tensor(y_tr, device=device)
        self.x_test = torch.as_tensor(x_te, device=device)
        self.y_test = torch.as_tensor(y_te, device=device)
        self._history: deque[torch.Tensor] = deque(maxlen=self.T * self.T)  # labels of the last T² ticks
        self._batches: dict[int, tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]] = {}
        self._sums = {k: self._zero() for k in "ab"}
        self._test: tuple[torch.Tensor, torch.Tensor] | None = None

    @staticmethod
    def _zero() -> dict[str, float]:
        return {"loss": 0.0, "calls": 0, "correct": 0, "count": 0}

    @classmethod
    def ports(cls, params: DigitCountingParams) -> dict[str, Port]:
        features = datasets.info(params.dataset).features + (params.T if params.clock_input else 0)
        T2 = params.T * params.T
        return {"x": Port("x", "input", features, features),
                "a": Port("a", "loss", params.T + 1, params.T + 1),
                "b": Port("b", "loss", T2 + 1, T2 + 1)}

    @classmethod
    def batch_rows(cls, params: DigitCountingParams) -> tuple[int, str]:
        return params.batch_size, "task.batch_size"

    @classmethod
    def check_scenario(cls, params: DigitCountingParams, scenario) -> None:
        """The agent feeding ``task.a`` must act at A's target ticks, and the one feeding ``task.b`` must
        tick every T ticks (the two timescales), so that changing T alone cannot silently break a run."""
        T = params.T
        for e in scenario.edges:
            clock = scenario.agents[e.src].clock if e.src in scenario.agents else None
            if clock is None or e.dst not in ("task.a", "task.b"):
                continue
            if e.dst == "task.a" and (T % clock.period or (T - 1 - clock.phase) % clock.period
                                      or clock.phase > T - 1):
                raise ScenarioError(f"'{e.src}' feeds task.a, so it must act at ticks T-1, 2T-1, ... "
                                    f"(T = {T}); got period {clock.period} phase {clock.phase}",
                                    f"agents.{e.src}.clock")
            if e.dst == "task.b" and (clock.period != T or clock.phase % T != T - 1):
                raise ScenarioError(f"'{e.src}' feeds task.b, so it must tick every T = {T} ticks right "
                                    f"after A's T-th step: set period: {T}, phase: {T - 1} (and update.unroll: "
                                    f"{T} for A and B); got period {clock.period} phase {clock.phase}",
                                    f"agents.{e.src}.clock")

    # ----- training stream ---------------------------------------------------------------------------
    def _input(self, images: torch.Tensor, tick: int) -> torch.Tensor:
        if not self.params.clock_input:
            return images
        phase = torch.zeros(images.shape[0], self.T, dtype=images.dtype, device=images.device)
        phase[:, tick % self.T] = 1.0
        return torch.cat([images, phase], dim=1)

    def emit(self, tick: int) -> Emission:
        idx = torch.randint(len(self.x_train), (self.params.batch_size,), generator=self.generator)
        idx = idx.to(self.device)
        labels = self.y_train[idx]
        self._history.append(labels)
        hist = list(self._history)
        a = b = None
        if (tick + 1) % self.T == 0 and len(hist) >= self.T:
            a = sum((h % 2 == 1).long() for h in hist[-self.T:])
        if len(hist) == self.T * self.T:
            b = sum((h == 3).long() for h in hist)
        x = self._input(self.x_train[idx], tick)
        self._batches[tick] = (x, a, b)
        return Emission({"x": x})

    def context(self, port: str, batch_id: int) -> torch.Tensor:
        x, a, b = self._batches[batch_id]
        if port == "x":
            return x
        target = a if port == "a" else b
        size = self.ports(self.params)[port].size
        if target is None:
            return x.new_zeros(x.shape[0], size)
        return F.one_hot(target, size).to(x.dtype)

    def target(self, port: str, batch_id: int) -> torch.Tensor | None:
        """The count target of ``port`` for ``batch_id`` (None where there is none)."""
        _, a, b = self._batches[batch_id]
        return a if port == "a" else b

    def loss(self, port: str, batch_id: int, output: torch.Tensor) -> torch.Tensor | None:
        y = self.target(port, batch_id)
        if y is None:
            return None
        loss = F.cross_entropy(output, y)
        s = self._sums[port]
        s["loss"] += float(loss.detach())
        s["calls"] += 1
        s["correct"] += int((output.detach().argmax(1) == y).sum())
        s["count"] += len(y)
        return loss

    def train_metrics(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for port, s in self._sums.items():
            if s["count"]:
                who = port.upper()
                out[f"train/{who}/loss"] = s["loss"] / s["calls"]
                out[f"train/{who}/accuracy"] = s["correct"] / s["count"]
            self._sums[port] = self._zero()
        return out

    def forget(self, below: int) -> None:
        for k in [k for k in self._batches if k < below]:
            del self._batches[k]

    # ----- evaluation --------------------------------------------------------------------------------
    def test_streams(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The fixed test streams: image indices and labels, both (test_streams, test_ticks)."""
        if self._test is None:
            g = torch.Generator().manual_seed(TEST_SEED)
            p = self.params
            idx = torch.randint(len(self.x_test), (p.test_streams, p.eval_ticks), generator=g).to(self.device)
            self._test = (idx, self.y_test[idx])
        return self._test

    @torch.no_grad()
    def evaluate(self, system: System) -> dict[str, float]:
        idx, labels = self.test_streams()
        a_all, b_all = counts(labels, self.T)
        scores = {k: {"loss": 0.0, "correct": 0, "abs": 0.0, "n": 0, "targets": []} for k in "ab"}
        system.reset_state()
        for t in range(idx.shape[1]):
            outs = system.compose({"x": self._input(self.x_test[idx[:, t]], t)}, tick=t)
            for port, target in (("a", a_all[:, t]), ("b", b_all[:, t])):
                if port not in outs or target[0] < 0 or (port == "a" and (t + 1) % self.T):
                    continue
                logits, s = outs[port], scores[port]
                pred = logits.argmax(1)
                s["loss"] += float(F.cross_entropy(logits, target, reduction="sum"))
                s["correct"] += int((pred == target).sum())
                s["abs"] += float((pred - target).abs().sum())
                s["n"] += len(target)
                s["targets"].append(target)
        out: dict[str, float] = {}
        for port, s in scores.items():
            if not s["n"]:
                continue
            who = port.upper()
            out[f"test/{who}/loss"] = s["loss"] / s["n"]
            out[f"test/{who}/accuracy"] = s["correct"] / s["n"]
            out[f"test/{who}/majority"] = float(torch.cat(s["targets"]).bincount().max()) / s["n"]
            if port == "b":
                out[f"test/{who}/mae"] = s["abs"] / s["n"]
        return out
