"""A test task for the distributed engine's fault handling: digits classification whose copy on worker
``rank`` ends its process abruptly (``os._exit``) at tick ``die_at``, as a crashed machine would."""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch.distributed as dist

from corporation.registry import TASKS
from corporation.tasks.classification import Classification, ClassificationParams


@dataclass
class DyingParams(ClassificationParams):
    kind: str = "dying_digits"
    die_at: int = 5
    rank: int = 1


@TASKS.register("dying_digits", DyingParams)
class DyingDigits(Classification):
    def emit(self, tick: int):
        if tick == self.params.die_at and dist.is_initialized() and dist.get_rank() == self.params.rank:
            os._exit(9)
        return super().emit(tick)
