"""Tasks: the world agents learn in. Importing this package registers the built-in task kinds."""
from . import classification  # noqa: F401  (registers 'classification')
from . import digit_counting  # noqa: F401  (registers 'digit_counting')
from . import copy  # noqa: F401  (registers 'copy' and 'repeat_copy')
from . import char_lm  # noqa: F401  (registers 'char_lm')
from ..envs import gym_task, pz_task  # noqa: F401,E402  (registers 'gymnasium', 'pettingzoo')
from .base import Emission, Port, System, Task

__all__ = ["Emission", "Port", "System", "Task"]
