"""Ray as the executor for batch verbs (``pip install drivelab[cluster]``).

``--ray ADDRESS|local`` on predict, evaluate, embed, audit and the vq verbs runs the same
per-item code as the single-process verb on a Ray cluster:

- ``map_chunks``: Ray Data with an actor pool, one model per actor (``num_gpus`` per actor,
  ``concurrency`` actors), for images: the actor's constructor loads the model once, each call
  handles one chunk (a batch, formed as the single-process loop forms it);
- ``map_items``: Ray tasks, one per file, when the unit is a file (a video, a token segment).

Results come back to the driver tagged with their input index and are put back in input order,
so tables, reports and archives are byte-for-byte the single-process ones; files are written by
the workers to the same paths (a shared filesystem, as on any cluster with a shared dataset).
One progress bar on the driver counts finished items. ``--shard i/n`` stays for schedulers
without Ray (SLURM arrays): each array task takes items i, i+n, ...
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from drivelab.errors import DrivelabError

INDEX = "_index"  # the column that carries each row's input position through Ray


@dataclass(frozen=True)
class RayOptions:
    """How a verb runs on Ray: ``address`` "local" starts a local cluster; anything else is passed to
    ``ray.init`` (e.g. "auto" or "ray://head:10001"). ``concurrency``: actors/tasks at once (default:
    the cluster's CPUs, or GPUs when ``num_gpus`` > 0); ``num_gpus`` per actor; ``num_cpus`` per
    actor/task."""

    address: str
    concurrency: int | None = None
    num_gpus: float = 0.0
    num_cpus: float = 1.0


def parse_shard(shard: str | None) -> tuple[int, int]:
    """``"i/n"`` -> (i, n) with 0 <= i < n; None -> (0, 1)."""
    if not shard:
        return 0, 1
    try:
        i, n = (int(v) for v in shard.split("/"))
    except ValueError:
        raise DrivelabError(f"--shard must look like i/n (e.g. 0/4), got {shard!r}") from None
    if not 0 <= i < n:
        raise DrivelabError(f"--shard {shard}: need 0 <= i < n")
    return i, n


def take_shard(items: list, shard: str | None) -> list:
    """Items i, i+n, i+2n ... of ``items`` for ``--shard i/n``."""
    i, n = parse_shard(shard)
    return items[i::n]


def connect(opts: RayOptions) -> Any:
    """``ray.init`` once per process (a local cluster sized to this machine for "local")."""
    try:
        import ray
    except ImportError:
        raise DrivelabError("--ray needs Ray: pip install 'drivelab[cluster]'") from None
    if ray.is_initialized():
        return ray
    kwargs: dict[str, Any] = {"ignore_reinit_error": True, "log_to_driver": False, "include_dashboard": False,
                              "configure_logging": False}
    if opts.address == "local":
        kwargs["num_cpus"] = int(os.environ.get("DRIVELAB_RAY_CPUS", os.cpu_count() or 1))
    else:
        kwargs["address"] = opts.address
    # Workers import drivelab from where the driver does (a checkout, not only an install).
    import drivelab

    root = os.path.dirname(os.path.dirname(os.path.abspath(drivelab.__file__)))
    kwargs["runtime_env"] = {"env_vars": {"PYTHONPATH": os.pathsep.join(
        p for p in (root, os.environ.get("PYTHONPATH", "")) if p)}}
    try:
        ray.init(**kwargs)
    except Exception as e:  # ConnectionError, RuntimeError, ValueError from a bad address
        raise DrivelabError(f"cannot start or reach the Ray cluster {opts.address!r} ({e})") from None
    import ray.data

    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False  # drivelab's own bar on the driver counts finished items
    ctx.print_on_execution_start = False
    return ray


def _concurrency(ray: Any, opts: RayOptions) -> int:
    if opts.concurrency:
        return int(opts.concurrency)
    res = ray.cluster_resources()
    if opts.num_gpus:
        return max(1, int(res.get("GPU", 0) // opts.num_gpus))
    return max(1, int(res.get("CPU", 1) // max(opts.num_cpus, 1e-9)))


def shard_count(ray: Any, opts: RayOptions, items: int) -> int:
    """How many shards a file-level job splits into: one per task slot, at most one per item."""
    return max(1, min(items, _concurrency(ray, opts)))


def map_chunks(worker: type, chunks: list[Any], opts: RayOptions, *, ctor_args: tuple = (),
               progress: bool = True, desc: str = "ray", count: Callable[[Any], int] = len) -> list[Any]:
    """Ray Data with an actor pool: each actor builds ``worker(*ctor_args)`` once (a model per
    actor) and turns chunks into results, ``worker(chunk) -> result``. Chunks are formed by the
    verb exactly as its single-process loop forms its batches, so the model sees the same batches;
    results come back in chunk order. ``count(chunk)`` items advance the progress bar."""
    import pickle

    from tqdm import tqdm

    if not chunks:
        return []
    ray = connect(opts)  # imports ray.data too

    rows = [{INDEX: i, "chunk": pickle.dumps(c)} for i, c in enumerate(chunks)]
    ds = ray.data.from_items(rows, override_num_blocks=len(rows))
    out = ds.map_batches(_ChunkAdapter, fn_constructor_args=(worker, ctor_args), batch_size=1,
                         concurrency=_concurrency(ray, opts), num_gpus=opts.num_gpus, num_cpus=opts.num_cpus)
    results: list[Any] = [None] * len(chunks)
    try:
        with tqdm(total=sum(count(c) for c in chunks), desc=desc, disable=not progress, leave=False) as bar:
            for row in out.iter_rows():
                i = int(row[INDEX])
                results[i] = pickle.loads(row["result"])
                bar.update(count(chunks[i]))
    except Exception as e:
        _reraise(e)
    return results


class _ChunkAdapter:
    """Ray Data's callable class around a verb's worker (pickled chunks in, pickled results out)."""

    def __init__(self, worker: type, ctor_args: tuple) -> None:
        self.worker = worker(*ctor_args)

    def __call__(self, batch: dict) -> dict:
        import pickle

        import numpy as np

        results = [pickle.dumps(self.worker(pickle.loads(c))) for c in batch["chunk"]]
        return {INDEX: batch[INDEX], "result": np.array(results, dtype=object)}


def _reraise(e: BaseException) -> None:
    """A worker's DrivelabError reaches the user as itself (one line), not as Ray's traceback."""
    seen: BaseException | None = e
    while seen is not None:
        cause = getattr(seen, "cause", None) or seen.__cause__
        if isinstance(seen, DrivelabError):
            raise seen from None
        if isinstance(cause, DrivelabError):
            raise cause from None
        seen = cause if cause is not seen else None
    text = str(e)
    if "DrivelabError" in text:  # Ray Data wraps the worker's exception as text
        line = next((ln for ln in reversed(text.splitlines()) if "DrivelabError:" in ln), text)
        raise DrivelabError(line.split("DrivelabError:", 1)[-1].strip()) from None
    raise e


def map_items(fn: Callable[..., Any], items: Iterable[Any], opts: RayOptions, *, args: tuple = (),
              progress: bool = True, desc: str = "ray") -> list[Any]:
    """``fn(item, *args)`` for every item as Ray tasks (the unit is a file); results in input order."""
    from tqdm import tqdm

    items = list(items)
    if not items:
        return []
    ray = connect(opts)
    remote = ray.remote(num_cpus=opts.num_cpus, num_gpus=opts.num_gpus)(_call_owned)
    shared = [ray.put(a) for a in args]
    limit = _concurrency(ray, opts)
    refs: dict[Any, int] = {}
    results: list[Any] = [None] * len(items)
    pending = iter(enumerate(items))
    with tqdm(total=len(items), desc=desc, disable=not progress, leave=False) as bar:
        for i, item in _take(pending, limit):
            refs[remote.remote(fn, item, *shared)] = i
        while refs:
            done, _ = ray.wait(list(refs), num_returns=1)
            for ref in done:
                try:
                    results[refs.pop(ref)] = ray.get(ref)
                except Exception as e:
                    _reraise(e)
                bar.update(1)
            for i, item in _take(pending, 1):
                refs[remote.remote(fn, item, *shared)] = i
    return results


def _call_owned(fn: Callable[..., Any], item: Any, *args: Any) -> Any:
    """Run ``fn`` on private copies of its inputs: Ray hands numpy arrays out of its object store
    read-only, and the single-process code may write into what it is given."""
    import pickle

    return fn(*pickle.loads(pickle.dumps((item, *args))))


def _take(it: Iterator, n: int) -> list:
    out = []
    for _ in range(n):
        try:
            out.append(next(it))
        except StopIteration:
            break
    return out
