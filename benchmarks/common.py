"""What the benchmarks share: the task ``bench_random`` (a fixed in-memory pool of Gaussian inputs and random
labels, cheap to serve, no dataset; batch id = the emitting tick; ``features`` and ``classes`` size its two
ports) and :func:`measure` (interleaved repetitions, median of means)."""
from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout
from corporation.registry import TASKS
from corporation.tasks.base import Emission, Port


@dataclass
class RandomParams:
    kind: str = "bench_random"
    batch_size: int = 256
    pool: int = 4096
    features: int = 784
    classes: int = 10


class RandomTask:
    """A classification task on random data."""

    static_data = ()

    def __init__(self, params: RandomParams, device: torch.device, generator: torch.Generator):
        self.params = params
        self.x = torch.randn(params.pool, params.features, generator=generator).to(device)
        self.y = torch.randint(0, params.classes, (params.pool,), generator=generator).to(device)
        self.generator = generator
        self.batches: dict[int, torch.Tensor] = {}

    @classmethod
    def batch_rows(cls, params: RandomParams) -> tuple[int, str]:
        return params.batch_size, "task.batch_size"

    @classmethod
    def ports(cls, params: RandomParams) -> dict[str, Port]:
        f, c = params.features, params.classes
        return {"x": Port("x", "input", f, f), "y": Port("y", "loss", c, c)}

    def emit(self, tick: int) -> Emission:
        idx = torch.randint(0, self.params.pool, (self.params.batch_size,), generator=self.generator)
        self.batches[tick] = idx
        return Emission({"x": self.x[idx]})

    def context(self, port: str, batch_id: int) -> torch.Tensor:
        idx = self.batches[batch_id]
        return self.x[idx] if port == "x" else F.one_hot(self.y[idx], self.params.classes).float()

    def loss(self, port: str, batch_id: int, output: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(output, self.y[self.batches[batch_id]])

    def train_metrics(self) -> dict[str, float]:
        return {}

    def evaluate(self, system: Any) -> dict[str, float]:  # nothing to score on random data
        return {}

    def forget(self, below: int) -> None:
        for k in [k for k in self.batches if k < below]:
            del self.batches[k]


if "bench_random" not in TASKS:
    TASKS.register("bench_random", RandomParams)(RandomTask)


def measure(steps: dict[str, Callable[[], None]], reps: int, n: int, warmup: int,
            clock: Callable[[], float] = time.perf_counter) -> dict[str, float]:
    """Median over ``reps`` interleaved repetitions of the mean time (s) of ``n`` steps (after ``warmup``
    steps of each), so drifts in machine load hit every configuration alike."""
    for fn in steps.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {k: [] for k in steps}
    for _ in range(reps):
        for name, fn in steps.items():
            t0 = clock()
            for _ in range(n):
                fn()
            times[name].append((clock() - t0) / n)
    return {k: statistics.median(v) for k, v in times.items()}
