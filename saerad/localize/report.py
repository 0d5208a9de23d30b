"""Fill a grounded report's ``boxes`` and ``heatmap`` with the chosen localisation method.

Each sentence with active features gets a map of its features together; a sentence whose map shows
nothing (a counterfactual with no visible change, an attribution with no positive evidence) gets
``boxes=[]`` (localised: nowhere) and still its (dark) heatmap; a sentence without active features
keeps ``None``. ``GroundedReport.localization`` says which method made the maps and how.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np

from saerad.errors import BundleError, ConfigError
from saerad.heatmaps.pictures import data_uri, heatmap_image
from saerad.report.schema import Box, GroundedReport, Localization, Sentence

if TYPE_CHECKING:
    import torch

    from saerad.bundle import Bundle
    from saerad.encoders.base import ClassTokenEncoder
    from saerad.imaging import XRay

Method = Literal["attribution", "counterfactual"]
METHODS: tuple[str, ...] = ("attribution", "counterfactual")
HEATMAP_SIDE = 256  # longer side of the heatmap PNGs carried in the report (data URIs stay small)


@dataclass
class SentenceMap:
    """A sentence's map over the whole original image (zero outside the body) and its boxes (0..1).

    ``scale`` is the value drawn white in the heatmap PNG (a difference map of invisible changes
    stays dark; an attribution map is scaled to its own peak)."""

    heat: np.ndarray
    boxes: list[dict[str, float]]
    scale: float


def check_method(method: str, bundle: Bundle) -> None:
    """Refuse an unknown method, or counterfactuals from a bundle without a diffusion model, up front."""
    if method not in METHODS:
        raise ConfigError(f"unknown localisation method {method!r}; choose {' or '.join(METHODS)}")
    if method == "counterfactual" and bundle.diffusion_dir is None:
        raise BundleError(
            f"bundle {bundle.manifest.name!r} has no diffusion model, so it cannot make counterfactual maps; "
            "use --localize attribution or a bundle with a diffusion model"
        )


def sentence_maps(
    bundle: Bundle,
    encoder: ClassTokenEncoder,
    xray: XRay,
    token: torch.Tensor,
    feature_sets: Sequence[Sequence[int] | Mapping[int, float]],
    *,
    method: Method = "attribution",
    steps: int | None = None,
    device: str | torch.device | None = None,
    attribution: str | None = None,
) -> tuple[list[SentenceMap], dict]:
    """One :class:`SentenceMap` per feature set, and a JSON-able description of how they were made.

    A feature set is a list of ids or ``{id: weight}``; counterfactuals edit the ids (weights only
    shape attribution's readout).
    """
    check_method(method, bundle)
    if method == "counterfactual":
        from saerad.diffusion.intervene import DEFAULT_STEPS
        from saerad.localize.counterfactual import counterfactual_maps

        found, detail = counterfactual_maps(bundle, encoder, xray.pixels, token, [list(f) for f in feature_sets],
                                            steps=DEFAULT_STEPS if steps is None else steps, device=device)
        return [SentenceMap(heat=m.heat, boxes=m.boxes, scale=m.scale) for m in found], detail
    from saerad.heatmaps.body import body_mask
    from saerad.heatmaps.regions import find_regions
    from saerad.localize.attribution import DEFAULT_ATTRIBUTION, attribution_map, map_shape

    variant = attribution or DEFAULT_ATTRIBUTION
    body = body_mask(xray.pixels, map_shape(xray.pixels.shape))  # a full-size mask of a 64-Mpx film is 64 MB
    maps = []
    for features in feature_sets:
        found = attribution_map(encoder, bundle.sae, xray.pixels, features, method=variant, body=body)
        regions = find_regions(found.heat, body=body)
        maps.append(SentenceMap(heat=regions.heat, boxes=regions.boxes, scale=float(regions.heat.max())))
    return maps, {"attribution": variant, "encoder": encoder.spec}


def localize_report(
    report: GroundedReport,
    xray: XRay,
    token: torch.Tensor,
    *,
    bundle: Bundle,
    encoder: ClassTokenEncoder,
    method: Method = "attribution",
    steps: int | None = None,
    device: str | torch.device | None = None,
) -> GroundedReport:
    """A copy of ``report`` whose sentences carry boxes (0..1 of the original image) and heatmaps.

    ``token`` is the class token the report was made from (never encoded again here).
    """
    check_method(method, bundle)
    t0 = time.perf_counter()
    slots = {k: _sentence_features(s) for k, s in enumerate(report.findings)}
    slots = {k: features for k, features in slots.items() if features}
    maps, detail = (sentence_maps(bundle, encoder, xray, token, list(slots.values()), method=method, steps=steps,
                                  device=device) if slots else ([], {}))
    findings = list(report.findings)
    height, width = xray.pixels.shape
    for k, found in zip(slots, maps):
        picture = heatmap_image(found.heat, (height, width), max_side=HEATMAP_SIDE, scale=found.scale)
        findings[k] = findings[k].model_copy(
            update={"boxes": [Box(**b) for b in found.boxes], "heatmap": data_uri(picture)})
    timings = dict(report.timings_ms)
    timings[f"localize_{method}"] = round((time.perf_counter() - t0) * 1000.0, 3)
    return report.model_copy(update={
        "findings": findings,
        "timings_ms": timings,
        "localization": Localization(method=method, sentences=len(maps), detail=detail),
    })


def _sentence_features(sentence: Sentence) -> dict[int, float]:
    """The sentence's active features and their weight: a finding rule's vote weight (contribution /
    activation), else 1 (a description is the feature's own)."""
    out = {}
    for f in sentence.features:
        if f.activation > 0:
            out[f.id] = f.contribution / f.activation if sentence.rule is not None and f.contribution else 1.0
    return out
