"""The page itself and the session a page starts with (its user name and CSRF secret)."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Depends
from fastapi.responses import FileResponse

from drivelab.label.state import LabelState, current_user, get_state

STATIC = Path(__file__).resolve().parents[1] / "static"
router = APIRouter()


@router.get("/", include_in_schema=False)
def index() -> FileResponse:
    # The page holds no data: it may load without a token and then asks for one.
    return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})


@router.get("/api/session")
def session(state: LabelState = Depends(get_state), user: str = Depends(current_user)) -> dict:
    """Only a same-origin page can read this (no CORS, Host checked), so the CSRF secret it returns
    proves a later write comes from the app's own page."""
    return {"user": user, "csrf": state.access.csrf,
            "auth": "token" if state.access.tokens_required else "local"}
