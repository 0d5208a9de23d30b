"""Serve a folder written by ``saerad atlas`` at ``/atlas/``, read-only.

Mounted inside the app, so the API-key middleware guards it like ``/v1`` and errors keep the
service's JSON shape. Starlette's StaticFiles answers only GET/HEAD and resolves every path inside
the folder (``..``, encoded slashes and symlinks out of it give 404); on top of that, hidden paths
(the atlas's ``.cache`` of class tokens) are never served, and every response forbids scripts,
styles and images from anywhere but the atlas itself (a description is data, never code).
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath

from fastapi import FastAPI
from starlette.exceptions import HTTPException
from starlette.responses import Response
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

from saerad.errors import ConfigError

PREFIX = "/atlas"
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


class AtlasFiles(StaticFiles):
    """StaticFiles over an atlas folder that hides dot-paths and adds security headers."""

    async def get_response(self, path: str, scope: Scope) -> Response:
        if any(part.startswith(".") for part in PurePosixPath(path).parts):
            raise HTTPException(status_code=404)
        response = await super().get_response(path, scope)
        response.headers.update(SECURITY_HEADERS)
        return response


def check_atlas_dir(directory: str | Path) -> Path:
    """``directory`` if it holds an atlas, else a one-line :class:`ConfigError`."""
    root = Path(directory)
    if not (root / "index.html").is_file() or not (root / "atlas.json").is_file():
        raise ConfigError(f"SAERAD_ATLAS_DIR={root} is not an atlas folder (write one with `saerad atlas`)")
    return root


def mount_atlas(app: FastAPI, directory: str | Path) -> None:
    """Serve ``directory`` at ``/atlas/``; refuses a folder that is not an atlas."""
    app.mount(PREFIX, AtlasFiles(directory=check_atlas_dir(directory), html=True), name="atlas")
