"""TensorBoard event files in a run folder (``torch.utils.tensorboard``), written beside ``metrics.jsonl``.

Every logged metric becomes a scalar at step = tick. At every evaluation, each ``dni`` edge adds two
histograms: ``sg/<src>-<dst>/g_hat`` (M's newest prediction, the (B, width) per-example gradient it will
apply) and ``sg/<src>-<dst>/error`` (M's prediction minus its target at its newest regression, when the
synthesizer exposes it as ``last_regression``). Writing only reads tensors (``.detach().cpu()``): no RNG
draw, no module call, so the run's metrics are exactly those of a run without TensorBoard.

A resumed run appends a new event file to the same folder with ``purge_step`` = the checkpoint's tick + 1, so
TensorBoard drops what the interrupted run logged after its checkpoint (it is logged again, identically).
Without the ``tensorboard`` package the run goes on and says once why there are no event files.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import torch


def _sample(sg: Any) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """(g_hat, error) of one synthesizer, read without computing anything on it (None where absent)."""
    g_hat = None
    records = getattr(sg, "records", None)
    if records:
        g_hat = records[max(records)][2]  # (h, context, g_hat, steps, sent): the newest message's prediction
    error = None
    last = getattr(sg, "last_regression", None)  # (prediction, target) of M's newest regression, if kept
    if last is not None:
        error = last[0].detach() - last[1].detach()
    return g_hat, error


def edge_samples(engine: Any) -> dict[str, torch.Tensor]:
    """``{'sg/<src>-<dst>/g_hat' | '.../error': tensor}`` for every agent-to-agent ``dni`` edge, read through
    :meth:`Engine.edge` (the sender's outbox holds M as ``.sg``)."""
    out: dict[str, torch.Tensor] = {}
    for e in engine.scenario.edges:
        if e.interface is None or e.interface.kind != "dni":
            continue
        outbox, _ = engine.edge(e.src, e.dst)
        if outbox.sg is None:
            continue
        g_hat, error = _sample(outbox.sg)
        if g_hat is not None:
            out[f"sg/{e.key}/g_hat"] = g_hat
        if error is not None:
            out[f"sg/{e.key}/error"] = error
    return out


class EventLog:
    """A SummaryWriter on the run folder, or nothing (with one warning) when TensorBoard is not installed."""

    def __init__(self, folder: Path, resumed_at: int | None = None, quiet: bool = False):
        self.writer = None
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as e:  # torch's writer needs the tensorboard package
            if not quiet:
                print(f"warning: no TensorBoard event files in {folder} ({e}; pip install tensorboard)",
                      file=sys.stderr)
            return
        purge = None if resumed_at is None else resumed_at + 1
        self.writer = SummaryWriter(log_dir=str(folder), purge_step=purge, flush_secs=30)

    @property
    def enabled(self) -> bool:
        return self.writer is not None

    def scalars(self, record: dict[str, Any]) -> None:
        """Every numeric metric of one logged record, at step ``record['tick']``."""
        if self.writer is None:
            return
        tick = int(record["tick"])
        for k, v in record.items():
            if k != "tick" and isinstance(v, (int, float)) and not isinstance(v, bool):
                self.writer.add_scalar(k, v, tick)

    def histograms(self, engine: Any, tick: int) -> None:
        """g_hat and M's error of every dni edge (at an evaluation); flushed, so an interrupted run keeps them."""
        if self.writer is None:
            return
        for k, t in edge_samples(engine).items():
            values = t.detach().float().cpu().reshape(-1)
            if values.numel() and bool(torch.isfinite(values).all()):
                self.writer.add_histogram(k, values, tick)
        self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
