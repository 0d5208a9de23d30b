"""Counterfactual maps: what changes in the image when a sentence's features are edited away.

One edit per sentence, all of the sentence's features together (the sentence's content, not one
feature at a time): ``remove`` when any of them is active on the image (the usual case: a report
sentence comes from active features), else ``add`` at the dictionary's 0.99 activation quantile (a
benchmark asking where a finding WOULD be). The reconstruction and all edits share one DDIM
inversion and one sampling batch (:func:`saerad.diffusion.intervene.intervene`), and the class
token the caller already computed is reused instead of encoding the image again.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from saerad.diffusion.intervene import DEFAULT_STEPS, Edit, dictionary_quantiles, intervene, model_for
from saerad.diffusion.maps import display_scale

if TYPE_CHECKING:
    from saerad.bundle import Bundle
    from saerad.encoders.base import ClassTokenEncoder


@dataclass
class CounterfactualMap:
    """|x_edit - x_rec| at the model resolution (the whole film, zero outside the body), its boxes
    (0..1) and the value drawn white (:func:`saerad.diffusion.maps.display_scale`)."""

    heat: np.ndarray
    boxes: list[dict[str, float]]
    scale: float


def counterfactual_maps(
    bundle: Bundle,
    encoder: ClassTokenEncoder,
    image01: np.ndarray,
    token: torch.Tensor,
    feature_sets: Sequence[Sequence[int]],
    *,
    steps: int = DEFAULT_STEPS,
    device: str | torch.device | None = None,
    progress: Callable[[], None] | None = None,
    diffusion_dir: str | os.PathLike | None = None,
) -> tuple[list[CounterfactualMap], dict]:
    """One map per feature set (difference maps restricted to the body, boxes) and what made them.

    ``diffusion_dir`` overrides the bundle's diffusion model (e.g. a freshly trained one);
    ``progress`` is called once per denoiser call.
    """
    model = model_for(bundle, device, directory=diffusion_dir)
    with torch.no_grad():
        codes = bundle.sae.encode(token.reshape(1, -1).to(bundle.sae.W_enc.device))[0].float().cpu()
    edits = [Edit(tuple(sorted({int(i) for i in features})),
                  "remove" if any(codes[int(i)] > 0 for i in features) else "add")
             for features in feature_sets]
    add_level = dictionary_quantiles(bundle.dictionary) if any(e.mode == "add" for e in edits) else None
    result = intervene(model, bundle.sae, encoder, image01, edits, add_level=add_level, steps=steps,
                       measure=False, token=token, progress=progress)
    maps = [CounterfactualMap(heat=heat, boxes=boxes, scale=display_scale(heat))
            for heat, boxes in zip(result.heatmaps, result.boxes)]
    detail = {
        "edits": [e.mode for e in edits],
        "steps": steps,
        "resolution": model.resolution,
        "reconstruction_ssim": round(float(result.metrics["composition"]["ssim"]), 4),
        "device": str(next(model.parameters()).device),
    }
    return maps, detail
