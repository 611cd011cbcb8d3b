"""Shared helpers: a small digits chain scenario as plain data, tweakable per test."""
from __future__ import annotations

import copy
from typing import Any

import pytest

import corporation  # noqa: F401  (registers the built-in kinds)

CHAIN: dict[str, Any] = {
    "name": "chain",
    "seed": 0,
    "device": "cpu",
    "task": {"kind": "classification", "dataset": "digits", "batch_size": 64},
    "interface": {"kind": "dni", "sg": {"hidden": 0}},
    "agents": {
        "l1": {"model": {"kind": "mlp", "out": 32, "batchnorm": True}, "optimizer": {"lr": 1.0e-3}},
        "l2": {"model": {"kind": "mlp", "out": 32, "batchnorm": True}, "optimizer": {"lr": 1.0e-3}},
        "l3": {"model": {"kind": "linear"}, "optimizer": {"lr": 1.0e-3}},
    },
    "edges": [
        {"src": "task.x", "dst": "l1"},
        {"src": "l1", "dst": "l2"},
        {"src": "l2", "dst": "l3"},
        {"src": "l3", "dst": "task.y"},
    ],
    "train": {"ticks": 20, "eval_every": 10, "progress": False},
}


def chain(**changes: Any) -> dict[str, Any]:
    """A copy of CHAIN with top-level keys replaced (use corporation.scenario overrides for deep keys)."""
    raw = copy.deepcopy(CHAIN)
    raw.update(copy.deepcopy(changes))
    return raw


@pytest.fixture
def chain_raw() -> dict[str, Any]:
    return chain()
