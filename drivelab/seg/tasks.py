"""The task map (ultralytics' ``Model.task_map`` idea): task name -> how to train, build,
predict with, evaluate and embed a model of that task. Nothing else branches on the task
string: a verb asks ``for_checkpoint(ckpt)`` (or ``get(name)``) and calls what it gets.

Entries name their implementations as ``module:attribute`` and import them on first use, so
``drivelab --help`` never imports torch and no module imports a verb it does not run.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from drivelab.errors import DrivelabError


def _resolve(ref: str) -> Any:
    module, _, attr = ref.partition(":")
    return getattr(importlib.import_module(module), attr)


@dataclass(frozen=True)
class TaskEntry:
    """What one task plugs in. Each field is a ``module:attribute`` reference."""

    name: str
    trainer: str  # a class implementing drivelab.seg.task.Task
    model: str  # build a model from a checkpoint's model_spec
    predict: str  # (checkpoint, inputs, out, **options) -> PredictSummary
    evaluate: str  # (checkpoint, dataset, out_dir, **options) -> metrics dict
    embedder: str | None  # engine: a class (model, schema, device) with load(reader, item, size)
    # and __call__(inputs, labels) -> features, per-image rows, predicted masks

    def train_task(self) -> Any:
        return _resolve(self.trainer)()

    def build_model(self, spec: dict) -> Any:
        return _resolve(self.model)(**spec)

    def run_predict(self, checkpoint: Any, inputs: Any, out: Any, **options: Any) -> Any:
        return _call(_resolve(self.predict), self.name, "predict", checkpoint, inputs, out, **options)

    def run_evaluate(self, checkpoint: Any, dataset: Any, out_dir: Any, **options: Any) -> dict:
        return _call(_resolve(self.evaluate), self.name, "evaluate", checkpoint, dataset, out_dir, **options)

    def embedder_class(self) -> Callable:
        if self.embedder is None:
            raise DrivelabError(f"embedding is not available for {self.name} checkpoints")
        return _resolve(self.embedder)


def _call(fn: Callable, task: str, verb: str, *args: Any, **options: Any) -> Any:
    """Call ``fn`` with the options it accepts. An option it does not take is an error when the
    user set it (not None / False): silently ignoring ``--tta`` on an instance model would lie."""
    params = inspect.signature(fn).parameters
    takes_all = any(p.kind is p.VAR_KEYWORD for p in params.values())
    accepted, refused = {}, []
    for key, value in options.items():
        if key in params or takes_all:
            accepted[key] = value
        elif value not in (None, False):
            refused.append(key)
    if refused:
        raise DrivelabError(f"{verb} of a {task} checkpoint does not take "
                            + ", ".join(k.replace("_", "-") for k in refused))
    return fn(*args, **accepted)


TASK_MAP: dict[str, TaskEntry] = {
    "semantic": TaskEntry(
        name="semantic",
        trainer="drivelab.seg.semantic:SemanticTask",
        model="drivelab.seg.models:build_model",
        predict="drivelab.seg.predict:predict_semantic",
        evaluate="drivelab.seg.evaluate:evaluate_checkpoint",
        embedder="drivelab.engine.embed:SemanticEmbedder",
    ),
    "instance": TaskEntry(
        name="instance",
        trainer="drivelab.seg.instance.task:InstanceTask",
        model="drivelab.seg.instance.model:build_instance_model",
        predict="drivelab.seg.instance.predict:predict_instances",
        evaluate="drivelab.seg.instance.evaluate:evaluate_instances",
        embedder="drivelab.engine.embed:InstanceEmbedder",
    ),
}
TASKS = tuple(TASK_MAP)
DEFAULT_TASK = "semantic"  # checkpoints written before tasks existed are semantic


def get(name: str) -> TaskEntry:
    try:
        return TASK_MAP[name]
    except KeyError:
        raise DrivelabError(f"unknown task {name!r}; choose one of {', '.join(TASKS)}") from None


def task_of(ckpt: dict) -> str:
    """The task a checkpoint belongs to: the only place the task string is read from one."""
    return str(ckpt.get("task") or DEFAULT_TASK)


def for_checkpoint(ckpt: dict) -> TaskEntry:
    """The task entry of a checkpoint dict (see ``drivelab.seg.checkpoint.read_checkpoint``)."""
    return get(task_of(ckpt))


def get_task(name: str) -> Any:
    """The trainer's Task object for a task name (``drivelab.seg.task.Task``)."""
    entry = get(name)
    try:
        return entry.train_task()
    except ImportError as e:
        raise DrivelabError(f"the {name} task is not available ({e})") from None
