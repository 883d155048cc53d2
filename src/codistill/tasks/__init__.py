"""Tasks: how a problem becomes a prompt, and how a completion is checked.

``dataset.task`` names a task: the ``name`` of a :class:`Task` subclass in one of this
package's modules (``gsm``, ``humaneval``, ``mbpp``, ...), found by looking, not listed; or,
for a task outside the package, its class as a dotted name (``my_pkg.tasks.MyTask``).
"""

from __future__ import annotations

import functools
import importlib
import pkgutil

from codistill.tasks.base import Problem, Prompt, Task, cut_at_stops


@functools.cache
def builtin_tasks() -> dict[str, type[Task]]:
    """name -> class of every concrete Task in codistill.tasks' modules (light modules: imported
    to look)."""
    for m in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{m.name}")
    found, todo = {}, list(Task.__subclasses__())
    while todo:
        cls = todo.pop()
        todo.extend(cls.__subclasses__())
        if cls.__module__.startswith(f"{__name__}.") and not getattr(cls, "__abstractmethods__", None):
            found[cls.name] = cls
    return found


def task_class(name: str, key: str = "dataset.task") -> type[Task]:
    """The Task class ``name`` stands for; a :class:`codistill.config.ConfigError` naming ``key``
    when there is none."""
    from codistill.plugins import ConfigError, check, locate

    if "." in name:
        cls = locate(name, key)
        check(isinstance(cls, type) and issubclass(cls, Task), key, f"{name} is not a codistill.tasks.Task")
        return cls
    if name not in builtin_tasks():
        raise ConfigError(f"{key}: no task named {name!r} (known: {', '.join(sorted(builtin_tasks()))}, "
                          f"or a Task class as package.module.Class)")
    return builtin_tasks()[name]


def build_task(task_name: str, task_cfg) -> Task:
    """The task object for ``dataset.task`` with the options of ``task:``."""
    return task_class(task_name).from_config(task_cfg)


__all__ = ["Problem", "Prompt", "Task", "build_task", "cut_at_stops", "task_class"]
