"""The tasks bertops knows, found by name: `get_task(config.ingest.task)` is the one lookup the
generic stages make. Built-in tasks live in `bertops/tasks/<name>/` and expose `TASK`; a task
defined elsewhere (a plugin, a test) joins with `register_task`.
"""

from __future__ import annotations

import importlib

from bertops.errors import ConfigError
from bertops.tasks.base import Task

# name -> the package whose TASK implements it (imported on first use: a stage loads one task)
BUILTIN = {
    "classification": "bertops.tasks.classification",
    "ner": "bertops.tasks.ner",
    "qa": "bertops.tasks.qa",
    "embedding": "bertops.tasks.embedding",  # embedding-only versions (bertops package --embedding-only)
}
_registered: dict[str, Task] = {}


def register_task(task: Task) -> Task:
    """Make `task` available as `ingest.task: <task.name>` (replaces a task of the same name)."""
    if not task.name.isidentifier() or task.name != task.name.lower():
        raise ConfigError(f"task name {task.name!r} must be a lower-case identifier, e.g. 'sentiment_regression'")
    _registered[task.name] = task
    return task


def known_tasks() -> list[str]:
    return sorted(set(BUILTIN) | set(_registered))


def get_task(name: str) -> Task:
    """The task called `name`; an unknown name is a config error that lists the known ones."""
    if name in _registered:
        return _registered[name]
    if name not in BUILTIN:
        raise ConfigError(
            f"ingest.task={name!r} is not a known task; choose one of {', '.join(known_tasks())} "
            "(or register your own with bertops.tasks.register_task)"
        )
    task = importlib.import_module(BUILTIN[name]).TASK
    _registered[name] = task
    return task


__all__ = ["Task", "get_task", "known_tasks", "register_task"]
