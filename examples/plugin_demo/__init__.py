"""A plugin package for corporation: importing it registers a model kind (``conv1d``) and a task kind
(``waves``), which scenarios then name like the built-in ones. Use it from the CLI with

    PYTHONPATH=examples python -m corporation run examples/plugin_demo/waves.yaml

(the scenario's ``imports: [plugin_demo]`` key imports it), or ``--import plugin_demo`` for a file without
that key. The resolved scenario.yaml keeps the import, so ``resume`` and ``evaluate`` import it again.
"""
from . import conv, waves  # noqa: F401  (register 'conv1d' and 'waves')
