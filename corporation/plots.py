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


def return_metrics(records: list[dict[str, Any]]) -> list[str]:
    """The episode-return metrics an RL run logged (``train/episode_return``, ``test/.../episode_return``)."""
    return sorted({k for r in records for k in r if k.endswith("episode_return")})


def plot_run(run_dir: Path, title: str = "") -> Path | None:
    """Plot ``run_dir/metrics.jsonl`` to ``run_dir/accuracy.png`` or, for an RL run, ``run_dir/return.png``
    (one panel per return metric; written atomically); None: nothing to plot."""
    from .compare import Group, read_run
    from .runfolder import RunFolder

    run_dir = Path(run_dir)
    records = read_records(run_dir / "metrics.jsonl")
    if has_accuracy(records):
        RunFolder(run_dir).write_atomic("accuracy.png", lambda p: plot_accuracy(records, p, title))
        return run_dir / "accuracy.png"
    metrics = return_metrics(records)
    if not metrics:
        return None
    group = Group("return", [read_run(run_dir)])
    RunFolder(run_dir).write_atomic("return.png", lambda p: plot_curves(
        [(m, m, [group]) for m in metrics], p, title=title, cols=2))
    return run_dir / "return.png"


def group_curve(series: list[dict[int, float]]) -> tuple[list[int], list[float], list[float], list[float]]:
    """(ticks, mean, min, max) over the runs of a group, at the ticks every run logged."""
    ticks = sorted(set.intersection(*(set(s) for s in series))) if series else []
    rows = [[s[t] for s in series] for t in ticks]
    return ticks, [sum(r) / len(r) for r in rows], [min(r) for r in rows], [max(r) for r in rows]


def plot_curves(panels: list[tuple], out: Path, x: str = "tick", title: str = "",
                references: dict[str, float] | None = None, ylim: tuple[float | None, float | None] | None = None,
                cols: int = 3) -> Path:
    """Panels ``(title, metric, groups[, references])``; in each, one curve per group of runs
    (:class:`corporation.compare.Group`): the mean over its seeds at the ticks they all logged, with the band
    from the lowest to the highest seed. ``x``: ``tick`` or a logged metric (e.g. ``train/env_steps``; its mean
    over the seeds at each tick). ``references``: labelled horizontal lines (e.g. scripted baselines), for every
    panel without its own."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    cols = min(len(panels), cols)
    rows = (len(panels) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(5.2 * cols, 3.6 * rows), dpi=100, squeeze=False)
    labels = list(dict.fromkeys(g.label for p in panels for g in p[2]))  # one colour per label
    try:
        for ax, (name, metric, groups, *own) in zip(axes.flat, panels):
            for g in groups:
                series = [s for s in (r.series(metric) for r in g.runs) if s]
                if x != "tick":  # only ticks where the x metric was logged too; x: its mean over the seeds
                    xmaps = [r.series(x) for r in g.runs if r.series(metric)]
                    series = [{t: v for t, v in s.items() if t in xm} for s, xm in zip(series, xmaps)]
                ticks, mean, low, high = group_curve(series)
                xs = ticks if x == "tick" else [sum(xm[t] for xm in xmaps) / len(xmaps) for t in ticks]
                if not xs:
                    continue
                n = len(series)
                color = f"C{labels.index(g.label) % 10}"
                ax.plot(xs, mean, marker="o" if len(xs) < 30 else None, markersize=3, color=color,
                        label=g.label + (f" (mean of {n} seeds)" if n > 1 else ""))
                if n > 1:
                    ax.fill_between(xs, low, high, color=color, alpha=0.2, linewidth=0)
            for ref, value in (own[0] if own else references or {}).items():
                ax.axhline(value, color="grey", ls=":", lw=1)
                ax.annotate(ref, (ax.get_xlim()[0], value), fontsize=7, color="grey", va="bottom")
            if ylim is not None:
                ax.set_ylim(*ylim)
            ax.set_title(name, fontsize=9)
            ax.set_xlabel(x)
            ax.set_ylabel(metric)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
        for ax in list(axes.flat)[len(panels):]:
            ax.set_visible(False)
        if title:
            fig.suptitle(title, fontsize=9)
        fig.tight_layout()
        out = Path(out)
        fig.savefig(out, format=_format(out))
        return out
    finally:
        plt.close(fig)


def _format(path: Path) -> str:
    """The image format named by ``path``'s suffix (png for a temporary name such as ``.x.png.tmp``)."""
    suffix = path.suffix.lower().lstrip(".")
    return suffix if suffix in ("png", "pdf", "svg") else "png"


def plot_groups(groups: list[Any], metrics: list[str], out: Path, title: str = "") -> Path:
    """One panel per metric, one curve per group of runs over ticks (``python -m corporation plot``)."""
    return plot_curves([(m, m, groups) for m in metrics], out, title=title)


def plot_points(panels: list[tuple[str, dict[str, dict[float, list[float]]]]], out: Path, xlabel: str,
                ylabel: str, logy: bool = False, title: str = "", logx: bool = False,
                references: list[dict[str, float]] | None = None) -> Path:
    """Side-by-side panels ``(title, {label: {x: [value per seed]}})`` of a result against a setting (depth,
    window, probability): per label, the mean over seeds with bars from the lowest to the highest seed.
    ``references``: per panel, labelled horizontal lines (e.g. the backprop oracle)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    from matplotlib.ticker import ScalarFormatter

    fig, axes = plt.subplots(1, len(panels), figsize=(4.4 * len(panels), 3.5), dpi=110, squeeze=False)
    labels = list(dict.fromkeys(label for _, series in panels for label in series))  # one colour per label
    try:
        for k, (ax, (name, series)) in enumerate(zip(axes[0], panels)):
            ticks: set = set()
            for label, points in series.items():
                i = labels.index(label)
                xs = sorted(x for x, v in points.items() if v)
                if not xs:
                    continue
                ticks.update(xs)
                mean = [sum(points[x]) / len(points[x]) for x in xs]
                low = [m - min(points[x]) for m, x in zip(mean, xs)]
                high = [max(points[x]) - m for m, x in zip(mean, xs)]
                ax.errorbar(xs, mean, yerr=[low, high], marker="osD^v<>"[i % 7], color=f"C{i % 10}", capsize=3,
                            label=label)
            for ref, value in (references[k] if references else {}).items():
                ax.axhline(value, color="grey", linestyle=":", label=ref)
            if logx:
                ax.set_xscale("log")
                ax.minorticks_off()
            if ticks and len(ticks) <= 12:
                ax.set_xticks(sorted(ticks))
                ax.set_xticklabels([f"{t:g}" for t in sorted(ticks)])
            ax.set_title(name, fontsize=9)
            ax.set_xlabel(xlabel)
            ax.set_ylabel(ylabel)
            if logy:
                ax.set_yscale("log")
                ax.yaxis.set_major_formatter(ScalarFormatter())
                ax.yaxis.set_minor_formatter(ScalarFormatter())
                ax.tick_params(axis="y", which="minor", labelsize=7)
            ax.grid(alpha=0.3, which="both")
            ax.legend(fontsize=7)
        if title:
            fig.suptitle(title, fontsize=9)
        fig.tight_layout()
        out = Path(out)
        fig.savefig(out)
        return out
    finally:
        plt.close(fig)
