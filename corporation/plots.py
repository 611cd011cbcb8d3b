"""Plots of a run's records (matplotlib with the Agg backend, imported lazily: no display needed).

``plot_accuracy`` draws every ``test/.../accuracy`` metric against ticks (with the matching
``test/.../majority`` baselines dashed, when the task reports them) and saves a PNG.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def read_records(path: Path) -> list[dict[str, Any]]:
    """The records of a ``metrics.jsonl`` file (lines that fail to parse are skipped)."""
    records = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


def accuracy_series(records: list[dict[str, Any]]) -> dict[str, tuple[list[int], list[float]]]:
    """``{metric: (ticks, values)}`` for every ``test/.../accuracy`` and ``test/.../majority`` metric."""
    series: dict[str, tuple[list[int], list[float]]] = {}
    for r in records:
        for k, v in r.items():
            if k.startswith("test/") and k.endswith(("accuracy", "/majority")) and isinstance(v, (int, float)):
                ticks, values = series.setdefault(k, ([], []))
                ticks.append(int(r["tick"]))
                values.append(float(v))
    return series


def plot_accuracy(records: list[dict[str, Any]], out: Path, title: str = "") -> Path | None:
    """Write a PNG of test accuracy over ticks to ``out``; returns its path (None: nothing to plot)."""
    series = accuracy_series(records)
    if not any(k.endswith("accuracy") for k in series):
        return None
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=100)
    try:
        colors: dict[str, Any] = {}
        for k in sorted(series, key=lambda k: (k.endswith("majority"), k)):
            ticks, values = series[k]
            group = k.rsplit("/", 1)[0]
            if k.endswith("majority"):
                ax.plot(ticks, values, linestyle="--", linewidth=1, color=colors.get(group), alpha=0.7,
                        label=f"{group}/majority (baseline)")
            else:
                (line,) = ax.plot(ticks, values, marker="o", markersize=3, label=k)
                colors[group] = line.get_color()
        ax.set_xlabel("tick")
        ax.set_ylabel("test accuracy")
        ax.set_ylim(0.0, 1.0)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="lower right")
        if title:
            ax.set_title(title, fontsize=10)
        fig.tight_layout()
        out = Path(out)
        fig.savefig(out, format="png")
        return out
    finally:
        plt.close(fig)


def has_accuracy(records: list[dict[str, Any]]) -> bool:
    """Whether the records hold any test accuracy to plot."""
    return any(k.endswith("accuracy") for k in accuracy_series(records))


def plot_run(run_dir: Path, title: str = "") -> Path | None:
    """Plot ``run_dir/metrics.jsonl`` to ``run_dir/accuracy.png`` (written atomically)."""
    from .runfolder import RunFolder

    run_dir = Path(run_dir)
    records = read_records(run_dir / "metrics.jsonl")
    if not has_accuracy(records):
        return None
    RunFolder(run_dir).write_atomic("accuracy.png", lambda p: plot_accuracy(records, p, title))
    return run_dir / "accuracy.png"
