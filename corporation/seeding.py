"""Per-component random streams: every agent and the task get their own seeded ``torch.Generator``."""
from __future__ import annotations

import hashlib

import torch


def derive_seed(seed: int, *names: str) -> int:
    """A stable 63-bit seed for (seed, names...), independent of Python's hash randomisation."""
    digest = hashlib.sha256(":".join([str(seed), *names]).encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def generator(seed: int, *names: str) -> torch.Generator:
    g = torch.Generator()
    g.manual_seed(derive_seed(seed, *names))
    return g
