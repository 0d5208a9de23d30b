"""SAE interventions rendered by the diffusion model (docs/method.md#counterfactual-diffusion).

An edit changes some features of the image's SAE code and moves the class token by the decoder
directions only, KEEPING the SAE error term (``c - sae(c)`` is untouched)::

    c_edit = c + (f_new - f) @ sae.W_dec        remove: f_new_i = 0
                                                add:    f_new_i = max(f_i, q_i * strength)

with ``q_i`` a high activation quantile of feature ``i`` from the dictionary ("0.99" by default;
``add`` never lowers a feature that is already above it). The image is inverted ONCE under the
unedited token; the reconstruction and every edit are then sampled from the same x_T in ONE batch,
so they differ only by the condition.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch

from saerad.devices import AUTO, resolve_device
from saerad.diffusion.data import from_model, resize_image, to_model
from saerad.diffusion.invert import ddim_invert, ddim_sample
from saerad.diffusion.maps import localize
from saerad.diffusion.metrics import composition, feature_effect
from saerad.errors import BundleError, ConfigError
from saerad.heatmaps.body import body_mask

if TYPE_CHECKING:
    from saerad.bundle import Bundle
    from saerad.diffusion.model import TokenConditionedUNet
    from saerad.encoders.base import ClassTokenEncoder
    from saerad.imaging import XRay
    from saerad.sae.base import SparseAutoencoder

Mode = Literal["add", "remove"]
DEFAULT_QUANTILE = "0.99"
DEFAULT_STEPS = 50


@dataclass(frozen=True)
class Edit:
    """One counterfactual: set ``features`` to zero (remove) or to a high quantile (add)."""

    features: tuple[int, ...]
    mode: Mode
    strength: float = 1.0

    def __post_init__(self) -> None:
        if self.mode not in ("add", "remove"):
            raise ConfigError(f"mode must be 'add' or 'remove', got {self.mode!r}")
        if not self.features:
            raise ConfigError("an edit needs at least one feature")
        if not np.isfinite(self.strength) or self.strength < 0:
            raise ConfigError(f"strength must be a non-negative number, got {self.strength}")

    @property
    def name(self) -> str:
        sign = "+" if self.mode == "add" else "-"
        return "_".join(f"{sign}{i}" for i in self.features)


def dictionary_quantiles(dictionary, quantile: str = DEFAULT_QUANTILE) -> Callable[[int], float]:
    """``feature id -> activation level for add`` from a FeatureDictionary's quantiles."""

    def lookup(feature_id: int) -> float:
        try:
            stats = dictionary.get(feature_id)
        except KeyError as exc:
            raise ConfigError(f"feature {feature_id} is not in the dictionary") from exc
        value = (stats.quantiles or {}).get(quantile) or stats.max_activation
        if not value or value <= 0:
            raise ConfigError(f"feature {feature_id} was never active in training: there is no level to add")
        return float(value)

    return lookup


def edited_tokens(
    token: torch.Tensor,
    codes: torch.Tensor,
    sae: SparseAutoencoder,
    edits: Sequence[Edit],
    add_level: Callable[[int], float] | None = None,
) -> torch.Tensor:
    """Class token ``(d,)`` and its SAE code ``(m,)`` -> one edited token per edit ``(E, d)``."""
    d_sae = codes.shape[-1]
    out = []
    for edit in edits:
        bad = [i for i in edit.features if not 0 <= i < d_sae]
        if bad:
            raise ConfigError(f"feature ids {bad} out of range: this SAE has {d_sae} features (0..{d_sae - 1})")
        new = codes.clone()
        for i in edit.features:
            if edit.mode == "remove":
                new[i] = 0.0
            else:
                if add_level is None:
                    raise ConfigError("'add' needs activation quantiles from a feature dictionary")
                new[i] = max(float(codes[i]), add_level(i) * edit.strength)
        out.append(token + (new - codes).to(sae.W_dec.dtype) @ sae.W_dec)
    return torch.stack(out) if out else token.new_zeros((0, token.shape[-1]))


@dataclass
class Rendered:
    """Model-resolution [0, 1] images: input, reconstruction and one counterfactual per edit."""

    original: np.ndarray
    reconstruction: np.ndarray
    counterfactuals: list[np.ndarray]


@torch.no_grad()
def render(
    model: TokenConditionedUNet,
    image01: np.ndarray,
    token: torch.Tensor,
    edited: torch.Tensor,
    *,
    steps: int = DEFAULT_STEPS,
    edit_guidance: float = 1.0,
    progress: Callable[[], None] | None = None,
) -> Rendered:
    """Invert ``image01`` under ``token``, then sample [token, *edited] from that x_T in one batch.

    Edits that leave the token unchanged (removing an inactive feature, adding one already above the
    add level) are not sampled again: their counterfactual IS the reconstruction. ``progress`` is
    called once per denoiser call (``2 * steps`` in all).
    """
    device = next(model.parameters()).device
    original = resize_image(image01, model.resolution)
    x0 = to_model(original).to(device)
    token = token.reshape(1, -1).float().to(device)
    x_T = ddim_invert(model, x0, token, steps=steps, progress=progress)
    tokens = torch.cat([token, edited.float().to(device)])
    distinct, which = torch.unique(tokens, dim=0, return_inverse=True)
    sampled = from_model(ddim_sample(model, x_T.expand(len(distinct), -1, -1, -1), distinct, steps=steps,
                                     anchor=token, edit_guidance=edit_guidance, progress=progress))
    out = sampled[which.cpu().numpy()]
    return Rendered(original=original, reconstruction=out[0], counterfactuals=list(out[1:]))


@dataclass
class InterventionResult:
    """What ``saerad intervene`` writes. Images are [0, 1] at the model resolution; boxes are 0..1
    of the original image; ``metrics`` holds composition and (if measured) per-edit effects."""

    original: np.ndarray
    reconstruction: np.ndarray
    counterfactuals: list[np.ndarray]
    heatmaps: list[np.ndarray]  # difference maps, zero outside ``body``
    boxes: list[list[dict[str, float]]]
    metrics: dict[str, Any]
    edits: list[Edit] = field(default_factory=list)
    body: np.ndarray | None = None  # the body mask the maps were restricted to
    activations: dict[int, float] = field(default_factory=dict)  # SAE activation of each target on the input


def intervene(
    model: TokenConditionedUNet,
    sae: SparseAutoencoder,
    encoder: ClassTokenEncoder,
    image01: np.ndarray,
    edits: Sequence[Edit],
    *,
    add_level: Callable[[int], float] | None = None,
    steps: int = DEFAULT_STEPS,
    measure: bool = True,
    token: torch.Tensor | None = None,
    edit_guidance: float = 1.0,
    progress: Callable[[], None] | None = None,
) -> InterventionResult:
    """Render ``edits`` of one image and localise each; with ``measure``, re-encode to score them.

    ``token`` is the image's class token when the caller has it (saves encoding the image again).
    """
    if token is None:
        token = encoder.encode_images([image01])[0]
    token = token.float().cpu()
    sae_device = sae.W_dec.device
    with torch.no_grad():
        codes = sae.encode(token[None].to(sae_device))[0].float()
        edited = edited_tokens(token.to(sae_device), codes, sae, edits, add_level).float().cpu()
    rendered = render(model, image01, token, edited, steps=steps, edit_guidance=edit_guidance, progress=progress)
    body = body_mask(image01, rendered.original.shape)
    maps = [localize(rendered.reconstruction, cf, body=body) for cf in rendered.counterfactuals]
    metrics: dict[str, Any] = {
        "composition": composition(rendered.original, rendered.reconstruction),
        "steps": steps,
        "edit_guidance": edit_guidance,
        "resolution": model.resolution,
    }
    if measure and edits:
        with torch.no_grad():
            shape = _original_aspect(np.shape(image01), model.resolution)
            re_tokens = encoder.encode_images(
                [resize_image(img, shape) for img in (rendered.reconstruction, *rendered.counterfactuals)]
            )
            re_codes = sae.encode(re_tokens.to(sae_device)).float().cpu().numpy()
        metrics["edits"] = [
            {"edit": e.name, "strength": e.strength, **feature_effect(re_codes[0], re_codes[k + 1], e.features, e.mode),
             "boxes": len(maps[k].boxes), "map_peak": float(maps[k].heat.max())}
            for k, e in enumerate(edits)
        ]
    targets = sorted({i for e in edits for i in e.features})
    return InterventionResult(
        original=rendered.original,
        reconstruction=rendered.reconstruction,
        counterfactuals=rendered.counterfactuals,
        heatmaps=[m.heat for m in maps],
        boxes=[m.boxes for m in maps],
        metrics=metrics,
        edits=list(edits),
        body=body,
        activations={i: float(codes[i]) for i in targets},
    )


def _original_aspect(shape: tuple[int, ...], resolution: int) -> tuple[int, int]:
    """(height, width) with the original aspect ratio and the longer side = 2 x resolution.

    Model images are the film squeezed to a square; re-encoding them un-squeezed shows the encoder
    the geometry it saw on the input (it pads to a square, so a squeezed film would look different).
    """
    h, w = shape[:2]
    side = 2 * resolution
    return (max(1, round(side * h / max(h, w))), max(1, round(side * w / max(h, w))))


# ---------------------------------------------------------------------------- bundle entry points


@functools.lru_cache(maxsize=2)
def _cached_model(directory: str, device: str, mtime: float):
    from saerad.diffusion.model import load_diffusion

    return load_diffusion(directory, device=device)


def model_for(
    bundle: Bundle, device: str | torch.device = AUTO, *, directory: str | os.PathLike | None = None
) -> TokenConditionedUNet:
    """The bundle's diffusion model (or the one in ``directory``) on ``device``, checked against the
    bundle's SAE; cached per directory and device."""
    if directory is None:
        directory = bundle.diffusion_dir
    if directory is None:
        raise BundleError("this bundle has no diffusion model: interventions and localisation need one "
                          "(train one with `saerad train-diffusion` and add it to the bundle)")
    path = Path(directory).resolve()
    weights = path / "model.safetensors"
    mtime = weights.stat().st_mtime if weights.exists() else 0.0
    model = _cached_model(str(path), str(resolve_device(device)), mtime)
    bundle.check_diffusion(model.config.token_dim, path)
    return model


MAX_STEPS = 1000  # the DDIM grid cannot be finer than the training schedule's 1,000 timesteps


def check_request(bundle: Bundle, features: Sequence[int], steps: int, strength: float = 1.0) -> None:
    """Refuse, before any model runs, feature ids the bundle does not have, impossible step counts and
    strengths."""
    if not features:
        raise ConfigError("name at least one feature (--feature ID)")
    d_sae = int(bundle.sae.cfg.d_sae)
    bad = sorted({int(i) for i in features if not 0 <= int(i) < d_sae})
    if bad:
        raise ConfigError(f"feature id{'s' if len(bad) > 1 else ''} {', '.join(map(str, bad))} not in this "
                          f"bundle: its SAE has features 0..{d_sae - 1}")
    if not 1 <= int(steps) <= MAX_STEPS:
        raise ConfigError(f"steps must be between 1 and {MAX_STEPS}, got {steps}")
    if not (np.isfinite(strength) and strength >= 0):
        raise ConfigError(f"strength must be a non-negative number, got {strength}")


def run_intervention(
    xray: XRay,
    features: list[int],
    mode: Mode,
    strength: float,
    bundle: Bundle,
    encoder: ClassTokenEncoder,
    steps: int = DEFAULT_STEPS,
    *,
    device: str | torch.device = AUTO,
    quantile: str = DEFAULT_QUANTILE,
    measure: bool = True,
    diffusion_dir: str | os.PathLike | None = None,
    progress: Callable[[], None] | None = None,
) -> InterventionResult:
    """One counterfactual per feature (each edited alone), reconstruction and maps, in one batch.

    ``diffusion_dir`` overrides the bundle's diffusion model (e.g. a freshly trained one). Bad
    requests (unknown feature ids, step counts, removing a feature that is not active on the image)
    are refused before the diffusion model runs.
    """
    check_request(bundle, features, steps, strength)
    edits = [Edit((int(i),), mode, strength) for i in features]
    add_level = dictionary_quantiles(bundle.dictionary, quantile) if mode == "add" else None
    model = model_for(bundle, device, directory=diffusion_dir)
    token = encoder.encode_images([xray.pixels])[0]
    if mode == "remove":
        with torch.no_grad():
            codes = bundle.sae.encode(token[None].to(bundle.sae.W_enc.device))[0]
        inactive = [int(i) for i in features if not float(codes[int(i)]) > 0]
        if inactive:
            raise ConfigError(
                f"feature{'s' if len(inactive) > 1 else ''} {', '.join(map(str, inactive))} "
                f"{'are' if len(inactive) > 1 else 'is'} not active on this image: removing changes nothing "
                "(add it instead, or pick an active feature)"
            )
    result = intervene(model, bundle.sae, encoder, xray.pixels, edits, add_level=add_level, steps=steps,
                       measure=measure, token=token, progress=progress)
    result.metrics["model"] = {"device": str(next(model.parameters()).device), "quantile": quantile}
    return result
