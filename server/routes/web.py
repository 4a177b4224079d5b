"""The web page at ``/``: static files in ``server/static/`` (vanilla JS, no build step, no CDN), mounted at
``/static``. It uses only public endpoints (tasks, classify, verbalizer, stream), so it works with the admin
features off."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"
router = APIRouter(tags=["web"])


@router.get("/", include_in_schema=False)
async def index() -> FileResponse:
    """The page (``server/static/index.html``)."""
    return FileResponse(STATIC_DIR / "index.html", media_type="text/html; charset=utf-8",
                        headers={"Cache-Control": "no-cache"})


def static_files() -> StaticFiles:
    """The page's scripts and style sheet, mounted by the app factory at ``/static``."""
    return StaticFiles(directory=STATIC_DIR)
