"""Getting the work out: the changed-masks list (JSON, CSV, paths) and a git commit to a branch."""

from __future__ import annotations

import csv
import io
import re
import time
from typing import Literal

from fastapi import APIRouter, Depends
from fastapi.responses import PlainTextResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from drivelab.errors import DrivelabError
from drivelab.label.state import LabelState, current_user, get_state

router = APIRouter(prefix="/api")
_FORMULA = ("=", "+", "-", "@", "\t", "\r", "\n")
_BRANCH = re.compile(r"[A-Za-z0-9._/-]{1,200}")


class CommitBody(BaseModel):
    model_config = ConfigDict(extra="ignore")
    branch: str | None = Field(None, max_length=200)
    message: str | None = Field(None, max_length=10_000)
    since: float | None = Field(None, allow_inf_nan=False)


@router.get("/changed")
def changed(format: Literal["json", "csv", "txt"] = "json", since: float | None = None,
            state: LabelState = Depends(get_state)) -> Response:
    rows = [r | {"path": _rel(state, r["name"])} for r in state.store.changed(since)
            if r["name"] in state.index.pos]
    if format == "txt":
        return PlainTextResponse("".join(r["path"] + "\n" for r in rows if "\n" not in r["path"]))
    if format == "csv":
        buf = io.StringIO()
        out = csv.writer(buf, quoting=csv.QUOTE_ALL, lineterminator="\n")
        out.writerow(["name", "path", "version", "status", "holder", "saves", "time"])
        for r in rows:
            when = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(r["time"]))
            out.writerow([cell(r["name"]), cell(r["path"]), r["version"], cell(r["status"]),
                          cell(r["holder"] or ""), r["saves"], when])
        return Response(buf.getvalue(), media_type="text/csv; charset=utf-8",
                        headers={"Content-Disposition": "attachment; filename=changed_masks.csv"})
    return Response(_json(rows), media_type="application/json")


def cell(value: str) -> str:
    """A CSV cell a spreadsheet shows as text: a leading =, +, -, @ or control character would make
    it a formula (CSV injection), so such cells get a leading apostrophe."""
    value = str(value)
    return "'" + value if value.startswith(_FORMULA) else value


@router.post("/commit")
def commit(body: CommitBody, state: LabelState = Depends(get_state),
           user: str = Depends(current_user)) -> dict:
    from drivelab.label.gitcommit import commit_files

    branch = (body.branch or "").strip() or f"label/{_slug(user)}"
    if not _BRANCH.fullmatch(branch) or branch.startswith(("-", "/")) or ".." in branch:
        raise DrivelabError(f"branch name {branch!r}: use letters, digits and . _ - / only", state.root)
    names = [r["name"] for r in state.store.changed(body.since) if r["name"] in state.index.pos]
    files = [p for n in names for p in state.masks.native_files(state.item(n))]
    message = body.message or f"Label fixes: {len(names)} masks\n\n" + "\n".join(names)
    if not names:
        raise DrivelabError("no changed masks to commit", state.root)
    return commit_files(state.root, files, branch, message, user)


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-.") or "user"


def _rel(state: LabelState, name: str) -> str:
    item = state.index.item(name)
    if item is None:
        return name
    path = state.masks.mask_path(item)
    try:
        return path.relative_to(state.root).as_posix()
    except ValueError:
        return str(path)


def _json(rows: list[dict]) -> str:
    import json

    return json.dumps({"changed": rows})
