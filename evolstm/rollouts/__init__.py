"""Rollouts: building the task's envs, evaluating populations (in-process or on Ray actors),
collecting policy-gradient trajectories, task-defined success tests and video."""
