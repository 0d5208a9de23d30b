"""Add/remove counterfactual strips of a feature, rendered by the bundle's diffusion model.

Per image: original | reconstruction | +feature | -feature | map, as in the paper-style figure of
:func:`saerad.diffusion.figure.intervention_figure` (one inversion, one sampling batch); the map shows
the edit that changes the image: remove where the feature is active, add where it is not. Images are
taken alternately from the feature's strongest images and from images where it is silent, so both
edits get shown doing something.

CPU-costly (seconds per image at 128 px): off by default. Each strip lives in its own folder, named
by a hash of everything that determines it, with ``strip.json`` written last; a rerun reuses every
finished strip.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from saerad.atlas.pages import StripRow
from saerad.errors import SaeradError
from saerad.fileio import atomic_path, atomic_write_json

log = logging.getLogger(__name__)

FOLDER = "cf"


@dataclass(frozen=True)
class StripJob:
    feature: int
    image_id: str
    path: str
    activation: float
    token: torch.Tensor  # the image's class token (from the atlas's embeddings)


def pick_images(top: Sequence[tuple[int, float]], sample: Sequence[tuple[int, float]], n: int) -> list[tuple[int, float]]:
    """``n`` (row, activation): strongest and silent images alternately, strongest first."""
    strong = [rv for rv in top if rv[1] > 0]
    silent = [rv for rv in sample if rv[1] <= 0]
    out: list[tuple[int, float]] = []
    while len(out) < n and (strong or silent):
        for pool in (strong, silent):
            if pool and len(out) < n:
                out.append(pool.pop(0))
    return out


class StripRenderer:
    """Renders strips with one bundle's diffusion model, SAE and encoder."""

    def __init__(self, bundle, encoder, *, steps: int, strength: float, device: str) -> None:
        from saerad.diffusion.intervene import dictionary_quantiles, model_for

        self.bundle, self.encoder = bundle, encoder
        self.steps, self.strength = steps, strength
        self.model = model_for(bundle, device)
        self.add_level = dictionary_quantiles(bundle.dictionary)
        manifest = bundle.manifest
        # What makes a strip: the weights (their checksums), the settings, the image and feature.
        weights = sorted((k, v) for k, v in manifest.files.items() if k.startswith(("sae/", f"{manifest.diffusion.path}/")))
        self._model_key = hashlib.sha256(json.dumps([weights, steps, strength]).encode()).hexdigest()

    def folder(self, site: Path, job: StripJob) -> Path:
        key = hashlib.sha256(f"{self._model_key}\0{job.feature}\0{job.image_id}\0{job.path}".encode()).hexdigest()
        return site / FOLDER / key[:24]

    def render(self, site: Path, job: StripJob) -> StripRow | None:
        """The strip of ``job`` (rendered now or reused); ``None`` when the image cannot be used."""
        folder = self.folder(site, job)
        done = folder / "strip.json"
        if done.is_file() and (row := _row(site, json.loads(done.read_text(encoding="utf-8")))) is not None:
            return row
        from saerad.diffusion.intervene import Edit, intervene
        from saerad.diffusion.maps import display_scale
        from saerad.heatmaps.pictures import overlay, png_bytes
        from saerad.imaging import load_xray

        try:
            pixels = load_xray(job.path).pixels
            edits = [Edit((job.feature,), "add", self.strength), Edit((job.feature,), "remove")]
            result = intervene(self.model, self.bundle.sae, self.encoder, pixels, edits, add_level=self.add_level,
                               steps=self.steps, token=job.token)
        except SaeradError as exc:
            log.warning("no counterfactual of feature %d on %s: %s", job.feature, job.image_id, exc)
            return None
        active = result.activations.get(job.feature, 0.0) > 0
        map_of = "remove" if active else "add"
        k = 1 if active else 0
        images = {
            "original": result.original,
            "reconstruction": result.reconstruction,
            "add": result.counterfactuals[0],
            "remove": result.counterfactuals[1],
            "map": overlay(result.original, result.heatmaps[k], result.boxes[k], max_side=result.original.shape[0],
                           scale=display_scale(result.heatmaps[k])),
        }
        folder.mkdir(parents=True, exist_ok=True)
        tiles = {}
        for name, image in images.items():
            with atomic_path(folder / f"{name}.png") as tmp:
                tmp.write_bytes(png_bytes(image))
            tiles[name] = (folder / f"{name}.png").relative_to(site).as_posix()
        effect = {
            e["mode"]: {"before": e["before"], "after": e["after"]} for e in result.metrics.get("edits", [])
        }
        record = {"image_id": job.image_id, "activation": float(job.activation), "tiles": tiles, "map_of": map_of,
                  "effect": effect, "composition": result.metrics.get("composition"),
                  "map_peak": float(np.max(result.heatmaps[k]))}
        atomic_write_json(done, record)
        return _row(site, record)


def _row(site: Path, record: dict) -> StripRow | None:
    tiles = record["tiles"]
    if not all((site / rel).is_file() for rel in tiles.values()):
        return None
    return StripRow(image_id=record["image_id"], activation=record["activation"], tiles=tiles,
                    map_of=record["map_of"], effect=record.get("effect", {}))
