"""Smoke test of benchmarks/step_overhead.py: every configuration runs a step and the ratios come out."""
from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import torch

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "step_overhead.py"


def test_step_overhead_runs_and_prints_ratios(capsys) -> None:
    spec = importlib.util.spec_from_file_location("step_overhead", BENCH)
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("step_overhead", module)  # dataclasses look their module up there
    spec.loader.exec_module(module)
    threads = torch.get_num_threads()
    try:
        ratios = module.main(["--reps", "1", "--steps", "1", "--warmup", "0", "--clock", "cpu"])
    finally:
        torch.set_num_threads(threads)
    assert all(math.isfinite(r) and r > 0 for r in ratios.values())
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-2].startswith("engine_backprop/plain: ")
    assert lines[-1].startswith("dni_linear/plain: ")
