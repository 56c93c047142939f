"""The label app's HTTP side: a FastAPI app over one dataset.

Masks travel as raw bytes (H*W uint8 train ids, 255 unlabelled; gzip on the wire) so what the
browser paints is what the server saves, with no image codec or colour management in between.
Every image name from the client is looked up in the dataset's index (never joined onto a path),
uploads are size-capped, and with a token every API call must carry it.
"""

from __future__ import annotations

import getpass
import io
import secrets
import threading
import time
import zlib
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import FastAPI, HTTPException, Request
from fastapi.middleware.gzip import GZipMiddleware
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, PlainTextResponse, Response
from fastapi.staticfiles import StaticFiles
from PIL import Image
from starlette.concurrency import run_in_threadpool

from drivelab.data import open_dataset
from drivelab.data.sample import Item
from drivelab.errors import DrivelabError
from drivelab.label.masks import IGNORE, MaskIO
from drivelab.label.store import STATUSES, ReviewStore, VersionConflict

STATIC = Path(__file__).parent / "static"
TOKEN_COOKIE = "drivelab_token"
DEFAULT_MAX_UPLOAD = 64 * 1024 * 1024
THUMB_WIDTH = 320


class _LRU(OrderedDict):
    def __init__(self, size: int) -> None:
        super().__init__()
        self.size = size

    def put(self, key: Any, value: Any) -> Any:
        self[key] = value
        self.move_to_end(key)
        while len(self) > self.size:
            self.popitem(last=False)
        return value


class LabelState:
    """Everything the routes share: the dataset index, review store, mask IO, model, loss table."""

    def __init__(self, dataset_root: str | Path, model: Any = None, table: str | Path | None = None,
                 user: str | None = None, format: str | None = None, reader_options: dict | None = None):
        self.root = Path(dataset_root)
        self.reader = open_dataset(self.root, format, **(reader_options or {}))
        # Never offer the app's own files (history, folder labels) as dataset images.
        self.reader.items = [it for it in self.reader.items if ".drivelab" not in Path(it.image_path).parts]
        self.items: dict[str, Item] = {it.name: it for it in self.reader.items}
        self.store = ReviewStore(self.root)
        self.masks = MaskIO(self.reader, self.store)
        self.schema = self.reader.schema
        self.user = user or _whoami()
        self.losses = _read_table(table) if table is not None else {}
        self.table = str(table) if table is not None else None
        self._model_spec = model
        self._predictor = model if (model is not None and hasattr(model, "predict")) else None
        self._model_lock = threading.Lock()
        self._preds = _LRU(16)
        self._thumbs = _LRU(512)
        self._classes: dict[str, tuple[tuple, list[int]]] = {}

    # -- lookups -----------------------------------------------------------------------------
    def item(self, name: str) -> Item:
        """The dataset item called ``name``; names not in the index are refused (no traversal)."""
        it = self.items.get(name)
        if it is None:
            raise HTTPException(404, f"{name!r} is not an image of this dataset")
        return it

    def has_mask(self, item: Item) -> bool:
        if self.masks.writable:
            return self.masks.mask_path(item).exists()
        return item.label_path is not None

    @staticmethod
    def status(record: dict | None, has_mask: bool) -> str:
        """Review status shown for an image: its record's; but a mask on disk is never "unlabelled"
        (a dataset's existing masks count as done until someone flags them)."""
        st = record["status"] if record is not None else "unlabelled"
        return "done" if st == "unlabelled" and has_mask else st

    @property
    def has_model(self) -> bool:
        return self._model_spec is not None

    def predictor(self) -> Any:
        if self._model_spec is None:
            raise HTTPException(404, "no model: start the app with --model CKPT")
        with self._model_lock:
            if self._predictor is None:
                from drivelab.seg.inference import Predictor  # torch is imported only when needed

                self._predictor = Predictor(self._model_spec, device="cpu")
        return self._predictor

    def prediction(self, item: Item) -> np.ndarray:
        key = item.name
        if key in self._preds:
            return self._preds[key]
        pred = self.predictor().predict(self.reader.load_image(item))
        pred = np.asarray(pred, dtype=np.uint8)
        pred = np.where(pred < self.schema.num_classes, pred, IGNORE).astype(np.uint8)
        return self._preds.put(key, pred)

    def classes_present(self, item: Item) -> list[int]:
        """Class ids in an item's mask, cached until the mask file changes."""
        path = self.masks.mask_path(item) if self.masks.writable else item.label_path
        if path is None or not Path(path).exists():
            return []
        st = Path(path).stat()
        key = (st.st_mtime_ns, st.st_size)
        hit = self._classes.get(item.name)
        if hit and hit[0] == key:
            return hit[1]
        ids = [int(v) for v in np.unique(self.masks.load(item).mask) if v != IGNORE]
        self._classes[item.name] = (key, ids)
        return ids


def create_app(
    dataset_root: str | Path,
    model: Any = None,
    token: str | None = None,
    *,
    table: str | Path | None = None,
    user: str | None = None,
    format: str | None = None,
    max_upload: int = DEFAULT_MAX_UPLOAD,
    reader_options: dict | None = None,
) -> FastAPI:
    """The label app for one dataset.

    ``model``: a checkpoint path / run folder (loaded lazily with ``drivelab.seg.inference.Predictor``)
    or any object with ``predict(image) -> mask``. ``token``: when set, every API call needs it
    (``Authorization: Bearer``, the ``drivelab_token`` cookie, or ``?token=``). ``table``: a
    per-image table (Parquet/CSV with ``name, loss``) to sort by model loss.
    """
    state = LabelState(dataset_root, model=model, table=table, user=user, format=format,
                       reader_options=reader_options)
    app = FastAPI(title="drivelab label", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.label = state
    app.add_middleware(GZipMiddleware, minimum_size=2048)

    def authorized(request: Request) -> bool:
        if token is None:
            return True
        given = request.headers.get("authorization", "")
        given = given[7:] if given.lower().startswith("bearer ") else None
        given = given or request.cookies.get(TOKEN_COOKIE) or request.query_params.get("token") or ""
        return secrets.compare_digest(given.encode(), token.encode())

    @app.middleware("http")
    async def check_token(request: Request, call_next):
        path = request.url.path
        if path.startswith("/api") and not authorized(request):
            return JSONResponse({"detail": "token required: open the URL `drivelab label` printed"}, 401)
        return await call_next(request)

    @app.exception_handler(VersionConflict)
    async def _conflict(request: Request, e: VersionConflict):
        return JSONResponse({"detail": str(e), "current_version": e.current, "holder": e.holder}, 409)

    @app.exception_handler(DrivelabError)
    async def _bad_input(request: Request, e: DrivelabError):
        return JSONResponse({"detail": str(e)}, 422)

    # -- page --------------------------------------------------------------------------------
    @app.get("/", response_class=HTMLResponse)
    def index(request: Request):
        if not authorized(request):
            return HTMLResponse("<h1>401: token required</h1><p>Open the URL that <code>drivelab label"
                                "</code> printed; it carries <code>?token=...</code>.</p>", 401)
        resp = FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})
        if token is not None:
            resp.set_cookie(TOKEN_COOKIE, token, httponly=True, samesite="strict")
        return resp

    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    # -- dataset -----------------------------------------------------------------------------
    @app.get("/api/info")
    def info():
        s = state.schema
        return {
            "dataset": state.root.name,
            "root": str(state.root),
            "format": state.reader.format,
            "n_images": len(state.items),
            "splits": state.reader.splits,
            "statuses": list(STATUSES),
            "schema": s.to_dict() | {"hex": s.hex_colors()},
            "ignore_index": IGNORE,
            "writable": state.masks.writable,
            "allows_unlabelled": state.masks.allows_unlabelled,
            "has_model": state.has_model,
            "has_table": bool(state.losses),
            "table": state.table,
            "user": state.user,
            "max_upload": max_upload,
            "git": _git_root(state.root) is not None,
        }

    @app.get("/api/images")
    def images(split: str | None = None, status: str | None = None, cls: int | None = None,
               sort: str = "name", q: str | None = None):
        records = {r["name"]: r for r in state.store.list()}
        out = []
        for it in state.reader.items:
            rec = records.get(it.name)
            has_mask = state.has_mask(it)
            st = state.status(rec, has_mask)
            if split and it.split != split:
                continue
            if status and st != status:
                continue
            if q and q.lower() not in it.name.lower():
                continue
            if cls is not None and cls not in state.classes_present(it):
                continue
            out.append({
                "name": it.name, "split": it.split, "status": st, "has_mask": has_mask,
                "holder": rec["holder"] if rec else None, "version": rec["version"] if rec else 0,
                "priority": rec["priority"] if rec else None, "loss": state.losses.get(it.name),
                "n_comments": rec["n_comments"] if rec else 0,
            })
        if sort == "loss":
            out.sort(key=lambda r: (r["loss"] is None, -(r["loss"] or 0.0), r["name"]))
        elif sort == "priority":
            out.sort(key=lambda r: (r["priority"] is None, -(r["priority"] or 0.0), r["name"]))
        elif sort == "status":
            out.sort(key=lambda r: (STATUSES.index(r["status"]), r["name"]))
        elif sort != "name":
            raise HTTPException(400, f"unknown sort {sort!r}: name, loss, priority or status")
        return {"total": len(out), "items": out}

    @app.get("/api/image")
    def image(name: str):
        it = state.item(name)
        return FileResponse(it.image_path, headers={"Cache-Control": "private, max-age=3600"})

    @app.get("/api/thumb")
    def thumb(name: str, kind: str = "image", hide: str = "", v: int = 0):
        it = state.item(name)
        key = (name, kind, hide, state.store.version(name))
        data = state._thumbs.get(key)
        if data is None:
            data = _thumbnail(state, it, kind, {int(h) for h in hide.split(",") if h.strip().isdigit()})
            state._thumbs.put(key, data)
        media = "image/jpeg" if kind == "image" else "image/png"
        return Response(data, media_type=media, headers={"Cache-Control": "private, max-age=60"})

    # -- masks -------------------------------------------------------------------------------
    @app.get("/api/mask")
    def get_mask(name: str, version: int | None = None):
        it = state.item(name)
        if version is None:
            loaded = state.masks.load(it)
            mask, ver, exists, bad = loaded.mask, loaded.version, loaded.exists, loaded.bad_pixels
        else:
            mask, ver, exists, bad = state.masks.load_version(it, version), version, True, 0
        return _raw(mask, {"X-Version": str(ver), "X-Exists": str(int(exists)), "X-Bad-Pixels": str(bad)})

    @app.post("/api/mask")
    async def save_mask(request: Request, name: str, version: int):
        it = state.item(name)
        body = await _read_body(request, max_upload)
        user = request.headers.get("x-user") or state.user

        def work() -> dict:
            encoding = request.headers.get("x-mask-encoding") or request.headers.get("content-encoding")
            mask = _decode_upload(body, it, encoding, max_upload)
            new = state.masks.save(it, mask, version, user=user)
            return {"name": name, "version": new, "path": str(state.masks.mask_path(it))}

        return await run_in_threadpool(work)

    @app.get("/api/pred")
    def pred(name: str):
        it = state.item(name)
        return _raw(state.prediction(it), {})

    @app.get("/api/history")
    def history(name: str):
        it = state.item(name)
        return {"name": name, "version": state.store.version(name), "versions": state.masks.history(it)}

    @app.post("/api/restore")
    def restore(request: Request, name: str, version: int, base: int):
        it = state.item(name)
        user = request.headers.get("x-user") or state.user
        new = state.masks.restore(it, version, base, user=user)
        return {"name": name, "version": new, "restored": version}

    # -- review queue ------------------------------------------------------------------------
    @app.get("/api/review")
    def get_review(name: str):
        it = state.item(name)
        rec = state.store.get(name)
        rec["status"] = state.status(rec, state.has_mask(it))
        return rec

    @app.post("/api/review")
    async def set_review(request: Request):
        body = await request.json()
        name = body.get("name", "")
        state.item(name)
        user = body.get("user") or request.headers.get("x-user") or state.user
        if body.get("status") is None:
            return state.store.add_comment(name, str(body.get("comment") or ""), user=user)
        return state.store.set_status(name, body["status"], user=user, comment=body.get("comment"),
                                      priority=body.get("priority"), region=body.get("region"))

    @app.get("/api/queue")
    def queue(status: str | None = None):
        records = {r["name"]: r for r in state.store.list()}
        counts = dict.fromkeys(STATUSES, 0)
        for it in state.reader.items:
            counts[state.status(records.get(it.name), state.has_mask(it))] += 1
        shown = [r for r in records.values() if status is None or r["status"] == status]
        return {"counts": counts, "records": shown}

    @app.get("/api/changed")
    def changed(format: str = "json", since: float | None = None):
        rows = [r | {"path": _rel(state, r["name"])} for r in state.store.changed(since)
                if r["name"] in state.items]
        if format == "txt":
            return PlainTextResponse("".join(r["path"] + "\n" for r in rows))
        if format == "csv":
            lines = ["name,path,version,status,holder,saves,time"]
            lines += [f'{r["name"]},{r["path"]},{r["version"]},{r["status"]},{r["holder"] or ""},'
                      f'{r["saves"]},{time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(r["time"]))}'
                      for r in rows]
            disposition = {"Content-Disposition": "attachment; filename=changed_masks.csv"}
            return PlainTextResponse("\n".join(lines) + "\n", media_type="text/csv", headers=disposition)
        return {"changed": rows}

    @app.post("/api/commit")
    async def commit(request: Request):
        from drivelab.label.gitcommit import commit_files

        body = await request.json()
        user = body.get("user") or request.headers.get("x-user") or state.user
        branch = body.get("branch") or f"label/{user}"
        names = [r["name"] for r in state.store.changed(body.get("since")) if r["name"] in state.items]
        files = [p for n in names for p in _native_files(state, state.items[n])]
        message = body.get("message") or f"Label fixes: {len(names)} masks\n\n" + "\n".join(names)
        return await run_in_threadpool(commit_files, state.root, files, branch, message, user)

    return app


# --------------------------------------------------------------------------- helpers
def _whoami() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "labeller"


def _git_root(root: Path) -> Path | None:
    from drivelab.label.gitcommit import repo_root

    return repo_root(root)


def _read_table(path: str | Path) -> dict[str, float]:
    import pandas as pd

    path = Path(path)
    if not path.exists():
        raise DrivelabError("per-image table not found", path)
    df = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)
    if "name" not in df.columns or "loss" not in df.columns:
        raise DrivelabError(f"per-image table needs columns name and loss, has {list(df.columns)}", path)
    return {str(n): float(v) for n, v in zip(df["name"], df["loss"], strict=True)}


def _raw(mask: np.ndarray, headers: dict[str, str]) -> Response:
    h, w = mask.shape
    headers = {"X-Width": str(w), "X-Height": str(h), "Cache-Control": "no-store", **headers}
    return Response(np.ascontiguousarray(mask, dtype=np.uint8).tobytes(),
                    media_type="application/octet-stream", headers=headers)


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise HTTPException(413, f"upload of {int(declared)} bytes is over the {limit}-byte limit")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise HTTPException(413, f"upload is over the {limit}-byte limit")
        chunks.append(chunk)
    return b"".join(chunks)


def _decode_upload(body: bytes, item: Item, encoding: str | None, limit: int) -> np.ndarray:
    """Request body -> (H, W) uint8 mask. Raw H*W bytes (gzip allowed) or a single-channel PNG."""
    with Image.open(item.image_path) as img:
        w, h = img.size
    if encoding and encoding.lower() == "gzip":
        d = zlib.decompressobj(16 + zlib.MAX_WBITS)
        try:
            body = d.decompress(body, min(limit, h * w) + 1)  # bounded: no zip bombs
        except zlib.error as e:
            raise DrivelabError(f"bad gzip upload ({e})", item.name) from None
    if body[:8] == b"\x89PNG\r\n\x1a\n":
        try:
            png = Image.open(io.BytesIO(body))
            if png.mode not in ("L", "P"):
                raise DrivelabError(f"mask PNG must hold single-channel train ids, not {png.mode}", item.name)
            mask = np.asarray(png, dtype=np.uint8)
        except OSError as e:
            raise DrivelabError(f"unreadable mask PNG ({e})", item.name) from None
        return mask
    if len(body) != h * w:
        raise DrivelabError(f"mask upload has {len(body)} bytes, expected {w}x{h} = {w * h}", item.name)
    return np.frombuffer(body, dtype=np.uint8).reshape(h, w)


def _thumbnail(state: LabelState, item: Item, kind: str, hide: set[int]) -> bytes:
    buf = io.BytesIO()
    if kind == "image":
        img = Image.fromarray(state.reader.load_image(item))
        img.thumbnail((THUMB_WIDTH, THUMB_WIDTH * 2), Image.BILINEAR)
        img.save(buf, format="JPEG", quality=85)
        return buf.getvalue()
    if kind not in ("mask", "pred"):
        raise HTTPException(400, f"unknown thumbnail kind {kind!r}")
    mask = state.prediction(item) if kind == "pred" else state.masks.load(item).mask
    rgba = np.zeros((*mask.shape, 4), np.uint8)
    rgba[..., :3] = state.schema.colorize(mask)
    shown = np.ones(256, bool)
    shown[IGNORE] = False
    shown[list(hide & set(range(256)))] = False
    rgba[..., 3] = np.where(shown[mask], 255, 0)
    img = Image.fromarray(rgba, "RGBA")
    w = min(THUMB_WIDTH, img.width)
    img = img.resize((w, max(1, round(img.height * w / img.width))), Image.NEAREST)
    img.save(buf, format="PNG")
    return buf.getvalue()


def _native_files(state: LabelState, item: Item) -> list[Path]:
    return [p for p in state.masks.native_files(item) if p.exists()]


def _rel(state: LabelState, name: str) -> str:
    item = state.items.get(name)
    if item is None:
        return name
    path = state.masks.mask_path(item)
    try:
        return path.relative_to(state.root).as_posix()
    except ValueError:
        return str(path)
