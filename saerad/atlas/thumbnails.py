"""Thumbnails of the user's images, made at atlas time (a bundle never carries images).

Each thumbnail is named by a hash of the image id, its path and the size, so ids with slashes or odd
characters never become paths, a rerun finds the ones it already made (resume), and a changed
dataset or size never reuses a stale one. Files are written atomically.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

from saerad.errors import SaeradError
from saerad.fileio import atomic_path

log = logging.getLogger(__name__)

FOLDER = "img"
SIDE = 256  # pixels of the longer side: sharp at the pages' 128 CSS px on a 2x screen
QUALITY = 85


def thumbnail_name(image_id: str, path: str | os.PathLike, side: int = SIDE) -> str:
    digest = hashlib.sha256(f"{image_id}\0{Path(path)}\0{side}".encode()).hexdigest()
    return f"{digest[:24]}.jpg"


def to_thumbnail(image01: np.ndarray, side: int = SIDE) -> Image.Image:
    """A [0, 1] grayscale image -> an 8-bit image whose longer side is at most ``side``."""
    from saerad.heatmaps.pictures import to_uint8

    image = Image.fromarray(to_uint8(image01), mode="L")
    image.thumbnail((side, side), Image.Resampling.LANCZOS)
    return image


def make_thumbnails(
    site: Path,
    items: Mapping[str, str | os.PathLike],
    *,
    side: int = SIDE,
    workers: int = 2,
    progress: bool = True,
) -> dict[str, str | None]:
    """Thumbnail of every ``image id -> path`` under ``site/img``; returns ``id -> site-relative path``
    (``None`` for an image that could not be decoded: the page shows a placeholder)."""
    from tqdm.auto import tqdm

    from saerad.imaging import load_xray

    folder = site / FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    names = {image_id: thumbnail_name(image_id, path, side) for image_id, path in items.items()}
    todo = [image_id for image_id, name in names.items() if not (folder / name).is_file()]

    def make(image_id: str) -> str | None:
        try:
            thumb = to_thumbnail(load_xray(items[image_id]).pixels, side)
        except SaeradError as exc:
            log.warning("no thumbnail for %s: %s", image_id, exc)
            return image_id
        with atomic_path(folder / names[image_id]) as tmp:
            thumb.save(tmp, format="JPEG", quality=QUALITY, optimize=True)
        return None

    failed: set[str] = set()
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool, tqdm(
        total=len(todo), desc="thumbnails", unit="img", disable=not progress or not todo
    ) as bar:
        for bad in pool.map(make, todo):
            if bad is not None:
                failed.add(bad)
            bar.update(1)
    return {image_id: None if image_id in failed else f"{FOLDER}/{name}" for image_id, name in names.items()}
