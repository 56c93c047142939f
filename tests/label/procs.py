"""Label app servers in child processes (for tests that SIGKILL them or measure their memory).

Children come from a multiprocessing forkserver that has imported the app once, so a restart
takes a fraction of a second instead of a fresh interpreter's import time.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import uvicorn  # noqa: F401  (preloaded into the forkserver)

import drivelab.label.app  # noqa: F401
from drivelab.data import open_dataset
from drivelab.label.masks import MaskIO
from drivelab.label.store import ReviewStore

_CTX = None


def context() -> multiprocessing.context.BaseContext:
    global _CTX
    if _CTX is None:
        _CTX = multiprocessing.get_context("forkserver")
        _CTX.set_forkserver_preload(["tests.label.procs"])
    return _CTX


def _serve(root: str, port: int, kwargs: dict) -> None:

    from drivelab.label.app import create_app
    from drivelab.label.cli import bind

    sock = bind("127.0.0.1", port)
    app = create_app(root, **kwargs)
    uvicorn.Server(uvicorn.Config(app, log_level="error")).run(sockets=[sock])


def start_server(root: Path, port: int, timeout: float = 30.0, **kwargs) -> multiprocessing.Process:
    """Start the app on 127.0.0.1:port in a child process and wait until it answers."""
    proc = context().Process(target=_serve, args=(str(root), port, kwargs), daemon=True)
    proc.start()
    deadline = time.time() + timeout
    while time.time() < deadline:
        if not proc.is_alive():
            raise RuntimeError(f"label server exited with {proc.exitcode}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/api/session", timeout=1).status_code in (200, 401):
                return proc
        except httpx.HTTPError:
            time.sleep(0.02)
    proc.kill()
    raise TimeoutError("label server did not start")


@contextlib.contextmanager
def session(port: int, token: str | None = None) -> Iterator[httpx.Client]:
    """An HTTP client with the page's credentials (CSRF secret or bearer token)."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers=headers, timeout=30) as c:
        c.headers["X-Drivelab-CSRF"] = c.get("/api/session").json()["csrf"]
        yield c


def peak_rss_kib(pid: int) -> int:
    """Peak resident memory of a process so far (VmHWM, Linux)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise RuntimeError("no VmHWM")


def _die_at(kill_at: int) -> list[int]:
    """Count every durable step from now on (os.replace, os.fsync, os.unlink, each side of an SQLite
    COMMIT) and SIGKILL this process just before step ``kill_at``; returns the step counter."""
    import types

    from drivelab.label import store as store_mod

    steps = [0]

    def tick() -> None:
        steps[0] += 1
        if steps[0] == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)

    def counted(fn):
        def wrapper(*a, **k):
            tick()
            return fn(*a, **k)
        return wrapper

    real = store_mod.sqlite3

    class Conn:
        def __init__(self, c):
            object.__setattr__(self, "_c", c)

        def __getattr__(self, k):
            return getattr(self._c, k)

        def __setattr__(self, k, v):
            setattr(self._c, k, v)

        def execute(self, sql, *a):
            if sql == "COMMIT":
                tick()
            out = self._c.execute(sql, *a)
            if sql == "COMMIT":
                tick()
            return out

    store_mod.sqlite3 = types.SimpleNamespace(
        connect=lambda *a, **k: Conn(real.connect(*a, **k)), Row=real.Row, Error=real.Error,
        OperationalError=real.OperationalError, Connection=real.Connection)
    os.replace, os.fsync, os.unlink = counted(os.replace), counted(os.fsync), counted(os.unlink)
    return steps


def save_and_maybe_die(root: str, name: str, expected: int, mask: bytes, shape: tuple, kill_at: int,
                        conn) -> None:
    """In a child: save, killing this process just before its ``kill_at``-th durable step."""
    reader = open_dataset(root)
    store = ReviewStore(root)
    masks = MaskIO(reader, store)
    item = next(it for it in reader.items if it.name == name)
    steps = _die_at(kill_at)
    result = masks.save(item, np.frombuffer(mask, np.uint8).reshape(shape), expected, user="tester")
    conn.send((result.version, steps[0]))


def save_objects_and_maybe_die(root: str, name: str, expected: int, objects: str, kill_at: int, conn) -> None:
    """In a child: save a COCO image's objects (JSON list), killed before its ``kill_at``-th durable step."""
    import json

    from drivelab.label.instances import InstanceIO

    reader = open_dataset(root)
    store = ReviewStore(root)
    io = InstanceIO(reader, store, MaskIO(reader, store).versions)
    item = next(it for it in reader.items if it.name == name)
    steps = _die_at(kill_at)
    result, _ = io.save(item, json.loads(objects), expected, user="tester")
    conn.send((result.version, steps[0]))
