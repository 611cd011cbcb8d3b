"""Smoke test of experiments/copy_sg_quality.py (the replica that measures what the state M predicts)."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "experiments" / "copy_sg_quality.py"
LINE = re.compile(r"tick +(\d+) +level N=(\d+) +r2 vs bootstrapped target ([-+]\d+\.\d+) +r2 vs exact gradient "
                  r"([-+]\d+\.\d+) +cosine with exact ([-+]\d+\.\d+)")


@pytest.mark.parametrize("flags", [[], ["--target", "exact", "--g-hat", "noise"], ["--target", "nstep", "--g-hat", "zero", "--T", "3"]])
def test_replica_runs_and_reports(flags: list[str]) -> None:
    out = subprocess.run([sys.executable, str(SCRIPT), "--ticks", "600", "--every", "300", *flags],
                         capture_output=True, text=True, check=True, timeout=120).stdout
    rows = [LINE.fullmatch(line.strip()) for line in out.strip().splitlines()]
    assert len(rows) == 2 and all(rows), out
    for row in rows:
        assert int(row[2]) >= 2 and float(row[4]) <= 1.0 and -1.0 <= float(row[5]) <= 1.0
