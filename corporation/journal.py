"""Checkpoints of an engine: a snapshot taken at rest plus a journal of the calls made since.

Autograd graphs cannot be saved, so :class:`Journaled` pickles the whole engine only at a tick with no open
update window (``at_rest``) and records every ``step`` / ``collect`` / ``evaluate`` after it; loading replays
them (corporation.checkpoint does the pickling). Snapshots are taken near each evaluation, so a replay is
short. The engine (:class:`corporation.engine.Engine`) inherits this; it owns the state used here:
``_journal``, ``_snapshot``, ``_snapshot_fresh``, ``cannot_checkpoint``, ``components``, ``agents``, ``task``,
``scenario``, ``tick``, ``horizon``.
"""
from __future__ import annotations

import pickle
from typing import Any

from . import checkpoint as checkpoint_mod
from .errors import CorporationError
from .schema import to_plain
from .spec import Scenario


class Journaled:
    """Snapshot-at-rest plus journal checkpoints (module doc), mixed into the engine."""

    _journal: list[str] | None
    _snapshot: bytes | None
    _snapshot_fresh: bool
    cannot_checkpoint: str | None

    def _note(self, call: str) -> None:
        if self._journal is not None:
            self._journal.append(call)

    def at_rest(self) -> bool:
        """No update window is open anywhere (cheap check; graphs held elsewhere are found when pickling)."""
        return all(c.at_rest() for c in self.components)

    def _take_snapshot(self) -> bool:
        if not self.at_rest() or self.cannot_checkpoint:
            return False
        journal, self._journal, snapshot, self._snapshot = self._journal, None, self._snapshot, None
        try:
            data = checkpoint_mod.dumps(self, checkpoint_mod.static_objects(self.task))
        except checkpoint_mod.NotAtRest:
            return False
        except (pickle.PicklingError, AttributeError, TypeError) as e:  # e.g. a task holding a local class
            self.cannot_checkpoint = f"{type(e).__name__}: {e}"
            return False
        finally:
            self._journal, self._snapshot = journal, snapshot
        self._snapshot, self._journal, self._snapshot_fresh = data, [], True
        return True

    def _maybe_snapshot(self, end: int) -> None:
        """Snapshot at rest at the first chance after a checkpoint and again close before the next one, so
        a checkpoint replays few ticks (evaluation ticks are known in advance; interrupts are not)."""
        every = self.scenario.train.eval_every
        nxt = min(end, (self.tick // every + 1) * every) if self.tick % every else self.tick
        if not self._snapshot_fresh or nxt - self.tick <= self._snapshot_horizon():
            self._take_snapshot()

    def _snapshot_horizon(self) -> int:
        windows = [a.spec.clock.period * a.spec.update.unroll for a in self.agents.values()]
        return 2 * max(windows, default=1) + self.horizon

    def checkpoint(self) -> dict[str, Any]:
        """Everything needed to continue exactly from this tick (see corporation.checkpoint)."""
        if self.cannot_checkpoint:
            raise CorporationError(f"this run cannot be checkpointed ({self.cannot_checkpoint}): its task or "
                                   "models must be picklable (no local classes or lambdas)")
        if self._journal is None or self._snapshot is None:
            raise CorporationError("this engine keeps no checkpoints: build it with Engine(..., checkpoints=True)")
        self._snapshot_fresh = False
        weights = {name: {f"body.{k}": v.detach().cpu() for k, v in a.body.state_dict().items()}
                   | {f"heads.{k}": v.detach().cpu() for k, v in a.heads.state_dict().items()}
                   for name, a in self.agents.items()}
        return checkpoint_mod.pack(self._snapshot, self._journal, self.tick, to_plain(self.scenario), weights)

    @classmethod
    def restore(cls, ckpt: dict[str, Any], scenario: Scenario) -> Any:
        """The engine of checkpoint ``ckpt`` (its snapshot, then its journal replayed), running ``scenario``
        (the run's own, where only ``train`` keys may differ)."""
        fresh = cls(scenario)  # builds the task: constant data the snapshot refers to
        engine = checkpoint_mod.loads(ckpt["snapshot"], checkpoint_mod.static_objects(fresh.task))
        engine.scenario = scenario
        for call in ckpt["journal"]:
            getattr(engine, f"_{call}")()
        engine._snapshot, engine._journal, engine._snapshot_fresh = ckpt["snapshot"], list(ckpt["journal"]), False
        return engine
