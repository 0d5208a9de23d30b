"""Fill a grounded report's ``boxes`` and ``heatmap`` by removing each sentence's features.

For every sentence with active features one counterfactual removes all of them together (the
sentence's content, not one feature at a time); all counterfactuals and the reconstruction share one
inversion and one sampling batch. A sentence whose removal changes nothing visible gets ``boxes=[]``
(localised: nowhere) and still a heatmap; a sentence without active features keeps ``None``.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from saerad.diffusion.intervene import DEFAULT_STEPS, Edit, intervene, model_for
from saerad.diffusion.maps import display_scale
from saerad.heatmaps.pictures import data_uri, overlay
from saerad.report.schema import Box, GroundedReport

if TYPE_CHECKING:
    import torch

    from saerad.bundle import Bundle
    from saerad.encoders.base import ClassTokenEncoder
    from saerad.imaging import XRay

HEATMAP_SIDE = 256  # data-URI overlays stay small (~30-60 kB each)


def localize_report(
    report: GroundedReport,
    xray: XRay,
    *,
    bundle: Bundle,
    encoder: ClassTokenEncoder,
    device: str | torch.device,
    steps: int = DEFAULT_STEPS,
) -> GroundedReport:
    """A copy of ``report`` whose sentences carry boxes (0..1 of the original image) and heatmaps.

    ``bundle``, ``encoder`` and ``device`` are the ones that made ``report`` (a
    :class:`~saerad.pipeline.Reporter`'s), so the diffusion model runs where the report was made.
    """
    t0 = time.perf_counter()
    model = model_for(bundle, device)
    sentence_edits: dict[int, Edit] = {}
    for k, sentence in enumerate(report.findings):
        active = tuple(sorted({f.id for f in sentence.features if f.activation > 0}))
        if active:
            sentence_edits[k] = Edit(active, "remove")
    if not sentence_edits:
        return report
    result = intervene(model, bundle.sae, encoder, xray.pixels, list(sentence_edits.values()),
                       steps=steps, measure=False)
    findings = list(report.findings)
    for slot, k in enumerate(sentence_edits):
        boxes = [Box(**b) for b in result.boxes[slot]]
        picture = overlay(xray.pixels, result.heatmaps[slot], result.boxes[slot], max_side=HEATMAP_SIDE,
                          scale=display_scale(result.heatmaps[slot]))
        findings[k] = findings[k].model_copy(update={"boxes": boxes, "heatmap": data_uri(picture)})
    timings = dict(report.timings_ms)
    timings["localize_diffusion"] = round((time.perf_counter() - t0) * 1000.0, 3)
    notes = list(report.notes) + [
        f"boxes from diffusion counterfactuals ({steps} DDIM steps, {model.resolution} px); "
        f"reconstruction SSIM {result.metrics['composition']['ssim']:.3f}"
    ]
    return report.model_copy(update={"findings": findings, "timings_ms": timings, "notes": notes})

