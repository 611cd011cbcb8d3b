"""Environments as tasks: ``gymnasium`` (any registered Gymnasium env, vectorised, A2C) and ``pettingzoo``
(any PettingZoo ParallelEnv, one port pair per env agent). Importing :mod:`corporation.tasks` registers
both kinds; see docs/rl.md."""
