"""A tiny synthetic comma10k set for the label app (native layout: RGB palette masks in masks/,
val = names ending 9), and a test client that talks to the app the way its page does."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from drivelab.data.synth import synth_dataset

H, W = 48, 64
BASE = "http://127.0.0.1:8765"  # the Host the app serves under in API tests


def make_comma10k(root: Path, n: int = 4) -> Path:
    return synth_dataset("comma10k", root, n=n, size=(H, W), seed=0)


def client(root_or_app, token: str | None = None, **kw) -> TestClient:
    """A TestClient with the page's credentials: the CSRF header from /api/session (local mode)
    or the bearer token."""
    from drivelab.label.app import create_app

    app = root_or_app if hasattr(root_or_app, "state") else create_app(root_or_app, token=token, **kw)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    c = TestClient(app, base_url=BASE, headers=headers)
    session = c.get("/api/session")
    if session.status_code == 200:
        c.headers["X-Drivelab-CSRF"] = session.json()["csrf"]
    return c


@pytest.fixture
def comma_set(tmp_path) -> Path:
    """comma10k layout with ``n`` images; the last image's mask is removed (an unlabelled image)."""
    root = make_comma10k(tmp_path / "comma", n=4)
    from drivelab.data import open_dataset

    reader = open_dataset(root)
    assert reader.format == "comma10k" and len(reader) == 4
    reader.items[-1].label_path.unlink()
    return root


@pytest.fixture(scope="session")
def chromium():
    """One headless Chromium for every browser test of the session."""
    from tests.label.browser import CHROMIUM, CHROMIUM_ARGS

    if CHROMIUM is None:
        pytest.skip("chromium not installed (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(chromium):
    """A fresh browser context and page; page errors and CSP violations fail the test."""
    # A device scale factor that is not 1 checks that painting does not depend on it.
    ctx = chromium.new_context(viewport={"width": 1100, "height": 700}, device_scale_factor=1.5)
    pg = ctx.new_page()
    errors = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    pg.on("console", lambda m: errors.append(m.text) if "Content Security Policy" in m.text else None)
    pg.errors = errors
    yield pg
    ctx.close()
    assert not errors, errors
