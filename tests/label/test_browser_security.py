"""The label app attacked and used in headless Chromium: a page on another localhost port cannot save
or read anything; hostile strings in every user-supplied field and a hostile file name render as
text (no script runs); edits made while a save is in flight stay unsaved and are saved next; a
closed tab's unsaved edits come back from the local draft."""

from __future__ import annotations

import shutil
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np

from drivelab.data import open_dataset
from drivelab.io import read_rgb
from drivelab.label import raster
from drivelab.label.app import create_app
from drivelab.label.store import ReviewStore
from drivelab.schema import comma10k
from tests.label.browser import needs_chromium, serve, wait_until
from tests.label.conftest import client
from tests.label.test_security import _state

pytestmark = needs_chromium

ATTACK = """<!doctype html><html><body><h1>cute cats</h1>
<form id="f" method="POST" enctype="text/plain" target="sink"
      action="{app}api/review"><input name='{{"name": "{name}", "status": "done", "x": "'
      value='"}}'></form>
<iframe name="sink"></iframe><iframe id="framed" src="{app}"></iframe>
<script>
const app = "{app}", name = encodeURIComponent("{name}"), out = {{}};
const mask = new Uint8Array({n}).fill(2);
async function attempt(key, url, opts) {{
  try {{ const r = await fetch(url, opts); out[key] = r.type + ":" + r.status; }}
  catch (e) {{ out[key] = "error"; }}
}}
(async () => {{
  const simple = {{ method: "POST", mode: "no-cors", headers: {{ "Content-Type": "text/plain" }} }};
  await attempt("mask", app + "api/mask?name=" + name + "&version=0", {{ ...simple, body: mask }});
  const review = '{{"name": "{name}", "status": "done"}}';
  await attempt("review", app + "api/review", {{ ...simple, body: review }});
  await attempt("restore", app + "api/restore?name=" + name + "&version=0&base=0", simple);
  await attempt("commit", app + "api/commit", {{ ...simple, body: '{{"branch": "evil"}}' }});
  await attempt("preflighted", app + "api/mask?name=" + name + "&version=0",
                {{ method: "POST", headers: {{ "X-Drivelab-CSRF": "guess" }}, body: mask }});
  await attempt("read_session", app + "api/session", {{}});
  try {{ out.session_text = await (await fetch(app + "api/session")).text(); }}
  catch (e) {{ out.session_text = "blocked"; }}
  document.getElementById("f").submit();
  await new Promise((r) => setTimeout(r, 800));
  try {{ out.frame = document.getElementById("framed").contentDocument ? "readable" : "opaque"; }}
  catch (e) {{ out.frame = "blocked"; }}
  window.results = out;
  document.title = "done";
}})();
</script></body></html>"""


def _attacker(html: str):
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (http.server's naming)
            body = html.encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *a):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def test_a_page_on_another_port_cannot_save_or_read(comma_set, page):
    name = open_dataset(comma_set).items[0].name
    with serve(create_app(comma_set, user="victim")) as url:
        page.goto(url)  # the labeller has the app open in another tab of the same browser
        page.wait_for_selector(".card")
        before = _state(comma_set)
        attacker = _attacker(ATTACK.format(app=url, name=name, n=48 * 64))
        try:
            evil = page.context.new_page()
            evil.goto(f"http://127.0.0.1:{attacker.server_address[1]}/")
            wait_until(evil, "document.title === 'done'", timeout=30)
            results = evil.evaluate("window.results")
            framed = [f.url for f in evil.frames if f.url.startswith(url)]
            app_loaded = [f for f in evil.frames if f.url.startswith(url) and f.query_selector("#grid")]
            evil.close()
        finally:
            attacker.shutdown()
        assert _state(comma_set) == before, "a cross-origin page changed the dataset"
        assert results["read_session"] == "error" and results["session_text"] == "blocked", results
        assert results["preflighted"] == "error", results  # the custom header needs CORS, refused
        assert framed == [] or not app_loaded, "the app rendered inside another site's frame"
        page.reload()
        wait_until(page, "document.querySelectorAll('.card').length === 4")


HOSTILE = {
    "user": '<img src=x onerror="window.__xss=1">',
    "file": "0098_<img src=x onerror=window.__xss=2>.png",
    "comment": "</li><script>window.__xss=3</script><svg onload=window.__xss=3>",
    "holder": '"><img src=x onerror=window.__xss=4>',
    "note": "<iframe src=javascript:window.__xss=5>",
}


def test_hostile_strings_render_as_text(comma_set, page):
    (comma_set / "files_trainable").unlink()
    shutil.copy(sorted((comma_set / "imgs").iterdir())[0], comma_set / "imgs" / HOSTILE["file"])
    shutil.copy(sorted((comma_set / "masks").iterdir())[0], comma_set / "masks" / HOSTILE["file"])
    token = "hostile-user-token-1"
    users = {HOSTILE["user"]: token, "ann": "ann-user-token-01"}
    app = create_app(comma_set, users=users)
    # The hostile user saves a version and comments; the engine sets a hostile holder and note.
    c = client(app)
    c.headers["Authorization"] = f"Bearer {token}"
    mask = c.get("/api/mask", params={"name": HOSTILE["file"]}).content
    r = c.post("/api/mask", params={"name": HOSTILE["file"], "version": 0}, content=mask)
    assert r.status_code == 200
    r = c.post("/api/review", json={"name": HOSTILE["file"], "comment": HOSTILE["comment"]})
    assert r.status_code == 200
    ReviewStore(comma_set).set_status(HOSTILE["file"], "needs_fix", user=HOSTILE["holder"],
                                      region={"box": [1, 1, 20, 20], "note": HOSTILE["note"]})
    with serve(app) as url:
        page.goto(f"{url}#token={token}")
        page.wait_for_selector(".card")
        assert "token=" not in page.url  # dropped from the address bar (and history) at once
        card = page.locator(".card", has_text="0098_")
        card.wait_for()
        assert HOSTILE["file"] in card.inner_text()
        card.click()
        wait_until(page, "window.labelApp.E.mask !== null && document.querySelector('#comments li') !== null")
        wait_until(page, "document.querySelector('#history li') !== null")
        text = page.inner_text("body")
        page.click("nav button[data-view=queue]")
        page.wait_for_selector("#queue tbody tr")
        queue = page.inner_text("#queue")
        injected = page.evaluate("""document.querySelectorAll(
            'img[src="x"], svg, iframe, script:not([src]), [onerror], [onload]').length""")
        ran = page.evaluate("window.__xss")
        cookies = page.context.cookies()
    assert ran is None and injected == 0
    for key in ("user", "file", "comment", "note"):
        assert HOSTILE[key] in text, key  # shown literally, as text
    assert HOSTILE["holder"] in queue and HOSTILE["file"] in queue
    assert cookies == []  # the token lives in the page, never in a cookie


def _strokes(page, strokes):
    def at(x, y):
        p = page.evaluate(f"window.labelApp.imageToClient({x} + 0.5, {y} + 0.5)")
        return p["x"], p["y"]

    for (x0, y0), (x1, y1) in strokes:
        page.mouse.move(*at(x0, y0))
        page.mouse.down()
        page.mouse.move(*at(x1, y1), steps=6)
        page.mouse.up()


def _on_disk(item) -> np.ndarray:
    mask, bad = comma10k().encode_colors(read_rgb(item.label_path))
    assert not bad.any()
    return mask


def test_edits_during_a_save_stay_unsaved_and_drafts_survive_a_closed_tab(comma_set, page):
    reader = open_dataset(comma_set)
    item = reader.items[0]
    expect = reader.load_mask(item)
    held = []
    with serve(create_app(comma_set, user="tester")) as url:
        page.route("**/api/mask?*", lambda route: held.append(route) if route.request.method == "POST"
                   else route.continue_())
        page.goto(url)
        page.wait_for_selector(".card")
        page.click(".card >> nth=0")
        wait_until(page, "window.labelApp.E.mask !== null && window.labelApp.E.w > 0")
        page.keyboard.press("d")
        page.keyboard.press("2")  # class id 1
        page.evaluate("window.labelApp.setSize(3)")
        a, b = [((3, 5), (40, 5))], [((3, 20), (40, 20))]
        _strokes(page, a)
        page.keyboard.press("Control+s")
        for _ in range(100):
            if held:
                break
            page.wait_for_timeout(50)
        assert len(held) == 1
        _strokes(page, b)  # painted while the save is in flight
        page.keyboard.press("Control+s")  # a second save waits for the first: no self-conflict
        page.wait_for_timeout(300)
        assert len(held) == 1
        held[0].continue_()
        wait_until(page, "window.labelApp.E.version === 1")
        for (p0, p1) in a:
            raster.stroke(expect, [p0, p1], 3, 1)
        assert np.array_equal(_on_disk(item), expect)  # the first save holds stroke a only
        assert page.evaluate("window.labelApp.E.dirty") is True  # stroke b is still unsaved
        for _ in range(100):
            if len(held) == 2:
                break
            page.wait_for_timeout(50)
        assert len(held) == 2  # ... and the queued save sends it
        held[1].continue_()
        wait_until(page, "window.labelApp.E.version === 2 && !window.labelApp.E.dirty")
        for (p0, p1) in b:
            raster.stroke(expect, [p0, p1], 3, 1)
        assert np.array_equal(_on_disk(item), expect)
        assert page.is_hidden("#banner")  # no conflict was reported
        page.unroute("**/api/mask?*")

        # An unsaved stroke, then the tab is closed: the draft in IndexedDB brings it back.
        c = [((10, 32), (50, 32))]  # horizontal: the pointer's steps fall on the Bresenham line
        _strokes(page, c)
        page.wait_for_timeout(1200)  # drafts are written 0.7 s after the last edit
        ctx = page.context
        page.close()
        again = ctx.new_page()
        errors = []
        again.on("pageerror", lambda e: errors.append(str(e)))
        again.goto(url)
        again.wait_for_selector(".card")
        again.click(".card >> nth=0")
        again.wait_for_selector("#banner button:has-text('Restore draft')")
        again.click("#banner button:has-text('Restore draft')")
        wait_until(again, "window.labelApp.E.dirty === true")
        again.keyboard.press("Control+s")
        wait_until(again, "window.labelApp.E.version === 3 && !window.labelApp.E.dirty")
    for (p0, p1) in c:
        raster.stroke(expect, [p0, p1], 3, 1)
    assert np.array_equal(_on_disk(item), expect)
    assert not errors, errors
