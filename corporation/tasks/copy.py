"""Tasks ``copy`` and ``repeat_copy`` (Graves et al. 2014, Neural Turing Machines), with a curriculum.

One time step per tick, for a batch of B sequences in lockstep (``start`` on the first step, ``end`` on
the last). Symbols are random vectors of ``bits`` bits (each bit 0/1 with probability 1/2).

* ``copy``, level N: N input steps (the symbols, delimiter channel 0), one delimiter step (delimiter
  channel 1), then N output steps (input all zero) on which the target is the i-th symbol. Input size
  ``bits + 1``, output size ``bits``; 2N + 1 steps.
* ``repeat_copy``, level (N, R): N input steps, one delimiter step that also carries the repeat count
  R / ``repeat_norm`` on its own channel, then R * N output steps (the sequence written R times) and one
  end step whose target is the end-marker channel (all bits 0). Input ``bits + 2``, output ``bits + 1``;
  2 + N + R * N steps.

Loss: sigmoid cross-entropy of the logits, summed over the output channels, averaged over the batch (nats
per output symbol); ``None`` on steps without a target. The error of a sequence batch is its number of
wrong bits per output symbol (a bit is wrong when its logit has the other sign than its target; for repeat
copy the end-marker channel counts as a bit), averaged over the batch and its output steps. **Solved**: a
training batch at the current level with error below ``threshold`` (default 0.15 bits per symbol).
**Curriculum**: every success advances the level at once: copy N -> N + 1; repeat copy grows N and R in
turn (R when N > R, else N), so (2,1) -> (2,2) -> (3,2) -> (3,3) -> ... Nothing else advances it. ``max_solved_length`` is the largest
solved length: N for copy, the output length N * R for repeat copy. See docs/rnn.md.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..errors import ScenarioError
from ..registry import TASKS
from ..schema import at_most, positive
from ..spec import MAX_BATCH
from .base import Emission, Port, System

LN2 = math.log(2.0)
MAX_BITS = 1_024  # bits per symbol
MAX_SEQ = 100_000  # min_len, max_len
MAX_REPEATS = 10_000  # min_repeats, max_repeats
MAX_BATCH_VALUES = 2**28  # steps x sequences x channels of the first training or test batch


@dataclass
class CopyParams:
    """Keys of ``task: {kind: copy}``."""

    kind: str = "copy"
    bits: int = 8  # bits per symbol
    batch_size: int = 32  # sequences in lockstep (B)
    min_len: int = 2  # N at the start of the curriculum
    max_len: int = 1000  # the curriculum stops growing N here
    threshold: float = 0.15  # solved: fewer wrong bits per output symbol than this
    test_batch_size: int = 128  # sequences scored by evaluate()

    def check(self, path: str) -> None:
        for key in ("bits", "batch_size", "min_len", "max_len", "threshold", "test_batch_size"):
            positive(getattr(self, key), path, key)
        for key, limit in (("bits", MAX_BITS), ("batch_size", MAX_BATCH), ("test_batch_size", MAX_BATCH),
                           ("min_len", MAX_SEQ), ("max_len", MAX_SEQ)):
            at_most(getattr(self, key), limit, path, key)
        if self.max_len < self.min_len:
            raise ScenarioError(f"must be >= min_len ({self.min_len}), got {self.max_len}", f"{path}.max_len")

    def check_first_batch(self, path: str, length: int) -> None:
        """The first batches (``length`` steps at the starting level) must stay below MAX_BATCH_VALUES."""
        for key in ("batch_size", "test_batch_size"):
            values = length * getattr(self, key) * (self.bits + 2)
            at_most(values, MAX_BATCH_VALUES, path, key, f"the first batch: {length} steps x {key} x channels")


@dataclass
class RepeatCopyParams(CopyParams):
    """Keys of ``task: {kind: repeat_copy}``: those of copy, plus the repeat count R."""

    kind: str = "repeat_copy"
    min_repeats: int = 1  # R at the start of the curriculum
    max_repeats: int = 1000  # the curriculum stops growing R here
    repeat_norm: float = 10.0  # the count channel carries R / repeat_norm

    def check(self, path: str) -> None:
        super().check(path)
        for key in ("min_repeats", "max_repeats", "repeat_norm"):
            positive(getattr(self, key), path, key)
        at_most(self.min_repeats, MAX_REPEATS, path, "min_repeats")
        at_most(self.max_repeats, MAX_REPEATS, path, "max_repeats")
        if self.max_repeats < self.min_repeats:
            raise ScenarioError(f"must be >= min_repeats ({self.min_repeats}), got {self.max_repeats}",
                                f"{path}.max_repeats")


def check_windows(scenario, shortest: int, why: str) -> None:
    """One-line error when a recurrent agent's window T (``update.unroll``) exceeds the shortest sequence."""
    for name, agent in scenario.agents.items():
        if getattr(agent.model, "recurrent", False) and agent.update.unroll > shortest:
            raise ScenarioError(f"window T = {agent.update.unroll} is longer than the shortest sequence "
                                f"({shortest} steps, {why}): lower the unroll or lengthen the sequences",
                                f"agents.{name}.update.unroll")


class Curriculum:
    """The level (N, R) and what was solved; advances only through :meth:`success`."""

    def __init__(self, n: int, r: int, max_n: int, max_r: int, repeat: bool):
        self.n, self.r, self.max_n, self.max_r, self.repeat = n, r, max_n, max_r, repeat
        self.max_solved_length = 0
        self.successes = 0

    @property
    def level(self) -> tuple[int, int]:
        return self.n, self.r

    def length(self, n: int, r: int) -> int:
        """The length a level counts as: N (copy) or the output length N * R (repeat copy)."""
        return n * r if self.repeat else n

    def success(self, level: tuple[int, int]) -> None:
        """A batch at ``level`` was solved: record it and advance if it is the current level."""
        self.max_solved_length = max(self.max_solved_length, self.length(*level))
        if level != self.level:
            return
        self.successes += 1
        if self.repeat and (self.n > self.r or self.n >= self.max_n) and self.r < self.max_r:
            self.r += 1
        elif self.n < self.max_n:
            self.n += 1


def make_batch(n: int, r: int, batch: int, bits: int, repeat: bool, norm: float, gen: torch.Generator,
               device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(x (L, B, in), y (L, B, out), mask (L,) of output steps) for one lockstep batch at level (N, R)."""
    sym = torch.randint(0, 2, (n, batch, bits), generator=gen).float()
    extra_in, extra_out = (2, 1) if repeat else (1, 0)
    out_steps = r * n if repeat else n
    length = n + 1 + out_steps + (1 if repeat else 0)
    x = torch.zeros(length, batch, bits + extra_in)
    y = torch.zeros(length, batch, bits + extra_out)
    mask = torch.zeros(length, dtype=torch.bool)
    x[:n, :, :bits] = sym
    x[n, :, bits] = 1.0
    if repeat:
        x[n, :, bits + 1] = r / norm
    for i in range(out_steps):
        y[n + 1 + i, :, :bits] = sym[i % n]
    mask[n + 1: n + 1 + out_steps] = True
    if repeat:
        y[-1, :, bits] = 1.0
        mask[-1] = True
    return x.to(device), y.to(device), mask


class _Sequence:
    """One lockstep training batch in flight, and its running error."""

    def __init__(self, level: tuple[int, int], x: torch.Tensor, y: torch.Tensor, mask: torch.Tensor,
                 first_id: int):
        self.level, self.x, self.y, self.mask, self.first_id = level, x, y, mask, first_id
        self.outputs = int(mask.sum())
        self.scored = 0
        self.wrong = torch.zeros((), device=x.device)  # wrong bits, summed over output steps, batch mean


@TASKS.register("copy", CopyParams)
class Copy:
    """The copy task; :class:`RepeatCopy` changes only the sequence layout and the curriculum."""

    repeat = False
    adaptive = True  # the curriculum follows the scores: the stream cannot be rebuilt on another worker

    def __init__(self, params: CopyParams, device: torch.device, generator: torch.Generator):
        self.params = params
        self.device = device
        self.generator = generator
        self.eval_seed = int(torch.randint(0, 2**62, (1,), generator=generator))
        r0 = getattr(params, "min_repeats", 1)
        self.curriculum = Curriculum(params.min_len, r0, params.max_len, getattr(params, "max_repeats", 1),
                                     self.repeat)
        self._current: _Sequence | None = None
        self._pos = 0
        self._ids: dict[int, tuple[_Sequence, int]] = {}  # batch id -> (sequence, step)
        self._loss = torch.zeros((), device=device)
        self._loss_count = 0
        self._errors: list[float] = []
        self._samples = 0

    @classmethod
    def sizes(cls, params: CopyParams) -> tuple[int, int]:
        return (params.bits + 2, params.bits + 1) if cls.repeat else (params.bits + 1, params.bits)

    @classmethod
    def shortest(cls, params: CopyParams) -> int:
        n = params.min_len
        return n + 1 + getattr(params, "min_repeats", 1) * n + 1 if cls.repeat else 2 * n + 1

    @classmethod
    def ports(cls, params: CopyParams) -> dict[str, Port]:
        i, o = cls.sizes(params)
        return {"x": Port("x", "input", i, i), "y": Port("y", "loss", o, o)}

    @classmethod
    def batch_rows(cls, params: CopyParams) -> tuple[int, str]:
        return params.batch_size, "task.batch_size"

    @classmethod
    def check_scenario(cls, params: CopyParams, scenario) -> None:
        params.check_first_batch("task", cls.shortest(params))
        check_windows(scenario, cls.shortest(params), f"task.min_len = {params.min_len}")

    def _batch(self, level: tuple[int, int], batch: int, gen: torch.Generator):
        p = self.params
        return make_batch(level[0], level[1], batch, p.bits, self.repeat, getattr(p, "repeat_norm", 1.0),
                          gen, self.device)

    # ----- training stream ---------------------------------------------------------------------------
    def emit(self, tick: int) -> Emission:
        seq = self._current
        if seq is None or self._pos == len(seq.mask):
            level = self.curriculum.level
            seq = self._current = _Sequence(level, *self._batch(level, self.params.batch_size, self.generator),
                                            tick)
            self._pos = 0
            self._samples += self.params.batch_size
        step = self._pos
        self._pos += 1
        self._ids[tick] = (seq, step)
        return Emission({"x": seq.x[step]}, start=step == 0, end=step == len(seq.mask) - 1)

    def context(self, port: str, batch_id: int) -> torch.Tensor:
        seq, step = self._ids[batch_id]
        return seq.x[step] if port == "x" else seq.y[step]

    def loss(self, port: str, batch_id: int, output: torch.Tensor) -> torch.Tensor | None:
        seq, step = self._ids[batch_id]
        if not seq.mask[step]:
            return None
        loss = F.binary_cross_entropy_with_logits(output, seq.y[step], reduction="sum") / output.shape[0]
        with torch.no_grad():
            seq.wrong += ((output > 0).float() != seq.y[step]).float().sum() / output.shape[0]
            self._loss += loss.detach()
        self._loss_count += 1
        seq.scored += 1
        if seq.scored == seq.outputs:  # the batch is fully scored: judge it
            error = float(seq.wrong) / seq.outputs
            self._errors.append(error)
            if error < self.params.threshold:
                self.curriculum.success(seq.level)
        return loss

    def train_metrics(self) -> dict[str, float]:
        c = self.curriculum
        out = {"train/length": float(c.n), "train/max_solved_length": float(c.max_solved_length),
               "train/samples": float(self._samples), "train/successes": float(c.successes)}
        if self.repeat:
            out["train/repeats"] = float(c.r)
        if self._loss_count:
            out["train/loss"] = float(self._loss) / self._loss_count
            self._loss.zero_()
            self._loss_count = 0
        if self._errors:
            out["train/bit_errors"] = sum(self._errors) / len(self._errors)
            self._errors.clear()
        return out

    def forget(self, below: int) -> None:
        for k in [k for k in self._ids if k < below]:
            del self._ids[k]

    # ----- evaluation --------------------------------------------------------------------------------
    @torch.no_grad()
    def evaluate(self, system: System) -> dict[str, float]:
        """The composed system on a fixed test batch at the current level: wrong bits and cross-entropy
        bits per output symbol; plus the curriculum's max solved length (the reported score)."""
        level = self.curriculum.level
        gen = torch.Generator().manual_seed(self.eval_seed)
        x, y, mask = self._batch(level, self.params.test_batch_size, gen)
        system.reset_state()
        nats, wrong = 0.0, 0.0
        for step in range(len(mask)):
            out = system.compose({"x": x[step]})["y"]
            if mask[step]:
                nats += float(F.binary_cross_entropy_with_logits(out, y[step], reduction="sum")) / out.shape[0]
                wrong += float(((out > 0).float() != y[step]).float().sum()) / out.shape[0]
        outputs = int(mask.sum())
        return {"test/max_solved_length": float(self.curriculum.max_solved_length),
                "test/bits": nats / (outputs * LN2), "test/bit_errors": wrong / outputs,
                "test/length": float(self.curriculum.length(*level))}


@TASKS.register("repeat_copy", RepeatCopyParams)
class RepeatCopy(Copy):
    """Repeat copy: write the N symbols R times, then the end marker."""

    repeat = True
