"""Plots of a run's records (matplotlib with the Agg backend, imported lazily: no display needed).

``plot_groups`` overlays runs (``python -m corporation plot``): one curve per group of seeds, mean and spread.
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


def group_curve(series: list[dict[int, float]]) -> tuple[list[int], list[float], list[float], list[float]]:
    """(ticks, mean, min, max) over the runs of a group, at the ticks every run logged."""
    ticks = sorted(set.intersection(*(set(s) for s in series))) if series else []
    rows = [[s[t] for s in series] for t in ticks]
    return ticks, [sum(r) / len(r) for r in rows], [min(r) for r in rows], [max(r) for r in rows]


def plot_groups(groups: list[Any], metrics: list[str], out: Path, title: str = "") -> Path:
    """One panel per metric; one curve per group of runs (:class:`corporation.compare.Group`): the mean over
    its seeds, with the band from the lowest to the highest seed (a single run: its own curve)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    cols = min(len(metrics), 3)
    rows = (len(metrics) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(5.2 * cols, 3.6 * rows), dpi=100, squeeze=False)
    try:
        for ax, metric in zip(axes.flat, metrics):
            for g in groups:
                ticks, mean, low, high = group_curve([s for s in (r.series(metric) for r in g.runs) if s])
                if not ticks:
                    continue
                n = len(g.runs)
                (line,) = ax.plot(ticks, mean, marker="o" if len(ticks) < 30 else None, markersize=3,
                                  label=g.label + (f" (mean of {n} seeds)" if n > 1 else ""))
                if n > 1:
                    ax.fill_between(ticks, low, high, color=line.get_color(), alpha=0.2, linewidth=0)
            ax.set_xlabel("tick")
            ax.set_ylabel(metric)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
        for ax in list(axes.flat)[len(metrics):]:
            ax.set_visible(False)
        if title:
            fig.suptitle(title, fontsize=10)
        fig.tight_layout()
        out = Path(out)
        fig.savefig(out, format=out.suffix.lstrip(".") or "png")
        return out
    finally:
        plt.close(fig)
