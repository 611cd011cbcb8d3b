"""Reading finished run folders for ``plot`` and ``compare``: their records, final metrics, and groups of runs
that differ only in seed (drawn as one curve, mean and spread).

A run folder is one a run wrote: ``scenario.yaml`` (resolved) and ``metrics.jsonl``; ``summary.json`` when
the run ended (its ``final`` metrics; else the last logged values). The scenario is read as plain YAML, not
validated, so runs of plugin kinds can be compared without importing the plugins.
"""
from __future__ import annotations

import json
import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .errors import CorporationError, did_you_mean
from .plots import read_records

IGNORED = ("seed", "device", "train.progress")  # keys that do not make two runs different experiments


class NotARun(CorporationError):
    """A folder given to ``plot`` or ``compare`` is not a run folder."""


@dataclass
class Run:
    """One run folder: its resolved scenario (plain data), logged records and final metrics."""

    path: Path
    scenario: dict[str, Any]
    records: list[dict[str, Any]]
    final: dict[str, Any] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)  # summary.json ({} while the run has none)

    @property
    def name(self) -> str:
        return str(self.scenario.get("name", self.path.name))

    @property
    def seed(self) -> Any:
        return self.scenario.get("seed")

    def series(self, metric: str) -> dict[int, float]:
        """``{tick: value}`` of one metric (finite values only)."""
        return {int(r["tick"]): float(r[metric]) for r in self.records
                if isinstance(r.get(metric), (int, float)) and math.isfinite(r[metric]) and "tick" in r}


def read_run(folder: str | Path) -> Run:
    """The run in ``folder``; :class:`NotARun` (one line naming the folder and the fix) otherwise."""
    path = Path(folder)
    if not path.is_dir():
        raise NotARun(f"{path}: no such run folder; give folders a run wrote (e.g. runs/<name>-<seed>)")
    missing = [n for n in ("scenario.yaml", "metrics.jsonl") if not (path / n).is_file()]
    if missing:
        raise NotARun(f"{path}: not a run folder (no {missing[0]}); give folders a run wrote (e.g. "
                      "runs/<name>-<seed>)")
    try:
        scenario = yaml.safe_load((path / "scenario.yaml").read_text(encoding="utf-8"))
        records = [r for r in read_records(path / "metrics.jsonl") if isinstance(r, dict)]
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        raise NotARun(f"{path}: cannot read the run ({type(e).__name__}); give folders a run wrote") from None
    if not isinstance(scenario, dict):
        raise NotARun(f"{path}/scenario.yaml: not a resolved scenario; give folders a run wrote")
    final: dict[str, Any] = {}
    for r in records:  # the last value of every metric, as the final table reports it
        final.update(r)
    try:
        summary = json.loads((path / "summary.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        summary = {}
    summary = summary if isinstance(summary, dict) else {}
    if isinstance(summary.get("final"), dict):
        final = {**summary["final"], "tick": summary.get("ticks", final.get("tick"))}
    return Run(path, scenario, records, final, summary)


def _flat(data: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(data, dict):
        out: dict[str, Any] = {}
        for k, v in data.items():
            out.update(_flat(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    if isinstance(data, list):
        out = {}
        for i, v in enumerate(data):
            out.update(_flat(v, f"{prefix}.{i}"))
        return out or {prefix: []}
    return {prefix: data}


@dataclass
class Group:
    """Runs of one experiment: the same resolved scenario except for the seed."""

    label: str
    runs: list[Run]


def _differing(flats: list[dict[str, Any]]) -> list[str]:
    """The keys whose values differ among ``flats``: first those whose values differ among the runs that have
    them, shallowest first, then those some runs lack. An edge's interface key that differs because the
    default ``interface`` differs is left out (the default names it)."""
    keys = {k for f in flats for k in f if any(g.get(k) != f.get(k) for g in flats)}
    keys = {k for k in keys - {"name"} if not (k.startswith("edges.") and ".interface." in k
                                               and "interface." + k.split(".interface.", 1)[1] in keys)}

    def rank(k: str) -> tuple:
        values = [json.dumps(f[k], sort_keys=True, default=str) for f in flats if k in f]
        return (len(set(values)) < 2, k.count("."), k)

    return sorted(keys, key=rank)


def _telling(i: int, flats: list[dict[str, Any]], ranked: list[str]) -> list[str]:
    """The keys (taken in ``ranked`` order) that tell ``flats[i]`` apart from every other one of the same name."""
    others = {j for j, f in enumerate(flats) if j != i and f.get("name") == flats[i].get("name")}
    chosen = []
    for k in ranked:
        told = {j for j in others if flats[j].get(k) != flats[i].get(k)}
        if told:
            chosen.append(k)
            others -= told
        if not others:
            break
    return chosen


def group_runs(runs: list[Run]) -> list[Group]:
    """Runs grouped by their scenario without seed/device; labels name what tells groups apart."""
    flats = [{k: v for k, v in _flat(r.scenario).items() if k not in IGNORED} for r in runs]
    keys: list[str] = []
    members: dict[str, list[int]] = {}
    for i, f in enumerate(flats):
        key = json.dumps(f, sort_keys=True, default=str)
        if key not in members:
            keys.append(key)
            members[key] = []
        members[key].append(i)
    firsts = [flats[members[k][0]] for k in keys]
    ranked = _differing(firsts)
    groups = []
    for i, (key, first) in enumerate(zip(keys, firsts)):
        label = str(first.get("name", "run"))
        diff = [f"{k}={first.get(k)}" for k in _telling(i, firsts, ranked)]
        if diff:
            label += " (" + ", ".join(diff) + ")"
        groups.append(Group(label, [runs[j] for j in members[key]]))
    return groups


def default_metrics(runs: list[Run]) -> list[str]:
    """What to show when no ``--metric`` is given: test accuracies and returns, else top-level test metrics,
    else the training loss or return."""
    names = sorted({k for r in runs for k in r.final if isinstance(r.final[k], (int, float)) and k != "tick"})
    for pick in (lambda k: k.startswith("test/") and k.endswith(("accuracy", "return")),
                 lambda k: k.startswith("test/") and k.count("/") == 1,
                 lambda k: k in ("train/loss", "train/episode_return")):
        chosen = [k for k in names if pick(k)]
        if chosen:
            return chosen
    return names[:4]


def check_metrics(runs: list[Run], metrics: list[str]) -> None:
    """Refuse a metric that no run logged (one line, with a did-you-mean)."""
    logged = sorted({k for r in runs for rec in r.records for k in rec if k != "tick"})
    for m in metrics:
        if not any(m in rec for r in runs for rec in r.records):
            raise CorporationError(f"--metric {m}: no run logged it{did_you_mean(m, logged)}")


def _cell(values: list[float]) -> str:
    if not values:
        return "-"
    if len(set(values)) == 1:
        return f"{values[0]:.4g}"
    return f"{statistics.mean(values):.4g} ± {statistics.stdev(values):.2g}"


def compare_table(runs: list[Run], metrics: list[str] | None = None) -> list[str]:
    """Final metrics side by side: one row per metric, one column per group of seeds (mean ± sd over its
    runs), plus the number of runs and ticks."""
    groups = group_runs(runs)
    metrics = metrics or sorted({k for r in runs for k in r.final if k != "tick" and k.startswith("test/")}) \
        or default_metrics(runs)
    header = ["metric", *[g.label for g in groups]]
    rows = [["runs (seeds)", *[f"{len(g.runs)} ({', '.join(str(r.seed) for r in g.runs)})" for g in groups]],
            ["ticks", *[_cell([float(r.final["tick"]) for r in g.runs if isinstance(r.final.get("tick"), int)])
                        for g in groups]]]
    for m in metrics:
        rows.append([m, *[_cell([float(r.final[m]) for r in g.runs if isinstance(r.final.get(m), (int, float))
                                 and not isinstance(r.final.get(m), bool)]) for g in groups]])
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    return [fmt.format(*header), "  ".join("-" * w for w in widths), *[fmt.format(*row) for row in rows]]


def read_runs(folders: list[str | Path]) -> list[Run]:
    """Every folder as a run (the first one that is not a run stops with its one-line error)."""
    return [read_run(f) for f in folders]
