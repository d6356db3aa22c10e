"""Tasks: reward, success and placement of task objects. One file per task."""

from __future__ import annotations

from sim2real.envs.tasks.base import Task
from sim2real.envs.tasks.push import PushTask
from sim2real.envs.tasks.reach import ReachTask
from sim2real.errors import ConfigError

TASKS: dict[str, type[Task]] = {"reach": ReachTask, "push": PushTask}


def make_task(name: str | Task) -> Task:
    """A task instance from its name (``reach``, ``push``) or an instance."""
    if isinstance(name, Task):
        return name
    if name not in TASKS:
        raise ConfigError(f"task {name!r} is unknown; expected one of {sorted(TASKS)}")
    return TASKS[name]()


__all__ = ["TASKS", "PushTask", "ReachTask", "Task", "make_task"]
