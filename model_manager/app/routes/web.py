"""The web page at `/` and its files under `/static/`: shipped in the package, public like `/health`.

The page holds no secret; its API calls carry the token the user enters. The strict Content-Security-Policy
means text from the Hub can never run as script on the page, even if it slipped into the HTML.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse, HTMLResponse

from model_manager.core.errors import NotFoundError

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"

_MEDIA_TYPES = {".html": "text/html", ".js": "text/javascript", ".css": "text/css", ".png": "image/png", ".svg": "image/svg+xml"}
_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    # Revalidate every time (cheap with the ETag) so an upgraded service never runs yesterday's script.
    "Cache-Control": "no-cache",
}

router = APIRouter(include_in_schema=False)


def _static_file(name: str) -> FileResponse:
    """A file directly in the static folder; anything else (subfolders, `..`, unknown types) is not found."""
    path = (STATIC_DIR / name).resolve()
    media_type = _MEDIA_TYPES.get(path.suffix)
    if path.parent != STATIC_DIR or media_type is None or not path.is_file():
        raise NotFoundError(f"no such file: /static/{name}")
    return FileResponse(path, media_type=media_type, headers=_HEADERS)


@router.get("/")
async def index():
    if (STATIC_DIR / "index.html").is_file():
        return _static_file("index.html")
    return HTMLResponse("<h1>model-manager</h1><p>See <a href='/docs'>/docs</a>.</p>")


@router.get("/static/{name}")
async def static_file(name: str) -> FileResponse:
    return _static_file(name)
