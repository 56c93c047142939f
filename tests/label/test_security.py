"""Who may change what: Host and Origin checks, the CSRF secret, per-user tokens with names taken
from the token, security headers on every response, the CLI's user options."""

from __future__ import annotations

import numpy as np
import pytest
from fastapi.testclient import TestClient

from drivelab.data import open_dataset
from drivelab.errors import DrivelabError
from drivelab.label.app import create_app
from drivelab.label.security import load_users, parse_user_options
from tests.label.conftest import BASE, client

TEAM = {"ann": "ann-secret-token-1", "bob": "bob-secret-token-2"}


def _state(root):
    """What a cross-site write could change: mask bytes, store rows, history files."""
    masks = sorted((p.name, p.read_bytes()) for p in (root / "masks").iterdir())
    store = root / ".drivelab" / "review.sqlite"
    import sqlite3

    rows = []
    if store.exists():
        db = sqlite3.connect(store)
        rows = [db.execute(f"SELECT * FROM {t} ORDER BY 1").fetchall()
                for t in ("review", "comments", "events")]
        db.close()
    folder = root / ".drivelab"
    history = sorted(str(p) for p in folder.rglob("v*")) if folder.exists() else []
    return masks, rows, history


def test_host_header_must_name_this_server(comma_set):
    app = create_app(comma_set, allow_hosts=["labbox.lan"])
    c = TestClient(app, base_url=BASE)
    for host in ("attacker.example:8765", "attacker.example", "127.0.0.1.nip.io:8765", "localhost.evil:8765"):
        for path in ("/api/info", "/", "/static/js/main.js", "/api/session"):
            r = c.get(path, headers={"Host": host})
            assert r.status_code == 403 and "DNS rebinding" in r.json()["detail"], (host, path)
    # What it is served under: loopback names, IP literals, and names it was told about.
    for host in ("127.0.0.1:8765", "localhost:8765", "[::1]:8765", "192.168.1.20:8765", "labbox.lan:8765"):
        assert c.get("/api/info", headers={"Host": host}).status_code == 200, host


def test_security_headers_on_every_response(comma_set):
    c = client(comma_set)
    for r in (c.get("/"), c.get("/static/js/main.js"), c.get("/static/style.css"), c.get("/api/info"),
              c.get("/api/image", params={"name": "nope.png"}),
              c.get("/api/info", headers={"Host": "evil.example"}),
              c.post("/api/review", json={}, headers={"X-Drivelab-CSRF": "wrong"})):
        csp = r.headers["content-security-policy"]
        script = next(d for d in csp.split(";") if d.strip().startswith("script-src"))
        assert "'self'" in script and "unsafe-inline" not in script and "unsafe-eval" not in script
        assert "frame-ancestors 'none'" in csp
        assert r.headers["x-frame-options"] == "DENY"
        assert r.headers["x-content-type-options"] == "nosniff"
        assert r.headers["referrer-policy"] == "no-referrer"
        assert r.headers["cross-origin-resource-policy"] == "same-origin"
    js = c.get("/static/js/main.js")
    assert js.headers["content-type"].startswith("text/javascript")  # ES modules load under nosniff
    html = c.get("/").text
    assert "<script>" not in html and "onclick" not in html and "style=" not in html  # no inline code


def test_cross_site_writes_are_refused_and_change_nothing(comma_set):
    reader = open_dataset(comma_set)
    name = reader.items[0].name
    page = client(comma_set)
    csrf = page.headers["X-Drivelab-CSRF"]
    bare = TestClient(page.app, base_url=BASE)  # what another origin's page can send: no secret
    mask = np.zeros((48, 64), np.uint8).tobytes()
    before = _state(comma_set)
    simple = {"Content-Type": "text/plain", "Origin": "http://127.0.0.1:9999"}
    attempts = [
        ("/api/mask", {"name": name, "version": 0}, mask, simple),
        ("/api/mask", {"name": name, "version": 0}, mask, {"Content-Type": "text/plain"}),
        ("/api/review", {}, b'{"name": "%s", "status": "done"}' % name.encode(), simple),
        ("/api/restore", {"name": name, "version": 0, "base": 0}, b"", simple),
        ("/api/commit", {}, b'{"branch": "x"}', simple),
        # the right secret from the wrong origin, or from another port's page (same-site)
        ("/api/mask", {"name": name, "version": 0}, mask, {"X-Drivelab-CSRF": csrf, "Origin": "http://evil.example"}),
        ("/api/mask", {"name": name, "version": 0}, mask,
         {"X-Drivelab-CSRF": csrf, "Sec-Fetch-Site": "same-site"}),
        ("/api/mask", {"name": name, "version": 0}, mask,
         {"X-Drivelab-CSRF": csrf, "Sec-Fetch-Site": "cross-site"}),
        ("/api/review", {}, b"{}", {"X-Drivelab-CSRF": "guess", "Content-Type": "application/json"}),
    ]
    for path, params, body, headers in attempts:
        r = bare.post(path, params=params, content=body, headers=headers)
        assert r.status_code == 403, (path, headers, r.status_code, r.text)
    # Reads from another site are refused as well (a page cannot even time or embed them).
    assert bare.get("/api/images", headers={"Sec-Fetch-Site": "cross-site"}).status_code == 403
    assert _state(comma_set) == before
    # The app's own page (same origin, its secret) can write.
    r = page.post("/api/review", json={"name": name, "status": "done"},
                  headers={"Origin": BASE, "Sec-Fetch-Site": "same-origin"})
    assert r.status_code == 200


def test_users_each_have_a_token_and_names_come_from_it(comma_set, tmp_path):
    users = tmp_path / "users.yaml"
    users.write_text("users:\n" + "".join(f"  {n}: {t}\n" for n, t in TEAM.items()))
    assert load_users(users) == TEAM
    app = create_app(comma_set, users=load_users(users))
    anon = TestClient(app, base_url=BASE)
    assert anon.get("/api/info").status_code == 401
    assert anon.get("/api/info", headers={"Authorization": "Bearer " + TEAM["ann"][:-1]}).status_code == 401
    ann = TestClient(app, base_url=BASE, headers={"Authorization": f"Bearer {TEAM['ann']}"})
    bob = TestClient(app, base_url=BASE, headers={"Authorization": f"Bearer {TEAM['bob']}"})
    assert ann.get("/api/session").json()["user"] == "ann"
    name = open_dataset(comma_set).items[0].name
    mask = np.frombuffer(ann.get("/api/mask", params={"name": name}).content, np.uint8).copy()
    mask[:5] = 2
    # A client-supplied name (header or body) never counts.
    r = ann.post("/api/mask", params={"name": name, "version": 0}, content=mask.tobytes(),
                 headers={"X-User": "mallory"})
    assert r.status_code == 200
    r = bob.post("/api/review", json={"name": name, "status": "needs_fix", "comment": "curb",
                                      "user": "mallory"})
    assert r.status_code == 200
    rec = bob.get("/api/review", params={"name": name}).json()
    assert rec["holder"] == "bob" and rec["comments"][0]["user"] == "bob"
    hist = ann.get("/api/history", params={"name": name}).json()["versions"]
    assert hist[0]["user"] == "ann"
    # A bearer token is a credential a cross-origin page cannot send: no CSRF header needed, but
    # the Origin is still checked.
    assert bob.post("/api/review", json={"name": name, "comment": "x"},
                    headers={"Origin": "http://127.0.0.1:1"}).status_code == 403


@pytest.mark.parametrize("text, problem", [
    ("ann: short\n", "at least 12"),
    ("ann: same-token-000\nbob: same-token-000\n", "same token"),
    ("- name: ann\n", "name and a token"),
    ("[1, 2\n", "unreadable users file"),
    ("42\n", "mapping of user names"),
    ('"a\\u0007b": some-long-token-1\n', "control characters"),
])
def test_bad_users_files_are_one_line_errors(tmp_path, text, problem):
    path = tmp_path / "users.yaml"
    path.write_text(text)
    with pytest.raises(DrivelabError, match=problem) as e:
        if "same token" in problem:
            from drivelab.label.security import Access

            Access(local_user="x", tokens=load_users(path))
        else:
            load_users(path)
    assert "\n" not in str(e.value)


def test_user_options():
    assert parse_user_options(["ann"]) == ("ann", {})
    assert parse_user_options(["ann:" + TEAM["ann"], "bob:" + TEAM["bob"]]) == (None, TEAM)
    for bad in (["ann", "bob"], ["ann", "bob:" + TEAM["bob"]], ["ann:x"], [":" + TEAM["ann"]],
                ["ann:" + TEAM["ann"], "ann:" + TEAM["bob"]]):
        with pytest.raises(DrivelabError):
            parse_user_options(bad)


def test_cli_options_and_fixed_port(comma_set, tmp_path):
    import socket

    import typer
    from typer.testing import CliRunner

    from drivelab.label.cli import bind, register

    app = typer.Typer()
    register(app)
    app.command("noop")(lambda: None)
    users = tmp_path / "users.yaml"
    users.write_text("ann: " + TEAM["ann"] + "\n")
    cases = [
        (["--host", "0.0.0.0"], "--token or --users"),
        (["--users", str(users), "--token", "shared-token-123"], "not both"),
        (["--token", "short"], "at least 12"),
        (["--user", "ann", "--user", "bob:" + TEAM["bob"]], "either --user NAME"),
    ]
    for args, problem in cases:
        result = CliRunner().invoke(app, ["label", str(comma_set), *args])
        assert isinstance(result.exception, DrivelabError), (args, result)
        assert problem in str(result.exception), (args, result.exception)
    # A fixed port that is taken is an error, never a silent move to another port.
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        with pytest.raises(DrivelabError, match=f"port {port} is in use"):
            bind("127.0.0.1", port)
        result = CliRunner().invoke(app, ["label", str(comma_set), "--port", str(port)])
        assert isinstance(result.exception, DrivelabError) and "in use" in str(result.exception)
