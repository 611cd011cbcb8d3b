"""User-facing errors: anything a user can fix (a bad file, key, value or missing dataset).

The CLI turns a :class:`CorporationError` into one line on stderr and exit code 2, never a traceback. Every
message is made one line here (control characters escaped, length capped), and :func:`short` keeps a user's
value short when an error quotes it.
"""
from __future__ import annotations

import difflib
import re
from collections.abc import Iterable
from typing import Any

VALUE_CHARS = 200  # an error quotes at most this many characters of a user's value
MESSAGE_CHARS = 1000  # and is at most this long in all
_CONTROL = re.compile(r"[\x00-\x1f\x7f\u2028\u2029\x85]")


def one_line(text: str, limit: int = MESSAGE_CHARS) -> str:
    """``text`` on one line: control characters escaped (a newline becomes ``\\n``), cut at ``limit``."""
    text = _CONTROL.sub(lambda m: repr(m.group())[1:-1], str(text))
    return text if len(text) <= limit else text[: limit - 3] + "..."


def short_path(path: str, limit: int = VALUE_CHARS) -> str:
    """A file name for an error message: a very long one keeps its end (where the file's own name is)."""
    path = str(path)
    return path if len(path) <= limit else "..." + path[-(limit - 3):]


def short(value: Any, limit: int = VALUE_CHARS) -> str:
    """``repr(value)``, cut to ``limit`` characters (a huge list or string stays readable in an error)."""
    try:
        text = repr(value)
    except Exception:  # noqa: BLE001  (a broken __repr__ must not hide the real error)
        text = f"<{type(value).__name__}>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


class CorporationError(Exception):
    """An error the user can fix; its message is one self-contained line."""

    def __init__(self, message: str = ""):
        super().__init__(one_line(message))


class ScenarioError(CorporationError):
    """A scenario file (or override) is invalid: the message names file, key path and a fix."""

    def __init__(self, message: str, path: str = "", file: str | None = None):
        self.raw = message
        self.path = path
        self.file = file
        super().__init__(self._format())

    def _format(self) -> str:
        where = ": ".join(p for p in (short_path(self.file) if self.file else None, self.path) if p)
        return f"{where}: {self.raw}" if where else self.raw

    def in_file(self, file: str) -> ScenarioError:
        """Return the same error, now naming ``file``."""
        return ScenarioError(self.raw, self.path, file)


class DataError(CorporationError):
    """A dataset or corpus is missing or unreadable; the message says where we looked and how to get it."""

    def in_file(self, file: str) -> DataError:
        """The same error, now naming the scenario ``file`` that asked for the data."""
        return DataError(f"{short_path(file)}: {self}")


def did_you_mean(word: str, options: Iterable[str]) -> str:
    """A ", did you mean 'x'?" suffix for the closest option, or a list of valid options."""
    options = sorted(str(o) for o in options)
    word = str(word)[:VALUE_CHARS]
    close = difflib.get_close_matches(word, options, n=1, cutoff=0.6)
    if close:
        return f", did you mean '{close[0]}'?"
    if not options:
        return ""
    shown = ", ".join(options[:12]) + (", ..." if len(options) > 12 else "")
    return f" (valid: {shown})"
