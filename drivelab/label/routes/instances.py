"""COCO objects: read an image's objects (current or an old version), save them (version N -> N+1,
the json rewritten atomically with this image's annotations replaced), and the instance model's
proposals above a score threshold."""

from __future__ import annotations

import json

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from starlette.concurrency import run_in_threadpool

from drivelab.data.sample import Item
from drivelab.errors import DrivelabError
from drivelab.label.instances import InstanceIO, runs_of
from drivelab.label.routes.masks import read_body
from drivelab.label.state import LabelState, current_user, get_state

router = APIRouter(prefix="/api")


def instance_io(state: LabelState) -> InstanceIO:
    if state.instances is None:
        raise HTTPException(404, f"{state.reader.format} datasets hold masks, not COCO objects")
    return state.instances


@router.get("/instances")
def get_instances(name: str, version: int | None = Query(None, ge=0),
                  state: LabelState = Depends(get_state)) -> dict:
    io = instance_io(state)
    it = state.item(name)
    if version is None:
        anns, ver = io.current(it)
    else:
        anns, ver = io.at_version(it, version), version
    out = io.objects(anns, it)
    out.update(name=name, version=ver, current=version is None or ver == state.store.version(name),
               findings=state.findings.regions(it, anns) if version is None else [])
    return out


@router.post("/instances")
async def save_instances(request: Request, name: str, version: int = Query(..., ge=0),
                         state: LabelState = Depends(get_state), user: str = Depends(current_user)) -> dict:
    """Body: ``{"objects": [{id, category_id, iscrowd, runs, polygons?, keep?}, ...]}``, bottom first."""
    state.require_writable()
    io = instance_io(state)
    it: Item = await run_in_threadpool(state.item, name)
    h, w = io.size(it)
    # Run lengths of every object's pixels stay far below a few bytes per pixel: a tighter cap than
    # --max-upload for the JSON the server must parse.
    body = await read_body(request, min(state.max_upload, 4 * h * w + (1 << 20)))

    def work() -> dict:
        try:
            data = json.loads(body)
        except ValueError as e:
            raise DrivelabError(f"the body is not valid JSON ({e})", name) from None
        objects = data.get("objects") if isinstance(data, dict) else None
        if not isinstance(objects, list) or not all(isinstance(o, dict) for o in objects):
            raise DrivelabError('the body must be {"objects": [{...}, ...]}', name)
        result, built = io.save(it, objects, version, user=user)
        state.index.mark_saved(it.name, io.json_path(it))
        editable = built.annotations[len(built.annotations) - len(built.stored):]
        stored = [{"id": a["id"], "stored": how} for a, how in zip(editable, built.stored, strict=True)]
        return {"name": name, "version": result.version, "duplicate": result.duplicate, "objects": stored,
                "path": _rel(state, io.json_path(it))}

    return await run_in_threadpool(work)


@router.get("/instances/pred")
def predicted(name: str, score: float | None = Query(None, ge=0.0, le=1.0),
              state: LabelState = Depends(get_state)) -> dict:
    """The instance model's objects scoring at least ``score`` (default ``--score``), best first."""
    instance_io(state)
    it = state.item(name)
    state.image_rgb(it)  # the pixel limit, before the model decodes anything
    pred = state.instances_predicted(it)
    threshold = state.score if score is None else float(score)
    objects = [{"category_id": cat, "train_id": int(lab), "score": float(s), "runs": runs_of(m)}
               for m, lab, cat, s in zip(pred.masks, pred.labels, pred.category_ids, pred.scores, strict=True)
               if s >= threshold and m.any()]
    return {"name": name, "score": threshold, "objects": objects, "total": len(pred)}


def _rel(state: LabelState, path) -> str:
    try:
        return path.relative_to(state.root).as_posix()
    except ValueError:
        return str(path)
