"""Tasks: the world agents learn in. Importing this package registers the built-in task kinds."""
from ..envs import gym_task, pz_task  # noqa: F401  (registers 'gymnasium', 'pettingzoo')
from . import (
    char_lm,  # noqa: F401  (registers 'char_lm')
    classification,  # noqa: F401  (registers 'classification')
    copy,  # noqa: F401  (registers 'copy' and 'repeat_copy')
    digit_counting,  # noqa: F401  (registers 'digit_counting')
)
from .base import Emission, Port, System, Task

__all__ = ["Emission", "Port", "System", "Task"]
