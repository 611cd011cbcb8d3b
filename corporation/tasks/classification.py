"""Task ``classification``: a fresh shuffled mini-batch of a labelled dataset every tick.

Ports: ``task.x`` (input, the flattened image) and ``task.y`` (loss port, cross-entropy on the logits;
as a context it is the one-hot label, which makes cDNI). Test metrics come from the composed system on the
full held-out split.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..errors import DataError, ScenarioError, did_you_mean
from ..registry import DATASETS, TASKS
from ..schema import at_most, positive
from ..spec import MAX_BATCH, MAX_TICKS
from . import datasets
from .base import Emission, Port, System


@dataclass
class ClassificationParams:
    kind: str = "classification"
    dataset: str = "digits"  # digits | mnist | fashion_mnist (see the DATASETS registry)
    batch_size: int = 256
    test_batch_size: int = 2000
    data_dir: str | None = None  # folder with IDX files; else $CORPORATION_DATA, then system folders
    train_limit: int | None = None  # use only the first N training examples (quick experiments)

    def check(self, path: str) -> None:
        if self.dataset not in DATASETS:
            raise ScenarioError(f"unknown dataset '{self.dataset}'{did_you_mean(self.dataset, DATASETS.names())}",
                                f"{path}.dataset")
        for key in ("batch_size", "test_batch_size"):
            positive(getattr(self, key), path, key)
            at_most(getattr(self, key), MAX_BATCH, path, key)
        positive(self.train_limit, path, "train_limit")
        at_most(self.train_limit, MAX_TICKS, path, "train_limit")
        datasets.check_data_dir(self.dataset, self.data_dir, path)
        datasets.check_batch(self.dataset, self.batch_size, self.train_limit, path)


@TASKS.register("classification", ClassificationParams)
class Classification:
    """Supervised classification; batch id = the tick it was emitted at."""

    static_data = ("x_train", "y_train", "x_test", "y_test")  # rebuilt, not saved in checkpoints

    def __init__(self, params: ClassificationParams, device: torch.device, generator: torch.Generator):
        self.params = params
        self.device = device
        self.generator = generator
        x_tr, y_tr, x_te, y_te = datasets.load(params.dataset, params.data_dir)
        if params.train_limit and params.train_limit > len(x_tr):
            raise DataError(f"task.train_limit {params.train_limit:_} is above the {len(x_tr):_} training examples "
                            f"of '{params.dataset}' as loaded: lower it or remove it")
        if params.train_limit:
            x_tr, y_tr = x_tr[: params.train_limit], y_tr[: params.train_limit]
        datasets.check_loaded(params.dataset, params.batch_size, len(x_tr))
        self.x_train = torch.as_tensor(x_tr, device=device)
        self.y_train = torch.as_tensor(y_tr, device=device)
        self.x_test = torch.as_tensor(x_te, device=device)
        self.y_test = torch.as_tensor(y_te, device=device)
        self.classes = datasets.info(params.dataset).classes
        self._order = torch.empty(0, dtype=torch.long, device=device)
        self._pos = 0
        self._batches: dict[int, torch.Tensor] = {}  # id -> example indices
        self._loss_sum = torch.zeros((), device=device)
        self._correct = torch.zeros((), device=device)
        self._count = 0
        self._examples = 0
        self._seen = 0

    @classmethod
    def ports(cls, params: ClassificationParams) -> dict[str, Port]:
        info = datasets.info(params.dataset)
        return {"x": Port("x", "input", info.features, info.features),
                "y": Port("y", "loss", info.classes, info.classes)}

    @classmethod
    def batch_rows(cls, params: ClassificationParams) -> tuple[int, str]:
        return params.batch_size, "task.batch_size"

    def _next_indices(self) -> torch.Tensor:
        n, b = len(self.x_train), min(self.params.batch_size, len(self.x_train))
        if self._pos + b > len(self._order):  # new epoch: reshuffle (drop the ragged tail)
            self._order = torch.randperm(n, generator=self.generator, device="cpu").to(self.device)
            self._pos = 0
        idx = self._order[self._pos: self._pos + b]
        self._pos += b
        return idx

    def emit(self, tick: int) -> Emission:
        idx = self._next_indices()
        self._batches[tick] = idx
        self._seen += len(idx)
        return Emission({"x": self.x_train[idx]})

    def context(self, port: str, batch_id: int) -> torch.Tensor:
        idx = self._batches[batch_id]
        if port == "x":
            return self.x_train[idx]
        return F.one_hot(self.y_train[idx], self.classes).to(self.x_train.dtype)

    def loss(self, port: str, batch_id: int, output: torch.Tensor) -> torch.Tensor:
        y = self.y_train[self._batches[batch_id]]
        loss = F.cross_entropy(output, y)
        with torch.no_grad():
            self._loss_sum += loss.detach()
            self._correct += (output.argmax(1) == y).sum()
            self._count += 1
            self._examples += len(y)
        return loss

    def train_metrics(self) -> dict[str, float]:
        if not self._count:
            return {"train/examples": float(self._seen)}
        out = {"train/loss": float(self._loss_sum) / self._count,
               "train/accuracy": float(self._correct) / self._examples,
               "train/examples": float(self._seen)}
        self._loss_sum.zero_()
        self._correct.zero_()
        self._count = self._examples = 0
        return out

    @torch.no_grad()
    def evaluate(self, system: System, synthetic: bool = False) -> dict[str, float]:
        """``test/loss`` and ``test/accuracy`` of the agents composed as one network on real messages. When
        the system has synthetic inputs (``system.synthetic_inputs``) also ``test/synthetic_loss`` and
        ``test/synthetic_accuracy``: each agent reads its synthetic inputs instead (how well the parts
        agree). ``synthetic=True`` scores only that view, under the plain names."""
        out = self._score(system, synthetic)
        if not synthetic and getattr(system, "synthetic_inputs", False):
            view = self._score(system, True)
            out.update({"test/synthetic_loss": view["test/loss"], "test/synthetic_accuracy": view["test/accuracy"]})
        return out

    def _score(self, system: System, synthetic: bool) -> dict[str, float]:
        loss_sum, correct = 0.0, 0
        bs = self.params.test_batch_size
        for i in range(0, len(self.x_test), bs):
            xb, yb = self.x_test[i: i + bs], self.y_test[i: i + bs]
            logits = system.compose({"x": xb}, synthetic=synthetic)["y"]
            loss_sum += float(F.cross_entropy(logits, yb, reduction="sum"))
            correct += int((logits.argmax(1) == yb).sum())
        n = len(self.x_test)
        return {"test/loss": loss_sum / n, "test/accuracy": correct / n}

    def forget(self, below: int) -> None:
        for k in [k for k in self._batches if k < below]:
            del self._batches[k]
