"""Reading a file a user named (a scenario, a corpus, a dataset file): regular files only, size-capped.

A FIFO, socket or device is refused before anything is read (it could block forever or never end), as is a
folder. Problems are :class:`FileProblem` s carrying a short reason; callers turn them into one-line
:class:`~corporation.errors.ScenarioError` or :class:`~corporation.errors.DataError` messages naming the path.
"""
from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO


class FileProblem(Exception):
    """Why a named file cannot be read, as a short phrase: 'does not exist', 'is a folder, not a file', ..."""

    def __init__(self, reason: str, missing: bool = False):
        super().__init__(reason)
        self.reason = reason
        self.missing = missing


def check_regular(path: str | Path) -> os.stat_result:
    """``os.stat`` of a regular file, or a FileProblem saying what ``path`` is instead."""
    try:
        st = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        raise FileProblem("does not exist", missing=True) from None
    except OSError as e:
        raise FileProblem(f"cannot be read ({e.strerror or type(e).__name__})") from None
    except ValueError:  # e.g. an embedded NUL byte in the name
        raise FileProblem("is not a valid file name") from None
    if stat.S_ISDIR(st.st_mode):
        raise FileProblem("is a folder, not a file")
    if not stat.S_ISREG(st.st_mode):
        raise FileProblem("is not a regular file (a FIFO, socket or device)")
    return st


@contextmanager
def open_regular(path: str | Path) -> Iterator[BinaryIO]:
    """Open a regular file for binary reading (checked on the open descriptor: a FIFO never blocks)."""
    check_regular(path)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError as e:
        raise FileProblem(f"cannot be read ({e.strerror or type(e).__name__})") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise FileProblem("is not a regular file (a FIFO, socket or device)")
        f = os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise
    with f:
        yield f


def read_file(path: str | Path, limit: int) -> bytes:
    """The whole file (at most ``limit`` bytes, else a FileProblem naming the limit)."""
    with open_regular(path) as f:
        if os.fstat(f.fileno()).st_size > limit:
            raise FileProblem(f"is larger than the limit of {limit:_} bytes")
        try:
            data = f.read(limit + 1)
        except OSError as e:
            raise FileProblem(f"cannot be read ({e.strerror or type(e).__name__})") from None
    if len(data) > limit:
        raise FileProblem(f"is larger than the limit of {limit:_} bytes")
    return data
