"""Browsing: dataset info, the paged image list, images, thumbnails, model predictions."""

from __future__ import annotations

import io
from typing import Literal

import numpy as np
from fastapi import APIRouter, Depends, HTTPException, Query
from fastapi.responses import FileResponse, JSONResponse, Response
from PIL import Image

from drivelab.data.sample import Item
from drivelab.label.assist import SUPERPIXEL_SIZES
from drivelab.label.masks import IGNORE, image_size
from drivelab.label.state import DIFF_COLOR, LabelState, current_user, get_state
from drivelab.label.store import STATUSES
from drivelab.label.uploads import check_image_pixels

THUMB_WIDTH = 320
router = APIRouter(prefix="/api")


@router.get("/info")
def info(state: LabelState = Depends(get_state), user: str = Depends(current_user)) -> JSONResponse:
    from drivelab.painter import overlay_style
    from drivelab.seg.instance.draw import instance_colors

    s = state.schema
    style = overlay_style(s)  # the one painter's colours and opacity
    palette = np.zeros((256, 4), np.uint8)  # RGBA per mask value: what the page paints, one source
    palette[: s.num_classes, :3] = [_rgb(c) for c in style["colors"]]
    palette[: s.num_classes, 3] = 255
    palette[254] = (*DIFF_COLOR, 255)
    idx = state.index
    cats = []
    if state.instances is not None:
        ids = s.extra.get("category_ids") or []
        cats = [{"id": int(cid), "train_id": k + 1, "name": s.names[k + 1]} for k, cid in enumerate(ids)]
    return JSONResponse({
        "dataset": state.root.name,
        "format": state.reader.format,
        "n_images": len(idx),
        "splits": idx.splits,
        "statuses": list(STATUSES),
        "schema": s.to_dict() | {"hex": s.hex_colors()},
        "overlay": {"alpha": style["opacity"], "palette": palette.tolist(), "ignore": IGNORE, "diff": 254},
        "mode": "instances" if state.instances is not None else "semantic",
        "categories": cats,
        "instance_palette": instance_colors(256).tolist(),
        "model_task": state.model_task,
        "score": state.score,
        "has_sam": state.sam is not None,
        "findings": state.findings.sources,
        "superpixel_sizes": list(SUPERPIXEL_SIZES),
        "ignore_index": IGNORE,
        "writable": state.writable,
        "read_only_reason": state.read_only_reason,
        "store_writable": not state.store.read_only,
        "allows_unlabelled": state.masks.allows_unlabelled,
        "has_model": state.has_model,
        "has_table": bool(state.losses),
        "table": state.table,
        "user": user,
        "auth": "token" if state.access.tokens_required else "local",
        "max_upload": state.max_upload,
        "git": _git_root(state) is not None,
        "skipped": {"outside_root": idx.skipped.outside_root, "bad_name": idx.skipped.bad_name},
        "recovery": state.recovery.line(),
    })


@router.get("/images")
def images(split: str | None = None, status: str | None = None, cls: int | None = Query(None, ge=0, le=254),
           sort: str = "name", q: str | None = Query(None, max_length=200), offset: int = Query(0, ge=0),
           limit: int = Query(240, ge=1, le=1000), state: LabelState = Depends(get_state)) -> JSONResponse:
    """One page of the filtered, sorted image list (the whole list never travels)."""
    state.index.maybe_refresh()
    state.index.sync()
    try:
        page = state.index.page(split=split or None, status=status or None, q=q or None, sort=sort,
                                offset=offset, limit=limit, cls=cls, classes_of=state.classes_present)
    except ValueError as e:
        raise HTTPException(400, str(e)) from None
    return JSONResponse(page)


@router.get("/image")
def image(name: str, state: LabelState = Depends(get_state)) -> FileResponse:
    it = state.item(name)
    return FileResponse(state.image_file(it), headers={"Cache-Control": "private, max-age=3600"})


@router.get("/thumb")
def thumb(name: str, kind: Literal["image", "mask", "pred"] = "image", hide: str = Query("", max_length=1024),
          state: LabelState = Depends(get_state)) -> Response:
    it = state.item(name)
    hidden = frozenset(int(h) for h in hide.split(",") if h.strip().isdigit() and int(h) < 256)
    path = state.image_file(it) if kind == "image" else state.masks.mask_path(it)
    try:
        st = path.stat()
        stamp = (st.st_mtime_ns, st.st_size)
    except OSError:
        stamp = None
    key = (name, kind, hidden if kind != "image" else None, stamp)
    data = state.thumbs.get(key)
    if data is None:
        data = state.thumbs.put(key, _thumbnail(state, it, kind, hidden))
    media = "image/jpeg" if kind == "image" else "image/png"
    return Response(data, media_type=media, headers={"Cache-Control": "private, max-age=60"})


@router.get("/pred")
def pred(name: str, state: LabelState = Depends(get_state)) -> Response:
    it = state.item(name)
    check_image_pixels(*image_size(state.image_file(it)), it.name)
    return raw_mask(state.prediction(it), {})


def raw_mask(mask: np.ndarray, headers: dict[str, str]) -> Response:
    h, w = mask.shape
    headers = {"X-Width": str(w), "X-Height": str(h), "Cache-Control": "no-store", **headers}
    return Response(np.ascontiguousarray(mask, dtype=np.uint8).tobytes(),
                    media_type="application/octet-stream", headers=headers)


def _thumbnail(state: LabelState, item: Item, kind: str, hide: frozenset[int]) -> bytes:
    path = state.image_file(item)
    h, w = image_size(path)
    check_image_pixels(h, w, item.name)
    if kind == "image":
        buf = io.BytesIO()
        with Image.open(path) as img:
            img.draft("RGB", (THUMB_WIDTH, THUMB_WIDTH * 2))  # JPEG: decode at a reduced scale
            img = img.convert("RGB")
        img.thumbnail((THUMB_WIDTH, THUMB_WIDTH * 2), Image.BILINEAR)
        img.save(buf, format="JPEG", quality=85)
        return buf.getvalue()
    if kind == "mask" and state.instances is not None:
        # Objects, each in its own colour (the instance drawings' palette), as the editor shows them.
        from drivelab.seg.instance.draw import instance_colors

        ids = state.instances.instance_map(item)
        colors = np.zeros((256, 3), np.uint8)
        colors[1:] = instance_colors(255)
        rgba = np.zeros((*ids.shape, 4), np.uint8)
        rgba[..., :3] = colors[np.where(ids > 0, (ids - 1) % 255 + 1, 0)]
        rgba[..., 3] = np.where(ids > 0, 255, 0)
        return _png_thumb(rgba)
    mask = state.prediction(item) if kind == "pred" else state.load_mask(item).mask
    rgba = np.zeros((*mask.shape, 4), np.uint8)
    rgba[..., :3] = state.schema.colorize(mask)
    shown = np.ones(256, bool)
    shown[IGNORE] = False
    shown[list(hide)] = False
    if state.instances is not None:
        shown[0] = False  # COCO background
    rgba[..., 3] = np.where(shown[mask], 255, 0)
    return _png_thumb(rgba)


def _png_thumb(rgba: np.ndarray) -> bytes:
    buf = io.BytesIO()
    img = Image.fromarray(rgba, "RGBA")
    tw = min(THUMB_WIDTH, img.width)
    img = img.resize((tw, max(1, round(img.height * tw / img.width))), Image.NEAREST)
    img.save(buf, format="PNG")
    return buf.getvalue()


def _rgb(hex_color: str) -> tuple[int, int, int]:
    h = hex_color.lstrip("#")
    return int(h[0:2], 16), int(h[2:4], 16), int(h[4:6], 16)


def _git_root(state: LabelState):
    from drivelab.label.gitcommit import repo_root

    return repo_root(state.root)
