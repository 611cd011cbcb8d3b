"""Plugins: user modules that register models, tasks or synthesizers (:mod:`corporation.registry`) before a
scenario is validated. Named by the scenario's top-level ``imports: [module, ...]`` key or the CLI's
``--import MODULE`` (repeatable); both are recorded in the resolved ``scenario.yaml``, so ``resume`` and
``evaluate`` import them again. Modules are found like ``python -m`` finds them: from the current folder,
then ``PYTHONPATH`` and the installed packages. Importing a module twice runs it once (``sys.modules``).
"""
from __future__ import annotations

import importlib
import os
import re
import sys
from typing import Any

from .errors import ScenarioError, one_line, short

MODULE_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")


def check_names(value: Any, key: str) -> list[str]:
    """``imports`` as a list of dotted module names (ScenarioError at ``key`` otherwise)."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise ScenarioError(f"expected a list of module names, got {short(value)}", key)
    for i, name in enumerate(value):
        if not isinstance(name, str) or not MODULE_RE.fullmatch(name):
            raise ScenarioError(f"expected a module name such as my_plugins or pkg.models, got {short(name)}",
                                f"{key}.{i}")
    return list(value)


def import_all(names: list[str], key: str = "imports", flag: bool = False) -> None:
    """Import each module (registering its kinds); a failure is one line naming the module and the key
    (``imports.N``) or ``--import`` flag."""
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.insert(0, cwd)  # as `python -m` does, so the console script finds a local plugin too
    for i, name in enumerate(names):
        try:
            importlib.import_module(name)
        except Exception as e:  # noqa: BLE001  (anything the user's module raises: one line, not a traceback)
            where = f"--import {name}" if flag else f"{key}.{i}"
            raise ScenarioError(f"cannot import plugin module '{name}' ({type(e).__name__}: {one_line(str(e), 160)}): "
                                "check its name and that it is importable from the current folder or "
                                "PYTHONPATH", where) from None
