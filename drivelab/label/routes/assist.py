"""Assisted tools (GrabCut, superpixels, magic wand, Segment Anything), the engine's findings on an
image, and "next image that needs me". Proposals travel as raw bytes of a box (``X-Box: x0,y0,x1,y1``,
exclusive ends), the way masks do: the page applies exactly these pixels."""

from __future__ import annotations

from typing import Literal

import numpy as np
from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from drivelab.label.assist import MARK_EXCLUDE, check_box, grabcut, superpixel_size, wand
from drivelab.label.routes.masks import read_body
from drivelab.label.state import LabelState, current_user, get_state
from drivelab.label.uploads import UploadRefused, inflate_gzip

router = APIRouter(prefix="/api")


def _crop(box: tuple[int, int, int, int], region: np.ndarray, **headers: str) -> Response:
    x0, y0, x1, y1 = box
    return Response(np.ascontiguousarray(region, dtype=np.uint8).tobytes(),
                    media_type="application/octet-stream",
                    headers={"X-Box": f"{x0},{y0},{x1},{y1}", "Cache-Control": "no-store", **headers})


@router.post("/assist/grabcut")
async def grabcut_box(request: Request, name: str, x0: int, y0: int, x1: int, y1: int,
                      iterations: int = Query(5, ge=1, le=20),
                      state: LabelState = Depends(get_state)) -> Response:
    """Body: empty (first proposal) or the box's marks, raw bytes (0 none, 1 include, 2 exclude)."""
    it = await run_in_threadpool(state.item, name)
    h, w = int(it.meta.get("height") or 0), int(it.meta.get("width") or 0)
    if not (h and w):
        from drivelab.label.masks import image_size

        h, w = await run_in_threadpool(image_size, state.image_file(it))
    box = check_box((x0, y0, x1, y1), h, w)
    n = (box[2] - box[0]) * (box[3] - box[1])
    body = await read_body(request, n + 65536)
    encoding = (request.headers.get("x-mask-encoding") or "").lower()

    def work() -> Response:
        data = inflate_gzip(body, n, name) if encoding == "gzip" else body
        marks = None
        if data:
            if len(data) != n:
                raise UploadRefused(f"marks have {len(data)} bytes, the box has {n} pixels", name)
            marks = np.frombuffer(data, np.uint8).reshape(box[3] - box[1], box[2] - box[0])
            if int(marks.max()) > MARK_EXCLUDE:
                raise UploadRefused("marks are 0 (none), 1 (include) or 2 (exclude)", name)
        return _crop(box, grabcut(state.image_rgb(it), box, marks, iterations))

    return await run_in_threadpool(work)


@router.get("/assist/superpixels")
def superpixel_labels(name: str, size: int = Query(16, ge=1, le=512),
                      state: LabelState = Depends(get_state)) -> Response:
    """SLIC labels of the whole image (uint16 or uint32 per pixel, ``X-Bytes``), cached per size."""
    it = state.item(name)
    image = state.image_rgb(it)
    size = superpixel_size(size)
    st = state.image_file(it).stat()
    data, nbytes, n, hit = state.assist.superpixels((it.name, size, st.st_mtime_ns, st.st_size), image, size)
    h, w = image.shape[:2]
    return Response(data, media_type="application/octet-stream", headers={
        "X-Width": str(w), "X-Height": str(h), "X-Bytes": str(nbytes), "X-Segments": str(n),
        "X-Size": str(size), "X-Cache": "hit" if hit else "miss", "Cache-Control": "no-store"})


@router.get("/assist/wand")
def magic_wand(name: str, x: int, y: int, tolerance: int = Query(24, ge=0, le=255),
               state: LabelState = Depends(get_state)) -> Response:
    it = state.item(name)
    box, region = wand(state.image_rgb(it), x, y, tolerance)
    return _crop(box, region)


class SamBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    points: list[tuple[float, float, int]] = Field(default_factory=list, max_length=200)
    box: tuple[float, float, float, float] | None = None


@router.post("/assist/sam")
def segment_anything(name: str, body: SamBody, state: LabelState = Depends(get_state)) -> Response:
    if state.sam is None:
        raise HTTPException(404, "no Segment Anything model: start the app with --sam PATH (a local "
                                 "checkpoint)")
    if not body.points and body.box is None:
        raise HTTPException(422, "give points, a box, or both")
    it = state.item(name)
    image = state.image_rgb(it)
    mask = state.sam.predict(it.name, image, list(body.points), list(body.box) if body.box else None)
    if not mask.any():
        return _crop((0, 0, 0, 0), np.zeros((0, 0), np.uint8))
    ys, xs = np.nonzero(mask)
    box = (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)
    return _crop(box, mask[box[1]:box[3], box[0]:box[2]])


@router.get("/findings")
def findings(name: str, state: LabelState = Depends(get_state)) -> dict:
    """Regions the data engine flagged on this image (audit boxes; over/under for COCO objects)."""
    it = state.item(name)
    anns = state.instances.current(it)[0] if state.instances is not None else None
    return {"name": name, "regions": state.findings.regions(it, anns)}


@router.get("/next")
def next_image(name: str, want: Literal["unlabelled", "needs_fix", "mine"] = "unlabelled",
               sort: str = "name", split: str | None = None, status: str | None = None,
               q: str | None = Query(None, max_length=200), state: LabelState = Depends(get_state),
               user: str = Depends(current_user)) -> dict:
    """The next image after ``name`` (in ``sort`` order, wrapping) that is unlabelled, needs a fix, or
    is in progress and held by the caller; ``position``: its row in the list the page shows (with
    ``split``/``status``/``q``), or null when that list does not hold it."""
    state.index.sync()
    try:
        return state.index.next_after(name, want, user, sort=sort, split=split or None, status=status or None,
                                      q=q or None)
    except ValueError as e:
        raise HTTPException(400, str(e)) from None
