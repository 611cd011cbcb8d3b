"""Decoupled Neural Interfaces: the synthetic gradient model M and the synthetic input model I.

M (on the sender's side of a ``dni`` edge) maps (h, c) to g_hat, a prediction of the *per-example*
gradient of the loss w.r.t. the message h (B * dL/dh for a batch-mean loss L over B examples; this keeps
M's outputs O(1) whatever the batch size). Its last layer is zero-initialised, so a fresh M outputs exactly
zero. M regresses on its target with an L2 loss and is trained by nothing else.

I (on the receiver's side) maps a context c to h_hat, a prediction of the message h; it regresses on the
real h for the same batch id when that arrives.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from .errors import ScenarioError
from .models import init_parameters, mlp
from .optim import clear_grads, make_optimizer
from .registry import SYNTHESIZERS
from .schema import positive, within
from .spec import OptimizerSpec, SyntheticInputSpec

MAX_HISTORY = 64  # sg.history: past messages of an edge in M's input


@dataclass
class MLPSynthesizerParams:
    """M as an MLP: ``hidden`` layers of ``width`` (0 = linear), ReLU, optional batch norm.

    ``scale`` multiplies g_hat before it is applied, ``clip`` caps each example's g_hat norm, ``warmup``
    ticks train M without applying it (the sender gets zero gradient meanwhile), ``optimizer: null`` uses
    the sender's optimizer settings.

    M's target (:mod:`corporation.targets`): ``target`` is ``bootstrap`` (default), ``nstep`` (state M
    only), ``lambda`` or ``exact`` (diagnosis: not decoupled in its targets), with discount ``gamma``,
    ``lam`` (lambda only) and ``horizon`` (windows of a state M's n-step / lambda / exact target).
    ``normalize``: M predicts its target divided by a running RMS of the targets (g_hat is scaled back).
    ``clip_error``: each example's regression error ||g_hat - target|| is capped (a robust, clipped update).
    ``sender_step``: ``optimizer`` (default), ``r2`` or ``snr``: a sender whose gradients all come through
    this M (else only its head toward this edge) steps with its lr times a factor in [0, 1], so Adam does
    not turn a smooth or imprecise g_hat into full-size steps: ``r2``: clamp(M's running r2, 0, 1);
    ``snr``: sqrt(running E||g_hat||^2 / running E||target||^2), clamped to 1. For an M that predicts the
    conditional mean mu of a target with noise sigma this is |mu| / sqrt(mu^2 + sigma^2): Adam's step
    under the true, noisy gradient (backprop) is about lr times that, so the g_hat-driven sender steps as
    the backprop one would.

    ``history``: M's input also holds the last ``history`` messages the sender posted on this edge before h
    (most recent first; zeros before the first one, at a sequence start and in rows whose episode restarted).
    A recurrent receiver's gradient for h depends on what it read before h, which M cannot see in h and c
    alone; the sender keeps its own messages, so nothing more crosses the edge (corporation/outbox.py)."""

    kind: str = "mlp"
    hidden: int = 0
    width: int = 1024
    batchnorm: bool = False
    scale: float = 1.0
    clip: float | None = None
    warmup: int = 0
    optimizer: OptimizerSpec | None = None
    target: Literal["bootstrap", "nstep", "lambda", "exact"] = "bootstrap"
    gamma: float = 1.0
    lam: float = 0.5
    horizon: int = 2
    normalize: bool = False
    clip_error: float | None = None
    sender_step: Literal["optimizer", "r2", "snr"] = "optimizer"
    history: int = 0

    def check(self, path: str) -> None:
        positive(self.hidden, path, "hidden", allow_zero=True)
        positive(self.width, path, "width")
        positive(self.scale, path, "scale", allow_zero=True)
        positive(self.clip, path, "clip")
        positive(self.warmup, path, "warmup", allow_zero=True)
        for key in ("gamma", "lam"):
            if not 0.0 <= getattr(self, key) <= 1.0:
                raise ScenarioError(f"must be within [0, 1], got {getattr(self, key)}", f"{path}.{key}")
        within(self.horizon, 1, 64, path, "horizon", "windows of an n-step / lambda / exact target")
        positive(self.clip_error, path, "clip_error")
        within(self.history, 0, MAX_HISTORY, path, "history", "past messages M sees beside h")


def regression_net(in_size: int, out_size: int, hidden: int, width: int, batchnorm: bool,
                   generator: torch.Generator, zero_last: bool) -> nn.Sequential:
    with torch.random.fork_rng(devices=[]):
        net = mlp(in_size, [width] * hidden + [out_size], batchnorm, "relu", out_activation=False)
    init_parameters(net, generator)
    if zero_last:
        last = net[-1]
        with torch.no_grad():
            last.weight.zero_()
            last.bias.zero_()
    return net


@SYNTHESIZERS.register("mlp", MLPSynthesizerParams)
class SyntheticGradient(nn.Module):
    """M(h, c) -> g_hat. Owns its optimizer and the records (h, c) that wait for their targets."""

    def __init__(self, params: MLPSynthesizerParams, h_size: int, context_size: int,
                 generator: torch.Generator, device: torch.device, optimizer: OptimizerSpec):
        super().__init__()
        self.params = params
        self.net = regression_net(h_size + context_size, h_size, params.hidden, params.width,
                                  params.batchnorm, generator, zero_last=True).to(device)
        self.optimizer = make_optimizer(params.optimizer or optimizer, self.net.parameters())
        self.steps = 0  # M's optimizer steps; a record's graph is reusable only if none happened since
        self.records: dict[int, tuple] = {}
        self.stats = Stats(device)
        self.last_regression: tuple[torch.Tensor, torch.Tensor] | None = None  # (g_hat, target), newest
        # sg.normalize: running mean of the squared target (EMA 0.99, bias-corrected by ``seen``)
        self.target_sq = torch.zeros((), device=device)
        self.seen = 0
        self.fit = 0.0  # sg.sender_step r2: running r2 of M against its targets (EMA 0.9, starts at 0)
        self.g_hat_sq = self.target_energy = 0.0  # sg.sender_step snr: running E||g_hat||^2, E||target||^2

    def forward(self, h: torch.Tensor, context: torch.Tensor | None) -> torch.Tensor:
        out = self.net(h if context is None else torch.cat([h, context], dim=1))
        return out * self.rms() if self.params.normalize else out

    def rms(self) -> torch.Tensor:
        """The running RMS of M's targets (per unit; 1 before the first target): M's output unit when
        ``normalize`` is on, so the net itself predicts targets of size O(1) whatever their scale."""
        if not self.seen:
            return torch.ones_like(self.target_sq)
        return debiased_rms(self.target_sq, self.seen)

    def __getstate__(self) -> dict:
        """For checkpoints: a record's g_hat graph cannot be saved, so it is dropped and recomputed on
        the same M (same values) when its target arrives."""
        state = self.__dict__.copy()
        state["records"] = {k: (h, c, None, -1, sent) for k, (h, c, _, _, sent) in self.records.items()}
        return state

    def predict(self, batch_id: int, h: torch.Tensor, context: torch.Tensor | None, tick: int) -> torch.Tensor:
        """g_hat for message h (detached input), recorded for training; returns the gradient to apply
        to h: scaled, clipped, zero during warm-up, and divided by the batch size (batch-mean loss)."""
        h = h.detach()
        g_hat = self(h, context)
        self.records[batch_id] = (h, context, g_hat, self.steps, tick)
        if len(self.records) > 4096:  # targets that never come (skipped updates): forget the oldest
            del self.records[min(self.records)]
        p = self.params
        if tick < p.warmup or p.scale == 0.0:
            return torch.zeros_like(h)
        g = g_hat.detach()
        if p.clip is not None:
            norm = g.norm(dim=1, keepdim=True).clamp_min(1e-12)
            g = g * (p.clip / norm).clamp(max=1.0)
        return g * (p.scale / h.shape[0])

    def train_on(self, batch_id: int, target: torch.Tensor, tick: int) -> None:
        """Regress the recorded g_hat for ``batch_id`` on ``target`` (per-example gradient), one step."""
        loss = self.regression_loss(batch_id, target, tick)
        if loss is not None:
            loss.backward()
            self.optimizer.step()
            self.stepped()

    def regression_loss(self, batch_id: int, target: torch.Tensor, tick: int) -> torch.Tensor | None:
        """The first half of :meth:`train_on`: M's L2 loss for ``batch_id`` (M's gradients zeroed), or None
        when no record waits for this target. The caller backpropagates it, steps ``optimizer`` (alone or
        together with other Ms') and calls :meth:`stepped`."""
        record = self.records.pop(batch_id, None)
        if record is None:
            return None
        for old in [k for k in self.records if k < batch_id]:
            del self.records[old]
        h, context, g_hat, steps, sent = record
        if steps != self.steps or g_hat is None or not g_hat.requires_grad:  # M changed since: recompute
            g_hat = self(h, context)
        target = target.detach()
        loss = F.mse_loss(g_hat, target, reduction="sum") / h.shape[0]
        clear_grads(self.optimizer)
        self.stats.add(loss.detach(), g_hat.detach(), target, tick - sent)
        self.last_regression = (g_hat.detach(), target)  # for TensorBoard's error histogram (read only)
        p = self.params
        if p.sender_step == "r2":
            energy = float(target.pow(2).sum()) / h.shape[0]
            if energy > 0.0:
                self.fit = 0.9 * self.fit + 0.1 * (1.0 - float(loss.detach()) / energy)
        elif p.sender_step == "snr":
            self.g_hat_sq = 0.9 * self.g_hat_sq + 0.1 * float(g_hat.detach().pow(2).sum()) / h.shape[0]
            self.target_energy = 0.9 * self.target_energy + 0.1 * float(target.pow(2).sum()) / h.shape[0]
        if p.clip_error is not None:  # cap each example's error: the update of a robust regression
            error = target - g_hat.detach()
            norm = error.norm(dim=1, keepdim=True).clamp_min(1e-12)
            target = g_hat.detach() + error * (p.clip_error / norm).clamp(max=1.0)
            loss = F.mse_loss(g_hat, target, reduction="sum") / h.shape[0]
        if p.normalize:  # the loss in units of the running target RMS (updated with this target first)
            self.target_sq.mul_(0.99).add_(0.01 * target.pow(2).mean())
            self.seen += 1
            loss = loss / self.rms().pow(2)
        return loss

    def sender_factor(self) -> float:
        """The factor on a g_hat-only sender's lr: ``r2``: clamp(running r2, 0, 1); ``snr``:
        min(sqrt(running E||g_hat||^2 / running E||target||^2), 1) (0 before M's first regression)."""
        if self.params.sender_step == "r2":
            return min(max(self.fit, 0.0), 1.0)
        if self.params.sender_step == "snr":
            return min((self.g_hat_sq / self.target_energy) ** 0.5, 1.0) if self.target_energy > 0.0 else 0.0
        return 1.0

    def stepped(self) -> None:
        """M's optimizer has stepped: recorded g_hat graphs are now stale."""
        self.steps += 1


class MixGradient(torch.autograd.Function):
    """BP(lambda) on a message: identity forward; backward ``lam * grad + (1 - lam) * g`` (g: the applied
    g_hat, batch mean), and the true per-example gradient ``B * grad`` goes to ``sink(batch_id, target)``
    (M's regression target)."""

    @staticmethod
    def forward(ctx, h: torch.Tensor, g: torch.Tensor, lam: float, sink, batch_id: int) -> torch.Tensor:
        ctx.save_for_backward(g)
        ctx.lam, ctx.sink, ctx.batch_id = lam, sink, batch_id
        return h.view_as(h)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (g,) = ctx.saved_tensors
        ctx.sink(ctx.batch_id, grad.detach() * grad.shape[0])
        if ctx.lam == 1.0:
            mixed = grad
        elif ctx.lam == 0.0:
            mixed = g
        else:
            mixed = ctx.lam * grad + (1.0 - ctx.lam) * g
        return mixed, None, None, None, None


class SyntheticInput(nn.Module):
    """I(c) -> h_hat, trained by L2 regression on the real message for the same batch id."""

    def __init__(self, spec: SyntheticInputSpec, context_size: int, h_size: int,
                 generator: torch.Generator, device: torch.device, optimizer: OptimizerSpec):
        super().__init__()
        self.spec = spec
        self.net = regression_net(context_size, h_size, spec.hidden, spec.width, spec.batchnorm,
                                  generator, zero_last=False).to(device)
        self.optimizer = make_optimizer(spec.optimizer or optimizer, self.net.parameters())
        self.stats = Stats(device)

    def forward(self, context: torch.Tensor) -> torch.Tensor:
        return self.net(context)

    def train_on(self, context: torch.Tensor, h: torch.Tensor, age: int) -> None:
        h_hat = self(context.detach())
        h = h.detach()
        loss = F.mse_loss(h_hat, h, reduction="sum") / h.shape[0]
        clear_grads(self.optimizer)
        loss.backward()
        self.optimizer.step()
        self.stats.add(loss.detach(), h_hat.detach(), h, age)


def debiased_rms(mean_sq: torch.Tensor, seen: int) -> torch.Tensor:
    """The RMS from an EMA (decay 0.99, started at 0) of a mean square after ``seen`` updates, with the
    EMA's start-up bias removed (as Adam's); floored at 1e-12 so dividing by it is safe. 0-d tensor."""
    return (mean_sq / (1.0 - 0.99 ** seen)).sqrt().clamp_min(1e-12)


class Stats:
    """Running sums of a regression's loss, cosine(prediction, target) and target age, read at log time.

    ``r2`` (explained variance) is 1 - sum(loss) / sum(target energy), both per example: 1 for a perfect
    prediction, 0 for one no better than predicting zero (a fresh M), negative for one that adds noise.
    The loss must be ``sum ||pred - target||^2 / B`` (per-example squared error, batch mean) for it to hold."""

    def __init__(self, device: torch.device):
        self.sums = torch.zeros(3, device=device)  # loss, target energy, cosine
        self.count = 0
        self.age_sum = 0
        self.age_max = 0

    @torch.no_grad()
    def add(self, loss: torch.Tensor, pred: torch.Tensor, target: torch.Tensor, age: int) -> None:
        """Add one regression: loss (scalar), prediction and target (B, ...) of the same shape."""
        p, t = pred.reshape(-1), target.reshape(-1)
        dots = torch.stack([torch.dot(p, t), torch.dot(p, p), torch.dot(t, t)])  # three BLAS dots
        cosine = dots[0] / (dots[1] * dots[2]).clamp_min(1e-24).sqrt()
        self.sums += torch.stack([loss.reshape(()), dots[2] / max(target.shape[0], 1), cosine])
        self.count += 1
        self.age_sum += age
        self.age_max = max(self.age_max, age)

    @property
    def loss(self) -> torch.Tensor:
        """The summed loss since the last read (a 0-d view; the divergence guard checks it)."""
        return self.sums[0]

    def read(self, prefix: str) -> dict[str, float]:
        """Metrics since the last read (empty if no training happened); resets the sums."""
        if not self.count:
            return {}
        loss, energy, cosine = self.sums.tolist()
        out = {f"{prefix}/loss": loss / self.count,
               f"{prefix}/cosine": cosine / self.count,
               f"{prefix}/staleness": self.age_sum / self.count,
               f"{prefix}/staleness_max": float(self.age_max)}
        if energy > 0.0:  # all-zero targets (e.g. only sequence ends): no r2
            out[f"{prefix}/r2"] = 1.0 - loss / energy
        self.sums.zero_()
        self.count = self.age_sum = self.age_max = 0
        return out


from . import feedback  # noqa: F401  (registers sg.kind dfa; it builds on Stats above)
