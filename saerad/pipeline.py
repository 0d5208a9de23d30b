"""The inference pipeline: X-ray -> class token -> SAE features -> grounded report.

:class:`Reporter` loads a bundle and its encoder once and then reports any number of images; the
CLI, the service and the evaluation runner all go through it so a report means the same everywhere.
"""

from __future__ import annotations

import logging
import os
import time
from typing import TYPE_CHECKING, Literal

import numpy as np
import torch

from saerad.bundle import Bundle
from saerad.devices import AUTO, resolve_device
from saerad.errors import ConfigError
from saerad.ood import METHOD
from saerad.radtext import Labeler, label_report
from saerad.report.composer import Composition, compose
from saerad.report.schema import OUT_OF_DISTRIBUTION_WARNING, GroundedReport, ImageInfo, OutOfDistribution
from saerad.report.select import FeatureSelector, check_selection_options

if TYPE_CHECKING:
    from saerad.encoders.base import ClassTokenEncoder
    from saerad.imaging import XRay
    from saerad.llm import LLMSettings

log = logging.getLogger(__name__)

ComposerName = Literal["deterministic", "llm"]


class Reporter:
    """A loaded bundle + encoder that turns X-rays into :class:`GroundedReport` objects.

    ``device`` is where its models run, the diffusion model of counterfactual localisation
    included; built from parts without one, it is the device of the bundle's SAE.
    """

    def __init__(
        self,
        bundle: Bundle,
        encoder: ClassTokenEncoder,
        *,
        device: str | torch.device | None = None,
        composer: ComposerName = "deterministic",
        llm_settings: LLMSettings | None = None,
        labeler: Labeler | None = None,
    ) -> None:
        if composer not in ("deterministic", "llm"):
            raise ConfigError(f"unknown composer {composer!r}; choose deterministic or llm")
        bundle.check_encoder(encoder)
        self.bundle = bundle
        self.encoder = encoder
        self.device = bundle.sae.W_enc.device if device is None else resolve_device(device)
        self.composer = composer
        self.llm_settings = llm_settings
        self.labeler = labeler or label_report
        self.selector = FeatureSelector.from_parts(bundle.dictionary, bundle.sae)
        self.defaults = bundle.manifest.report

    @classmethod
    def from_bundle(
        cls,
        path: str | os.PathLike | None = None,
        device: str | torch.device = AUTO,
        *,
        composer: ComposerName = "deterministic",
        llm_settings: LLMSettings | None = None,
    ) -> Reporter:
        """Load the bundle at ``path`` (``None``: the embedded default) and its encoder on ``device``."""
        device = resolve_device(device)
        bundle = Bundle.load(path, device=device)
        return cls(bundle, bundle.load_encoder(device), device=device, composer=composer, llm_settings=llm_settings)

    # ------------------------------------------------------------------ single image
    def report(
        self,
        image: str | os.PathLike | bytes | XRay,
        *,
        top_k: int | None = None,
        threshold: float | None = None,
        localize: bool | str | None = None,
        usable_only: bool | None = None,
        localize_steps: int | None = None,
    ) -> GroundedReport:
        """Report one X-ray (path, file bytes or a decoded :class:`~saerad.imaging.XRay`).

        ``localize`` fills each sentence's boxes and heatmap: ``"attribution"`` (the encoder's own
        sensitivity; ``True`` means this) or ``"counterfactual"`` (the bundle's diffusion model,
        ``localize_steps`` DDIM steps). The class token computed here is reused, never encoded again.
        """
        method = _localization_method(localize)
        if method is not None:
            from saerad.localize.report import check_method

            check_method(method, self.bundle)  # before any work: unknown method, no diffusion model
        timings: dict[str, float] = {}
        t_start = time.perf_counter()
        xray = self._decode(image)
        timings["decode"] = _ms(t_start)
        t = time.perf_counter()
        token = self.encoder.encode_images([xray.pixels])
        timings["encode"] = _ms(t)
        t = time.perf_counter()
        with torch.inference_mode():
            f = self.bundle.sae.encode(token.to(self.bundle.sae.W_enc.device)).float().cpu().numpy()[0]
        timings["sae"] = _ms(t)
        report = self._compose(f, top_k=top_k, threshold=threshold, usable_only=usable_only, timings=timings)
        self._check_distribution(report, token)
        report.image = ImageInfo(
            height=int(xray.original_size[0]), width=int(xray.original_size[1]), source_format=xray.source_format
        )
        if method is not None:
            from saerad.localize.report import localize_report

            t = time.perf_counter()
            report = localize_report(report, xray, token[0], bundle=self.bundle, encoder=self.encoder,
                                     method=method, steps=localize_steps, device=self.device)
            timings["localize"] = _ms(t)
        timings["total"] = _ms(t_start)
        report.timings_ms = {**report.timings_ms, **{k: round(v, 3) for k, v in timings.items()}}
        log.debug("reported one image in %.1f ms (%d sentences)", timings["total"], len(report.findings))
        return report

    # ------------------------------------------------------------------ batches of class tokens
    def features(self, tokens: torch.Tensor) -> np.ndarray:
        """SAE activations ``(B, d_sae)`` of raw class tokens ``(B, d_in)``."""
        with torch.inference_mode():
            return self.bundle.sae.encode(tokens.to(self.bundle.sae.W_enc.device)).float().cpu().numpy()

    def report_tokens(
        self,
        tokens: torch.Tensor,
        *,
        top_k: int | None = None,
        threshold: float | None = None,
        usable_only: bool | None = None,
    ) -> list[GroundedReport]:
        """Reports for precomputed class tokens (evaluation runs reuse stored embeddings)."""
        reports = [
            self._compose(row, top_k=top_k, threshold=threshold, usable_only=usable_only, timings={})
            for row in self.features(tokens)
        ]
        for report, token in zip(reports, tokens, strict=True):
            self._check_distribution(report, token[None])
        return reports

    def report_features(
        self,
        activations: np.ndarray,
        *,
        top_k: int | None = None,
        threshold: float | None = None,
        usable_only: bool | None = None,
    ) -> GroundedReport:
        """A report from one row of SAE activations (e.g. after an intervention)."""
        return self._compose(
            np.asarray(activations), top_k=top_k, threshold=threshold, usable_only=usable_only, timings={}
        )

    # ------------------------------------------------------------------ internals
    def _decode(self, image) -> XRay:
        from saerad.imaging import XRay, load_xray

        return image if isinstance(image, XRay) else load_xray(image)

    def _compose(
        self,
        f: np.ndarray,
        *,
        top_k: int | None,
        threshold: float | None,
        usable_only: bool | None,
        timings: dict[str, float],
    ) -> GroundedReport:
        check_selection_options(top_k, threshold)
        top_k = self.defaults.top_k if top_k is None else top_k
        threshold = self.defaults.threshold if threshold is None else threshold
        usable_only = self.defaults.usable_only if usable_only is None else usable_only
        t = time.perf_counter()
        selection = self.selector.select(f, top_k=top_k, threshold=threshold, usable_only=usable_only)
        composition = compose(selection.chosen, rules=selection.rules, labeler=self.labeler)
        if self.composer == "llm":
            composition = self._rephrase(composition)
        timings["compose"] = _ms(t)
        return GroundedReport(
            status=composition.status,
            findings=composition.sentences,
            features=selection.active,
            bundle=self.bundle.info(),
            composer=composition.composer,
            notes=[*selection.notes, *composition.notes],
        )

    def _check_distribution(self, report: GroundedReport, token: torch.Tensor) -> None:
        """The bundle's out-of-distribution check on one class token, and the warning when it fails."""
        check = self.bundle.ood
        if check is None:
            return
        result = check.assess(token)[0]
        report.out_of_distribution = OutOfDistribution(
            flagged=result.flagged, distance=result.distance, threshold=result.threshold,
            training_share_farther=result.training_share_farther, method=METHOD,
        )
        if result.flagged:
            report.warnings.append(OUT_OF_DISTRIBUTION_WARNING)
            log.info("image flagged as out of distribution (distance %.1f > %.1f)", result.distance, result.threshold)

    def _rephrase(self, composition: Composition) -> Composition:
        from saerad.report.llm_composer import rephrase

        return rephrase(composition, settings=self.llm_settings, labeler=self.labeler)


def _localization_method(localize: bool | str | None) -> str | None:
    if localize is None or localize is False:
        return None
    return "attribution" if localize is True else str(localize)


def _ms(t0: float) -> float:
    return (time.perf_counter() - t0) * 1000.0

