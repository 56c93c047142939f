"""Masks: read (current or an old version), save (version N -> N+1), history, restore. History and
restore also serve COCO images (their annotations are the versioned unit, ``instances.py``)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from drivelab.label.masks import image_size
from drivelab.label.routes.images import raw_mask
from drivelab.label.state import LabelState, current_user, get_state
from drivelab.label.uploads import check_image_pixels, decode_mask

router = APIRouter(prefix="/api")


@router.get("/mask")
def get_mask(name: str, version: int | None = Query(None, ge=0),
             state: LabelState = Depends(get_state)) -> Response:
    it = state.item(name)
    check_image_pixels(*image_size(state.image_file(it)), it.name)
    if version is None:
        loaded = state.load_mask(it)
        mask, ver, exists, bad = loaded.mask, loaded.version, loaded.exists, loaded.bad_pixels
    elif state.instances is not None:
        mask, ver, exists, bad = state.instances.label_map(it, version), version, True, 0
    else:
        mask, ver, exists, bad = state.masks.load_version(it, version), version, True, 0
    return raw_mask(mask, {"X-Version": str(ver), "X-Exists": str(int(exists)), "X-Bad-Pixels": str(bad)})


@router.post("/mask")
async def save_mask(request: Request, name: str, version: int = Query(..., ge=0),
                    state: LabelState = Depends(get_state), user: str = Depends(current_user)) -> dict:
    """Body: raw H*W train ids (``X-Mask-Encoding: gzip`` allowed) or a single-channel PNG."""
    state.require_writable()
    if state.instances is not None:
        raise HTTPException(422, "COCO images are saved as objects (POST /api/instances), not as a mask")

    def look_up() -> tuple:  # may re-index or read a header: not on the event loop
        it = state.item(name)
        h, w = image_size(state.image_file(it))
        check_image_pixels(h, w, it.name)
        return it, h, w

    it, h, w = await run_in_threadpool(look_up)
    # No mask needs more than its raw bytes (plus PNG/gzip framing): a tighter cap than --max-upload.
    body = await read_body(request, min(state.max_upload, h * w + h + 65536))
    encoding = request.headers.get("x-mask-encoding") or request.headers.get("content-encoding")

    def work() -> dict:  # decoding, encoding and fsyncs stay off the event loop
        mask = decode_mask(body, h, w, encoding, it.name)
        result = state.masks.save(it, mask, version, user=user)
        state.index.mark_saved(it.name, state.masks.mask_path(it))
        return {"name": name, "version": result.version, "duplicate": result.duplicate,
                "path": _rel(state, it)}

    return await run_in_threadpool(work)


@router.get("/history")
def history(name: str, state: LabelState = Depends(get_state)) -> dict:
    it = state.item(name)
    io = state.instances if state.instances is not None else state.masks
    return {"name": name, "version": state.store.version(name), "versions": io.history(it)}


@router.post("/restore")
def restore(name: str, version: int = Query(..., ge=0), base: int = Query(..., ge=0),
            state: LabelState = Depends(get_state), user: str = Depends(current_user)) -> dict:
    it = state.item(name)
    state.require_writable()
    io = state.instances if state.instances is not None else state.masks
    result = io.restore(it, version, base, user=user)
    state.index.mark_saved(it.name, state.masks.mask_path(it))
    return {"name": name, "version": result.version, "restored": version}


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 past ``limit`` bytes (declared or streamed)."""
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


def _rel(state: LabelState, it) -> str:
    path = state.masks.mask_path(it)
    try:
        return path.relative_to(state.root).as_posix()
    except ValueError:
        return str(path)
