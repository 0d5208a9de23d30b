"""Image grids: training sample sheets and the paper-style intervention figure (PIL only)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image

from saerad.heatmaps.pictures import to_uint8


def image_grid(rows: Sequence[Sequence[np.ndarray]], *, pad: int = 2) -> Image.Image:
    """Rows of equally sized [0, 1] grayscale images -> one grayscale sheet."""
    rows = [list(r) for r in rows if len(r)]
    h, w = np.asarray(rows[0][0]).shape[:2]
    cols = max(len(r) for r in rows)
    sheet = np.zeros((len(rows) * (h + pad) + pad, cols * (w + pad) + pad), dtype=np.uint8)
    for i, row in enumerate(rows):
        for j, img in enumerate(row):
            y, x = pad + i * (h + pad), pad + j * (w + pad)
            sheet[y : y + h, x : x + w] = to_uint8(img)
    return Image.fromarray(sheet, mode="L")


# ---------------------------------------------------------------------------- intervention figure

COLUMNS = ("original", "reconstruction", "+feature", "-feature", "map")


@dataclass
class FigureRow:
    """One feature's row: [0, 1] model-resolution images and an RGB map overlay."""

    label: str
    original: np.ndarray
    reconstruction: np.ndarray
    plus: np.ndarray
    minus: np.ndarray
    map_overlay: Image.Image


def _wrap(text: str, font, width: int, draw) -> list[str]:
    lines, line = [], ""
    for word in text.split():
        trial = f"{line} {word}".strip()
        if line and draw.textlength(trial, font=font) > width:
            lines.append(line)
            line = word
        else:
            line = trial
    return [*lines, line] if line else lines


def compose_figure(rows: Sequence[FigureRow], *, tile: int = 192, pad: int = 6, font_size: int = 14) -> Image.Image:
    """Paper-style grid: a header of column names, then per row a label line and five tiles."""
    from PIL import ImageDraw, ImageFont

    font = ImageFont.load_default(size=font_size)
    width = len(COLUMNS) * (tile + pad) + pad
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    labels = [_wrap(r.label, font, width - 2 * pad, probe) for r in rows]
    line_h = font_size + 4
    header_h = line_h + pad
    height = header_h + sum(len(lab) * line_h + tile + 2 * pad for lab in labels) + pad
    sheet = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(sheet)
    for j, name in enumerate(COLUMNS):
        x = pad + j * (tile + pad) + tile / 2
        draw.text((x, pad), name, fill="black", font=font, anchor="mt")
    y = header_h
    for row, lines in zip(rows, labels):
        for line in lines:
            draw.text((pad, y), line, fill="black", font=font)
            y += line_h
        y += pad // 2
        tiles = [Image.fromarray(to_uint8(img), mode="L").convert("RGB")
                 for img in (row.original, row.reconstruction, row.plus, row.minus)]
        for j, im in enumerate([*tiles, row.map_overlay.convert("RGB")]):
            sheet.paste(im.resize((tile, tile), Image.Resampling.BILINEAR), (pad + j * (tile + pad), y))
        y += tile + pad + pad // 2
    return sheet


def intervention_figure(model, sae, encoder, image01: np.ndarray, features: Sequence[int], *,
                        descriptions: dict[int, str] | None = None, add_level=None, steps: int = 50,
                        strength: float = 1.0, progress=None) -> Image.Image:
    """Render +feature / -feature for every feature (ONE inversion, ONE sampling batch) and compose.

    The map column shows where the feature lives: ``|x_-feature - x_rec|`` when the feature is active
    on the image, else ``|x_+feature - x_rec|`` (removing an absent feature changes nothing).
    ``progress`` is called once per denoiser call (``2 * steps``).
    """
    from saerad.diffusion.intervene import Edit, intervene
    from saerad.diffusion.maps import display_scale
    from saerad.heatmaps.pictures import overlay

    edits = []
    for i in features:
        edits += [Edit((int(i),), "add", strength), Edit((int(i),), "remove")]
    result = intervene(model, sae, encoder, image01, edits, add_level=add_level, steps=steps, measure=False,
                       progress=progress)
    rows = []
    for k, i in enumerate(features):
        active = result.activations.get(int(i), 0.0) > 0
        m = 2 * k + (1 if active else 0)
        desc = (descriptions or {}).get(int(i)) or "(no description)"
        label = f"#{i}  activation {result.activations.get(int(i), 0.0):.3g}  map: {'-' if active else '+'}feature  {desc}"
        rows.append(FigureRow(
            label=label, original=result.original, reconstruction=result.reconstruction,
            plus=result.counterfactuals[2 * k], minus=result.counterfactuals[2 * k + 1],
            map_overlay=overlay(result.original, result.heatmaps[m], result.boxes[m], max_side=result.original.shape[0],
                                scale=display_scale(result.heatmaps[m])),
        ))
    return compose_figure(rows)
