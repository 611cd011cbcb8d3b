"""User-facing errors: anything a user can fix (a bad file, key, value or missing dataset).

The CLI turns a :class:`CorporationError` into one line on stderr and exit code 2, never a traceback.
"""
from __future__ import annotations

import difflib
from collections.abc import Iterable


class CorporationError(Exception):
    """An error the user can fix; its message is one self-contained line."""


class ScenarioError(CorporationError):
    """A scenario file (or override) is invalid: the message names file, key path and a fix."""

    def __init__(self, message: str, path: str = "", file: str | None = None):
        self.raw = message
        self.path = path
        self.file = file
        super().__init__(self._format())

    def _format(self) -> str:
        where = ": ".join(p for p in (self.file, self.path) if p)
        return f"{where}: {self.raw}" if where else self.raw

    def in_file(self, file: str) -> ScenarioError:
        """Return the same error, now naming ``file``."""
        return ScenarioError(self.raw, self.path, file)


class DataError(CorporationError):
    """A dataset or corpus is missing or unreadable; the message says where we looked and how to get it."""


def did_you_mean(word: str, options: Iterable[str]) -> str:
    """A ", did you mean 'x'?" suffix for the closest option, or a list of valid options."""
    options = sorted(str(o) for o in options)
    close = difflib.get_close_matches(str(word), options, n=1, cutoff=0.6)
    if close:
        return f", did you mean '{close[0]}'?"
    if not options:
        return ""
    shown = ", ".join(options[:12]) + (", ..." if len(options) > 12 else "")
    return f" (valid: {shown})"
