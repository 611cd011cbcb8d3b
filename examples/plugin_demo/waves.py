"""Task kind ``waves``: which of ``classes`` frequencies does a noisy sine window of ``length`` samples have?
Input port ``x`` (B, length), loss port ``y`` (B, classes logits, cross-entropy); test metric accuracy."""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from corporation.registry import TASKS
from corporation.tasks.base import Emission, Port


@dataclass
class WavesParams:
    kind: str = "waves"
    length: int = 32
    classes: int = 4
    noise: float = 0.3
    batch_size: int = 64
    test_size: int = 512


@TASKS.register("waves", WavesParams)
class Waves:
    def __init__(self, params: WavesParams, device: torch.device, generator: torch.Generator):
        self.p, self.device, self.generator = params, device, generator
        self.batches: dict[int, torch.Tensor] = {}  # batch id -> labels (B,)
        self.test = self._draw(params.test_size, torch.Generator().manual_seed(1234))
        self.sums, self.count = [0.0, 0.0], 0

    @classmethod
    def ports(cls, params: WavesParams) -> dict[str, Port]:
        return {"x": Port("x", "input", params.length, params.length),
                "y": Port("y", "loss", params.classes, params.classes)}

    def _draw(self, n: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        labels = torch.randint(self.p.classes, (n,), generator=g)
        phase = torch.rand(n, 1, generator=g) * 2 * math.pi
        t = torch.arange(self.p.length).float() / self.p.length
        x = torch.sin(2 * math.pi * (labels[:, None] + 1) * t + phase)
        x = x + self.p.noise * torch.randn(n, self.p.length, generator=g)
        return x.to(self.device), labels.to(self.device)

    def emit(self, tick: int) -> Emission:
        x, self.batches[tick] = self._draw(self.p.batch_size, self.generator)
        return Emission({"x": x})

    def context(self, port: str, batch_id: int) -> torch.Tensor:
        return F.one_hot(self.batches[batch_id], self.p.classes).float()

    def loss(self, port: str, batch_id: int, output: torch.Tensor) -> torch.Tensor:
        y = self.batches[batch_id]
        loss = F.cross_entropy(output, y)
        self.sums[0] += float(loss.detach())
        self.sums[1] += float((output.argmax(1) == y).float().mean())
        self.count += 1
        return loss

    def train_metrics(self) -> dict[str, float]:
        out = {"train/loss": self.sums[0] / self.count, "train/accuracy": self.sums[1] / self.count} \
            if self.count else {}
        self.sums, self.count = [0.0, 0.0], 0
        return out

    @torch.no_grad()
    def evaluate(self, system) -> dict[str, float]:
        x, y = self.test
        logits = system.compose({"x": x})["y"]
        return {"test/loss": float(F.cross_entropy(logits, y)),
                "test/accuracy": float((logits.argmax(1) == y).float().mean())}

    def forget(self, below: int) -> None:
        for k in [k for k in self.batches if k < below]:
            del self.batches[k]
