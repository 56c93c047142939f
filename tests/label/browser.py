"""Helpers for the label app's browser tests: Debian's Chromium driven by Playwright, the app served
by uvicorn in a thread, and polling that works under the app's CSP (no string eval in the page)."""

from __future__ import annotations

import contextlib
import shutil
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
needs_chromium = [
    pytest.mark.browser,
    pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (apt-get install chromium)"),
]


@contextlib.contextmanager
def serve(app: Any, host: str = "127.0.0.1") -> Iterator[str]:
    """Run an ASGI app on a free port of ``host``; yields its base URL."""
    import uvicorn

    from drivelab.label.cli import bind

    sock = bind(host, 0)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.time() + 20
    while not server.started and time.time() < deadline:
        time.sleep(0.02)
    try:
        yield f"http://{host}:{sock.getsockname()[1]}/"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


def wait_until(page: Any, expression: str, timeout: float = 15.0) -> Any:
    """Poll a JS expression with page.evaluate until it is truthy (wait_for_function would need
    'unsafe-eval', which the app's CSP rightly refuses)."""
    deadline = time.time() + timeout
    while True:
        value = page.evaluate(expression)
        if value:
            return value
        if time.time() > deadline:
            raise TimeoutError(f"timed out waiting for {expression}")
        time.sleep(0.05)
