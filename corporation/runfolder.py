"""Run folders: where a run writes, never over an earlier run (the IO edge; no training here).

- The default folder is the first free one of ``runs/<name>-<seed>``, ``runs/<name>-<seed>-2``, ...
- ``--out DIR`` naming a folder that already holds a run is refused unless ``overwrite`` is given.
- A lock file (``DIR/.lock``, holding the owner's pid) refuses a second concurrent run on one folder; a lock
  left by a process that no longer exists is taken over.
- ``metrics.jsonl`` only ever holds whole lines (one write and flush per line; a partial last line left by
  a killed process is cut when the run is resumed); every other file is written atomically (a temporary
  file in the same folder, then a rename), so a reader never sees half a summary, plot or checkpoint.

Every OSError on the folder becomes one :class:`RunFolderError` line naming the path and a fix.
"""
from __future__ import annotations

import errno
import json
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TextIO

from .errors import CorporationError

RUN_FILES = ("scenario.yaml", "metrics.jsonl", "summary.json", "checkpoint.pt", "accuracy.png", "return.png",
             "eval.json")
EVENTS_GLOB = "events.out.tfevents.*"  # TensorBoard event files (corporation.tensorboard)
LOCK = ".lock"


class RunFolderError(CorporationError):
    """The run folder cannot be used (exists, is locked, cannot be written): one line with the fix."""


def os_problem(path: Path | str, e: OSError, fix: str = "choose another --out") -> RunFolderError:
    """One line for an OSError on ``path``."""
    if e.errno == errno.ENOSPC:
        fix = "free some disk space or " + fix
    return RunFolderError(f"{path}: {e.strerror or type(e).__name__}; {fix}")


def holds_run(folder: Path) -> bool:
    """Whether ``folder`` already holds (part of) a run."""
    return any((folder / name).exists() for name in RUN_FILES)


def claim_default(name: str, seed: int, root: Path = Path("runs")) -> Path:
    """Create and return the first free one of ``root/<name>-<seed>``, ``root/<name>-<seed>-2``, ...
    (``mkdir`` without ``exist_ok`` is atomic: two runs started at once never get the same folder)."""
    base = root / f"{name}-{seed}"
    try:
        root.mkdir(parents=True, exist_ok=True)
        k = 1
        while True:
            candidate = base if k == 1 else base.with_name(f"{base.name}-{k}")
            try:
                candidate.mkdir()
                return candidate
            except FileExistsError:
                k += 1
    except OSError as e:
        raise os_problem(root, e, "run from a writable folder or name one with --out") from None


def check_out(out: Path, overwrite: bool) -> None:
    """Refuse an ``--out`` that is not a folder, or that holds a run (unless ``overwrite``); creates nothing."""
    try:
        if out.exists() and not out.is_dir():
            raise RunFolderError(f"--out {out}: exists and is not a folder; choose another --out")
        if out.is_dir() and holds_run(out) and not overwrite:
            raise RunFolderError(f"--out {out}: already holds a run; choose another --out, add --overwrite "
                                 "to replace it, or continue it with 'python -m corporation resume "
                                 f"{out}'")
        for parent in out.parents:
            if parent.exists():
                if not parent.is_dir():
                    raise RunFolderError(f"--out {out}: {parent} is not a folder; choose another --out")
                if not os.access(parent, os.W_OK | os.X_OK):
                    raise RunFolderError(f"--out {out}: {parent} is not writable; choose another --out")
                break
    except OSError as e:
        raise os_problem(out, e) from None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class RunFolder:
    """An open, locked run folder. Use :func:`open_folder`."""

    def __init__(self, path: Path):
        self.path = path

    # ----- locking -----------------------------------------------------------------------------------
    def _lock(self) -> None:
        lock = self.path / LOCK
        for _ in range(2):
            try:
                fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                try:
                    pid = int(lock.read_text().strip() or "0")
                except (OSError, ValueError):
                    pid = 0
                if pid and pid != os.getpid() and _pid_alive(pid):
                    raise RunFolderError(f"{self.path}: a run (process {pid}) is using this folder; wait for "
                                         "it to end or choose another --out") from None
                lock.unlink(missing_ok=True)  # left by a process that is gone
                continue
            with os.fdopen(fd, "w") as f:
                f.write(f"{os.getpid()}\n")
            return
        raise RunFolderError(f"{self.path}: cannot take the lock {lock}; remove it if no run is using the folder")

    def _unlock(self) -> None:
        try:
            (self.path / LOCK).unlink(missing_ok=True)
        except OSError:
            pass

    def clear(self) -> None:
        """Remove an earlier run's files (``--overwrite``); other files in the folder stay."""
        try:
            events = [p.name for p in self.path.glob(EVENTS_GLOB)]
        except OSError:
            events = []
        for name in [*RUN_FILES, *events]:
            try:
                (self.path / name).unlink(missing_ok=True)
            except OSError as e:
                raise os_problem(self.path / name, e) from None

    # ----- writing -----------------------------------------------------------------------------------
    def write_atomic(self, name: str, write: Callable[[Path], None]) -> None:
        """``write(tmp)`` writes a temporary file in the folder, which then replaces ``name`` at once."""
        final = self.path / name
        tmp = self.path / f".{name}.tmp"
        try:
            write(tmp)
            os.replace(tmp, final)
        except OSError as e:
            tmp.unlink(missing_ok=True)
            raise os_problem(final, e) from None

    def write_text(self, name: str, text: str) -> None:
        self.write_atomic(name, lambda p: p.write_text(text, encoding="utf-8"))

    def write_json(self, name: str, data: Any) -> None:
        self.write_text(name, json.dumps(data, indent=2) + "\n")

    def metrics(self, keep_until: int | None = None) -> MetricsFile:
        """``metrics.jsonl`` for appending: new (``keep_until`` None), or cut to its whole lines of ticks
        <= ``keep_until`` (a resumed run: what comes after the checkpoint is logged again, identically)."""
        path = self.path / "metrics.jsonl"
        try:
            if keep_until is None:
                return MetricsFile(path, open(path, "w", encoding="utf-8"))
            kept = []
            if path.exists():
                for line in path.read_text(encoding="utf-8").split("\n"):
                    try:
                        record = json.loads(line)
                    except json.JSONDecodeError:
                        continue  # a partial last line, or an empty one
                    if isinstance(record, dict) and record.get("tick", 0) <= keep_until:
                        kept.append(line + "\n")
            self.write_text("metrics.jsonl", "".join(kept))
            return MetricsFile(path, open(path, "a", encoding="utf-8"))
        except OSError as e:
            raise os_problem(path, e) from None


class MetricsFile:
    """``metrics.jsonl``: one JSON object per line, each written whole and flushed."""

    def __init__(self, path: Path, stream: TextIO):
        self.path = path
        self.stream = stream

    def write(self, record: dict[str, Any]) -> None:
        try:
            self.stream.write(json.dumps(record) + "\n")
            self.stream.flush()
        except OSError as e:
            raise os_problem(self.path, e) from None

    def close(self) -> None:
        try:
            self.stream.close()
        except OSError:
            pass


@contextmanager
def open_folder(path: Path, create: bool = True, overwrite: bool = False) -> Iterator[RunFolder]:
    """Create (when ``create``) and lock the folder for the duration of the block."""
    try:
        if create:
            path.mkdir(parents=True, exist_ok=True)
        elif not path.is_dir():
            raise RunFolderError(f"{path}: no such run folder; give the folder a run wrote (e.g. runs/<name>-<seed>)")
    except OSError as e:
        raise os_problem(path, e) from None
    folder = RunFolder(path)
    folder._lock()
    try:
        if overwrite:
            folder.clear()
        yield folder
    finally:
        folder._unlock()
