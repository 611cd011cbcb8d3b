"""Smoke tests of the benchmarks: every configuration runs and the ratios come out on the last lines."""
from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import pytest
import torch

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
CASES = {
    "step_overhead": (["--reps", "1", "--steps", "1", "--warmup", "0", "--clock", "cpu"],
                      ["engine_backprop/plain: ", "dni_linear/plain: "]),
    "scale": (["--n", "1", "3", "--steps", "1", "--reps", "1", "--warmup", "0", "--clock", "cpu", "--ratio-n", "3"],
              ["backprop_per_agent/naive_backprop_per_agent: ", "dni_per_agent/naive_per_agent: "]),
}


@pytest.mark.parametrize("name", list(CASES))
def test_benchmark_runs_and_prints_ratios(capsys, name) -> None:
    spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault(name, module)  # dataclasses look their module up there
    spec.loader.exec_module(module)
    args, last = CASES[name]
    threads = torch.get_num_threads()
    try:
        ratios = module.main(args)
    finally:
        torch.set_num_threads(threads)
    assert ratios and all(math.isfinite(r) and r > 0 for r in ratios.values())
    lines = capsys.readouterr().out.strip().splitlines()
    assert [line[: len(p)] for line, p in zip(lines[-2:], last)] == last
