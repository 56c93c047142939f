"""The label app's HTTP side: a FastAPI app over one dataset.

Masks travel as raw bytes (H*W uint8 train ids, 255 unlabelled; gzip on the wire) so what the
browser paints is what the server saves, with no image codec or colour management in between; COCO
objects travel as pycocotools run lengths, for the same reason.
``create_app`` assembles the pieces: the shared ``LabelState`` (``state.py``), one router per area
(``routes/``), the security middleware (``security.py``: host, token, CSRF and origin checks,
security headers) and the mapping of errors to HTTP answers. Every handler that touches disk or
SQLite runs in a worker thread, never on the event loop.
"""

from __future__ import annotations

import errno
import getpass
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.gzip import GZipMiddleware
from fastapi.responses import JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from PIL import Image

from drivelab.errors import DrivelabError
from drivelab.label.routes import ROUTERS
from drivelab.label.routes.pages import STATIC
from drivelab.label.security import Access, SecurityMiddleware, check_name, check_token
from drivelab.label.state import DEFAULT_MAX_UPLOAD, LabelState
from drivelab.label.store import BUSY_TIMEOUT, ReadOnlyStore, StoreBusy, VersionConflict
from drivelab.label.uploads import UploadRefused
from drivelab.label.versions import WriteFailed

__all__ = ["DEFAULT_MAX_UPLOAD", "LabelState", "create_app"]


def create_app(
    dataset_root: str | Path,
    model: Any = None,
    token: str | None = None,
    *,
    table: str | Path | None = None,
    user: str | None = None,
    users: dict[str, str] | None = None,
    allow_hosts: Iterable[str] = (),
    format: str | None = None,
    max_upload: int = DEFAULT_MAX_UPLOAD,
    reader_options: dict | None = None,
    device: str = "auto",
    store_timeout: float = BUSY_TIMEOUT,
    findings: Iterable[str | Path] = (),
    sam: str | Path | None = None,
    score: float = 0.5,
) -> FastAPI:
    """The label app for one dataset.

    ``model``: a checkpoint path / run folder (loaded lazily with ``drivelab.seg.inference.Predictor``
    on ``device``) or any object with ``predict(image) -> mask``. ``token``: one shared token (the
    user is ``user``, default your login); ``users``: {name: token}, one per labeller. With either,
    every API call needs ``Authorization: Bearer TOKEN`` and names come from the token. Without,
    one local user and state-changing calls need the page's CSRF header. ``allow_hosts``: extra
    names the server may be reached under (LAN names; IP literals and localhost always work).
    ``table``: a per-image table (Parquet/CSV with ``name, loss``) to sort by model loss.
    On a COCO dataset ``model`` is an instance checkpoint whose objects scoring ``score`` or more are
    offered as editable objects. ``findings``: overunder.json / per_image.parquet / audit tables (or
    folders holding them) whose regions are drawn on the images. ``sam``: a local Segment Anything
    checkpoint (needs the optional ``segment-anything`` package).
    """
    if token is not None and users:
        raise DrivelabError("give either one token or a users table, not both")
    local = check_name(user or _whoami(), "user")
    tokens = {local: check_token(token, repr(local))} if token is not None else dict(users or {})
    for name, tok in tokens.items():
        check_name(name, "users")
        check_token(tok, repr(name))
    access = Access(local_user=local, tokens=tokens, allow_hosts=set(allow_hosts))
    from drivelab.data import gc_paused

    with gc_paused():  # the image index: many small objects, no cycles (see gc_paused)
        state = LabelState(dataset_root, access=access, model=model, table=table, format=format,
                           reader_options=reader_options, max_upload=max_upload, device=device,
                           store_timeout=store_timeout, findings=list(findings), sam=sam, score=score)

    app = FastAPI(title="drivelab label", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.label = state
    # Bodies over 128 KiB (masks) are compressed in a worker thread by Starlette, never on the loop.
    app.add_middleware(GZipMiddleware, minimum_size=2048, compresslevel=6)
    app.add_middleware(SecurityMiddleware, access=access)  # outermost: runs before anything else
    for router in ROUTERS:
        app.include_router(router)
    app.mount("/static", _Static(directory=STATIC), name="static")
    _errors(app)
    return app


def _errors(app: FastAPI) -> None:
    """Every refusal is one JSON line ``{"detail": ...}`` with a status that says whose problem it is."""

    @app.exception_handler(VersionConflict)
    async def _conflict(request: Request, e: VersionConflict) -> JSONResponse:
        holder = e.last_user or e.holder
        return JSONResponse({"detail": str(e), "current_version": e.current, "holder": holder}, 409)

    @app.exception_handler(StoreBusy)
    async def _busy(request: Request, e: StoreBusy) -> JSONResponse:
        return JSONResponse({"detail": "store busy, retry"}, 503, headers={"Retry-After": "1"})

    @app.exception_handler(ReadOnlyStore)
    async def _read_only(request: Request, e: ReadOnlyStore) -> JSONResponse:
        return JSONResponse({"detail": str(e)}, 403)

    @app.exception_handler(WriteFailed)
    async def _write_failed(request: Request, e: WriteFailed) -> JSONResponse:
        status = {errno.ENOSPC: 507, errno.EDQUOT: 507}.get(e.errno, 403 if e.errno in (
            errno.EACCES, errno.EPERM, errno.EROFS) else 500)
        return JSONResponse({"detail": str(e)}, status)

    @app.exception_handler(UploadRefused)
    async def _refused(request: Request, e: UploadRefused) -> JSONResponse:
        return JSONResponse({"detail": str(e)}, e.status)

    @app.exception_handler(DrivelabError)
    async def _bad_input(request: Request, e: DrivelabError) -> JSONResponse:
        return JSONResponse({"detail": str(e)}, 422)

    @app.exception_handler(Image.DecompressionBombError)
    async def _bomb(request: Request, e: Exception) -> JSONResponse:
        return JSONResponse({"detail": f"image too large to decode safely ({e})"}, 422)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, e: RequestValidationError) -> JSONResponse:
        parts = []
        for err in e.errors()[:3]:
            if err.get("type") == "json_invalid":
                reason = err.get("ctx", {}).get("error", "syntax error")
                parts.append(f"the body is not valid JSON ({reason})")
                continue
            where = ".".join(str(x) for x in err.get("loc", ()) if x != "body") or "body"
            parts.append(f"{where}: {err.get('msg', 'invalid')}")
        return JSONResponse({"detail": "; ".join(parts) or "invalid request"}, 422)


class _Static(StaticFiles):
    """The page's modules, revalidated on every load (an upgraded app never runs stale modules)."""

    async def get_response(self, path: str, scope: dict) -> Response:
        response = await super().get_response(path, scope)
        response.headers["Cache-Control"] = "no-cache"
        return response


def _whoami() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "labeller"
