"""Task registry: ``get_task("semantic" | "instance")`` -> a Task (see drivelab.seg.task)."""

from __future__ import annotations

from drivelab.errors import DrivelabError
from drivelab.seg.task import Task

TASKS = ("semantic", "instance")


def get_task(name: str) -> Task:
    if name == "semantic":
        from drivelab.seg.semantic import SemanticTask

        return SemanticTask()
    if name == "instance":
        try:
            from drivelab.seg.instance.task import InstanceTask
        except ImportError as e:
            raise DrivelabError(f"the instance task is not available ({e})") from None
        return InstanceTask()
    raise DrivelabError(f"unknown task {name!r}; choose one of {', '.join(TASKS)}")
