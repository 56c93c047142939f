"""Review state: status, holder, comments, priority, suspect region; the queue."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Depends, HTTPException, Query
from pydantic import BaseModel, ConfigDict, Field

from drivelab.label.state import LabelState, current_user, get_state
from drivelab.label.store import STATUSES

router = APIRouter(prefix="/api")
Status = Literal[STATUSES]  # type: ignore[valid-type]


class Region(BaseModel):
    model_config = ConfigDict(extra="forbid")
    box: list[float] = Field(min_length=4, max_length=4)
    note: str | None = Field(None, max_length=1000)


class ReviewBody(BaseModel):
    """POST /api/review. The acting user is the caller's credential, never a field here."""

    model_config = ConfigDict(extra="ignore")
    name: str = Field(max_length=4096)
    status: Status | None = None
    comment: str | None = Field(None, max_length=10_000)
    priority: float | None = Field(None, allow_inf_nan=False)
    region: list[float] | Region | None = None


@router.get("/review")
def get_review(name: str, state: LabelState = Depends(get_state)) -> dict:
    state.item(name)
    state.index.sync()
    rec = state.store.get(name)
    rec["status"] = state.status(name)
    rec.pop("digest", None)
    return rec


@router.post("/review")
def set_review(body: ReviewBody, state: LabelState = Depends(get_state),
               user: str = Depends(current_user)) -> dict:
    state.item(body.name)
    region = body.region.model_dump() if isinstance(body.region, Region) else body.region
    if region is not None and isinstance(region, list) and len(region) != 4:
        raise HTTPException(422, "region must be [x0, y0, x1, y1] or {box: [x0, y0, x1, y1], note}")
    if body.status is None:
        if not (body.comment or "").strip():
            raise HTTPException(422, "nothing to do: give a status or a comment")
        rec = state.store.add_comment(body.name, body.comment.strip(), user=user)
    else:
        rec = state.store.set_status(body.name, body.status, user=user, comment=body.comment,
                                     priority=body.priority, region=region)
    state.index.sync()
    rec["status"] = state.status(body.name)
    rec.pop("digest", None)
    return rec


@router.get("/queue")
def queue(status: Status | None = None, limit: int = Query(500, ge=1, le=10_000),
          state: LabelState = Depends(get_state)) -> dict:
    state.index.sync()
    records = [r for r in state.store.list(status, limit=limit) if r["name"] in state.index.pos]
    for r in records:
        r.pop("digest", None)
        r["status"] = state.status(r["name"])
    return {"counts": state.index.counts(), "records": records}
