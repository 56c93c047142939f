"""Who may talk to the label app, and what a browser may do with its pages.

Checked on every request, before any route runs (a plain ASGI middleware, so it costs microseconds
and never blocks the event loop):

- **Host**: the ``Host`` header must name this server: ``localhost``, an IP literal, the bound
  address or an ``--allow-host`` name. A DNS-rebinding page (``attacker.example`` resolving to
  127.0.0.1) is refused with 403, so it can never read a response.
- **Who**: with tokens (``--token``, ``--user NAME:TOKEN``, ``--users users.yaml``) every ``/api``
  call carries ``Authorization: Bearer TOKEN``; the name recorded as holder, author and committer
  is the token's, never a client-supplied one. The page keeps the token in memory (and the tab's
  sessionStorage, which is per origin, port included); no cookie carries it, since browsers send
  cookies to every port of a host. Without tokens there is one local user.
- **Cross-site writes**: a state-changing call needs a credential no other origin can send (the
  bearer header, or the per-process CSRF secret in ``X-Drivelab-CSRF`` that only a same-origin page
  can read from ``/api/session``); its ``Origin`` must be this server's and ``Sec-Fetch-Site`` must not
  say cross-site or same-site (another port of the same host). A cross-origin simple request gets
  403 and changes nothing.
- **Headers** on every response: a CSP without inline script, no framing, ``nosniff``, no referrer,
  and ``Cross-Origin-Resource-Policy: same-origin`` (other origins cannot even embed an image).
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import re
import secrets
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from drivelab.errors import DrivelabError

CSRF_HEADER = "x-drivelab-csrf"
MIN_TOKEN = 12
MAX_NAME = 64
SAFE_METHODS = {"GET", "HEAD"}
SECURITY_HEADERS = [
    (b"content-security-policy",
     b"default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; "
     b"connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"),
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"cross-origin-resource-policy", b"same-origin"),
    (b"permissions-policy", b"camera=(), microphone=(), geolocation=()"),
]
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def check_name(name: str, where: str) -> str:
    name = str(name).strip()
    if not name or len(name) > MAX_NAME or _CONTROL.search(name):
        raise DrivelabError(f"user name {name!r} must be 1-{MAX_NAME} characters without control characters",
                            where)
    return name


def check_token(token: str, who: str) -> str:
    token = str(token)
    if len(token) < MIN_TOKEN or _CONTROL.search(token) or " " in token:
        raise DrivelabError(
            f"the token of {who} must be at least {MIN_TOKEN} characters without spaces; make one with "
            "python -c 'import secrets; print(secrets.token_urlsafe(16))'")
    return token


def load_users(path: str | Path) -> dict[str, str]:
    """users.yaml -> {name: token}. Either a mapping ``name: token`` (optionally under ``users:``) or
    a list of ``{name: ..., token: ...}``."""
    import yaml

    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise DrivelabError("users file not found", path) from None
    except (OSError, yaml.YAMLError) as e:
        raise DrivelabError(f"unreadable users file ({str(e).splitlines()[0]})", path) from None
    if isinstance(data, dict) and set(data) == {"users"}:
        data = data["users"]
    if isinstance(data, list):
        try:
            pairs = [(d["name"], d["token"]) for d in data]
        except (TypeError, KeyError):
            raise DrivelabError("each user needs a name and a token", path) from None
    elif isinstance(data, dict):
        pairs = list(data.items())
    else:
        raise DrivelabError("expected a mapping of user names to tokens", path)
    users: dict[str, str] = {}
    for name, token in pairs:
        name = check_name(name, str(path))
        if name in users:
            raise DrivelabError(f"user {name!r} is listed twice", path)
        users[name] = check_token(token, repr(name))
    if not users:
        raise DrivelabError("no users in the file", path)
    return users


def parse_user_options(values: Iterable[str]) -> tuple[str | None, dict[str, str]]:
    """``--user`` values: ``NAME`` (the local user's name) or ``NAME:TOKEN`` (a labeller)."""
    local, users = None, {}
    for v in values:
        name, sep, token = v.partition(":")
        name = check_name(name, "--user")
        if sep:
            if name in users:
                raise DrivelabError(f"--user {name} is given twice")
            users[name] = check_token(token, repr(name))
        elif local is not None:
            raise DrivelabError("--user NAME (without a token) can be given once")
        else:
            local = name
    if local is not None and users:
        raise DrivelabError("give either --user NAME (one local user) or --user NAME:TOKEN for each labeller")
    return local, users


@dataclass
class Access:
    """The app's credentials: tokens per user (none: one local user) and the CSRF secret."""

    local_user: str
    tokens: dict[str, str] = field(default_factory=dict)  # name -> token
    allow_hosts: set[str] = field(default_factory=set)
    csrf: str = field(default_factory=lambda: secrets.token_urlsafe(24))

    def __post_init__(self) -> None:
        digests = [_digest(t) for t in self.tokens.values()]
        if len(set(digests)) != len(digests):
            raise DrivelabError("two users have the same token")
        self._by_digest = list(zip(digests, self.tokens, strict=True))
        self.allow_hosts = {h.lower().strip("[]") for h in self.allow_hosts} | {"localhost"}

    @property
    def tokens_required(self) -> bool:
        return bool(self.tokens)

    def user_for(self, authorization: str | None) -> str | None:
        """The user a request speaks for (None: not authenticated)."""
        if not self.tokens:
            return self.local_user
        if not authorization or not authorization[:7].lower() == "bearer ":
            return None
        given = _digest(authorization[7:].strip())
        found = None
        for digest, name in self._by_digest:  # compare with every token: no early exit to time
            if secrets.compare_digest(given, digest):
                found = name
        return found

    def host_allowed(self, host: str) -> bool:
        name = _hostname(host)
        if name in self.allow_hosts:
            return True
        try:
            ipaddress.ip_address(name)
        except ValueError:
            return False
        return True  # an IP literal cannot be a rebinding name


def _hostname(host: str) -> str:
    host = host.strip().lower()
    if host.startswith("["):
        return host[1:].split("]", 1)[0]
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


ASGIApp = Callable[[dict, Callable[[], Awaitable[dict]], Callable[[dict], Awaitable[None]]], Awaitable[None]]


class SecurityMiddleware:
    """Host, credential, CSRF and origin checks, and security headers (see the module doc)."""

    def __init__(self, app: ASGIApp, access: Access) -> None:
        self.app = app
        self.access = access

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}

        async def send_with_headers(message: dict) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", [])
                message["headers"] = list(message["headers"]) + SECURITY_HEADERS
            await send(message)

        refusal = self.check(scope, headers)
        if refusal is not None:
            status, detail = refusal
            await _json(send_with_headers, status, detail)
            return
        await self.app(scope, receive, send_with_headers)

    def check(self, scope: dict, headers: dict[str, str]) -> tuple[int, str] | None:
        host = headers.get("host", "")
        if not self.access.host_allowed(host):
            return 403, (f"host {host!r} is not this server's name (DNS rebinding guard); "
                         "start drivelab label with --allow-host NAME to serve it under that name")
        path, method = scope["path"], scope["method"]
        if not path.startswith("/api"):
            return None if method in SAFE_METHODS else (405, "method not allowed")
        site = headers.get("sec-fetch-site")
        if site in ("cross-site", "same-site"):
            return 403, f"{site} request refused: only this app's own pages may call its API"
        user = self.access.user_for(headers.get("authorization"))
        if user is None:
            return 401, "token required: open the URL `drivelab label` printed (it ends in #token=...)"
        if method not in SAFE_METHODS:
            origin = headers.get("origin")
            if origin is not None and origin.lower() not in (f"http://{host.lower()}", f"https://{host.lower()}"):
                return 403, f"cross-origin request from {origin} refused"
            if not self.access.tokens_required and not secrets.compare_digest(
                    headers.get(CSRF_HEADER, "").encode(), self.access.csrf.encode()):
                return 403, "CSRF check failed: this request must come from the app's page (reload it)"
        scope.setdefault("state", {})["user"] = user
        return None


async def _json(send: Any, status: int, detail: str) -> None:
    body = json.dumps({"detail": detail}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
               (b"cache-control", b"no-store")]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
