"""The predict pipeline's plumbing, shared by semantic and instance prediction: decode,
inference and encode run in three threads joined by bounded queues, so reading and writing files
(PNG/JPEG/H.264 codecs release the GIL) overlaps with the model; and the summary every predict
returns."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class PredictSummary:
    out: Path
    frames: int = 0  # images + video frames that went through the model
    images: int = 0
    videos: int = 0
    seconds: float = 0.0
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (input, reason)
    stopped: list[str] = field(default_factory=list)  # videos that ended early, and where
    outputs: dict[str, list[Path]] = field(default_factory=dict)  # kind -> files written

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0

    def add(self, kind: str, path: Path) -> None:
        self.outputs.setdefault(kind, []).append(path)

    def line(self) -> str:
        parts = [f"{self.frames} frames ({self.images} images, {self.videos} videos) in "
                 f"{self.seconds:.1f} s, mean {self.fps:.1f} frames/s"]
        if self.skipped:
            parts.append(f"{len(self.skipped)} unreadable skipped")
        if self.stopped:
            parts.append(f"{len(self.stopped)} videos ended early")
        return "; ".join(parts) + f"; outputs in {self.out}"



_DONE = object()  # end-of-stream marker on a queue


def background(produce: Callable[[], Iterator[Any]], maxsize: int) -> Iterator[Any]:
    """Run a generator in a thread and yield its items here; its exception re-raises here."""
    q: queue.Queue = queue.Queue(maxsize=maxsize)
    stop = threading.Event()
    error: list[BaseException] = []

    def run() -> None:
        try:
            for item in produce():
                while not stop.is_set():
                    try:
                        q.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
        except BaseException as e:  # handed to the consumer
            error.append(e)
        finally:
            q.put(_DONE)

    t = threading.Thread(target=run, daemon=True, name="drivelab-decode")
    t.start()
    try:
        while (item := q.get()) is not _DONE:
            yield item
        if error:
            raise error[0]
    finally:
        stop.set()
        while t.is_alive():  # unblock a producer waiting on a full queue
            try:
                q.get_nowait()
            except queue.Empty:
                t.join(0.05)


class OrderedWriter:
    """One background thread that applies ``fn`` to items in order (encoders are stateful)."""

    def __init__(self, fn: Callable[[Any], None], maxsize: int) -> None:
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="drivelab-encode")
        self._fn = fn
        self._pending: queue.Queue[Future] = queue.Queue()
        self._slots = threading.BoundedSemaphore(maxsize)

    def put(self, item: Any) -> None:
        self._slots.acquire()  # backpressure: never more than maxsize frames in flight
        fut = self._pool.submit(self._fn, item)
        fut.add_done_callback(lambda _: self._slots.release())
        self._pending.put(fut)
        self._raise_finished()

    def _raise_finished(self) -> None:
        while not self._pending.empty() and self._pending.queue[0].done():
            self._pending.get().result()

    def close(self) -> None:
        try:
            while not self._pending.empty():
                self._pending.get().result()
        finally:
            self._pool.shutdown(wait=True, cancel_futures=True)


def batches(items: Iterable[Any], n: int) -> Iterator[list[Any]]:
    batch: list[Any] = []
    for item in items:
        batch.append(item)
        if len(batch) == n:
            yield batch
            batch = []
    if batch:
        yield batch
