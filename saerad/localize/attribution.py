"""Attribution maps from the encoder itself: which parts of the image drive a set of SAE features.

What is explained. Every SAE encoder starts from ``z = (c - b_dec) W_enc`` and an active feature's
activation is ``g_i z_i`` plus a constant (:meth:`~saerad.sae.base.SparseAutoencoder.feature_gains`;
gated: ``f_i = ReLU(exp(r_i) z_i + b_mag_i) * 1[z_i > -b_gate_i]``, so ``g_i = exp(r_i)``; TopK and
JumpReLU: ``g_i = 1``), so the features' shared drive ``s(c) = sum_i g_i z_i`` is linear in ``c``: for
active features it is their summed activation up to constants, and it stays defined (and
differentiable) for inactive ones. The maps explain ``s`` through the ViT, from the preprocessed
image to the class token.

Methods (``bench/bench_localization.py`` compares them on radiologist boxes):

- ``token_gradient``: gradient x activation of the patch tokens entering the ViT's last block, the
  only place where patch tokens still write into the class token (Grad-CAM, Selvaraju et al. 2017,
  with tokens for feature-map positions); one forward and one backward pass;
- ``gradient_x_input``: ``grad s * (x - x_black)`` in one forward and one backward pass (Shrikumar et
  al. 2016; Simonyan et al. 2014 for the gradient);
- ``integrated_gradients``: the same product with the gradient averaged along the straight path from
  a black image to ``x`` (Sundararajan et al. 2017, midpoint rule); the contributions of all pixels
  sum to ``s(x) - s(black)``;
- ``occlusion``: the drop of ``s`` when a window of patch tokens is replaced by the ViT's mask token
  (Zeiler & Fergus 2014, on tokens instead of pixels), averaged over the windows covering a patch.

Pixel contributions are summed per ViT patch (a patch's contribution is the sum of its pixels'),
which removes the pixel-level checkerboard of gradients through a patch embedding; the positive part
is kept (evidence FOR the sentence), smoothed by a Gaussian of one patch, and mapped back onto the
whole original image through the encoder's own geometry (letterbox padding, resize, centre crop:
:meth:`saerad.encoders.preprocess.ImagePreprocessor.input_geometry`). Black is the baseline because
the default encoder letterboxes with black: padding then contributes nothing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np
import torch

from saerad.errors import ConfigError

if TYPE_CHECKING:
    from saerad.encoders.base import ClassTokenEncoder
    from saerad.sae.base import SparseAutoencoder

AttributionMethod = Literal["token_gradient", "gradient_x_input", "integrated_gradients", "occlusion"]
ATTRIBUTION_METHODS: tuple[str, ...] = ("token_gradient", "gradient_x_input", "integrated_gradients", "occlusion")
DEFAULT_ATTRIBUTION: AttributionMethod = "token_gradient"  # bench/bench_localization.py: best hit rate, fastest
IG_STEPS = 16
OCCLUSION_WINDOW = 3  # patches (42 px of 224: about a lobar segment)
OCCLUSION_STRIDE = 2
MAP_SIDE = 256  # longer side of the returned map


@dataclass
class AttributionMap:
    """A map over the whole original image (its aspect, longer side :data:`MAP_SIDE`), >= 0."""

    heat: np.ndarray
    method: str
    drive: float  # s(x): the features' summed drive on this image
    patch_grid: tuple[int, int]


def feature_readout(sae: SparseAutoencoder, features: Sequence[int] | Mapping[int, float]) -> tuple[torch.Tensor, torch.Tensor]:
    """``(w, b)`` with ``s(c) = c @ w + b`` the features' summed drive (see the module docstring).

    ``features`` is a list of ids (each counts once) or ``{id: weight}`` (a finding rule's votes).
    """
    d_sae = int(sae.cfg.d_sae)
    weights = ({int(i): float(v) for i, v in features.items()} if isinstance(features, Mapping)
               else dict.fromkeys((int(i) for i in features), 1.0))
    ids = sorted(weights)
    if not ids:
        raise ConfigError("attribution needs at least one feature")
    bad = [i for i in ids if not 0 <= i < d_sae]
    if bad:
        raise ConfigError(f"feature ids {bad} out of range: this SAE has {d_sae} features (0..{d_sae - 1})")
    with torch.no_grad():
        scale = sae.feature_gains().detach()[ids].float().cpu() * torch.tensor([weights[i] for i in ids])
        w = (sae.W_enc.detach()[:, ids].float().cpu() * scale).sum(1)
        b = -(sae.b_dec.detach().float().cpu() @ w)
    return w, b


def attribution_map(
    encoder: ClassTokenEncoder,
    sae: SparseAutoencoder,
    image01: np.ndarray,
    features: Sequence[int] | Mapping[int, float],
    *,
    method: AttributionMethod = DEFAULT_ATTRIBUTION,
    ig_steps: int = IG_STEPS,
    body: np.ndarray | None = None,
) -> AttributionMap:
    """Map of how much each region of ``image01`` drives ``features`` (see the module docstring).

    ``body`` (a boolean mask with the image's aspect, any size: :mod:`saerad.heatmaps.body`) weights each patch by the
    share of it inside the body (0 below half) BEFORE smoothing, so a patch of burned-in text or film
    border can neither win nor bleed into its neighbours.
    """
    if method not in ATTRIBUTION_METHODS:
        raise ConfigError(f"unknown attribution method {method!r}; choose one of {', '.join(ATTRIBUTION_METHODS)}")
    if ig_steps < 1:
        raise ConfigError(f"integrated gradients needs at least one step, got {ig_steps}")
    image = np.asarray(image01, dtype=np.float32)
    geometry = encoder.preprocessor.input_geometry(image.shape)  # refuses encoders it cannot invert
    w, b = feature_readout(sae, features)
    w = w.to(encoder.device)
    x = encoder.preprocess(image)[None].to(encoder.device)
    black = encoder.preprocess(np.zeros((8, 8), dtype=np.float32))[:, :1, :1].to(encoder.device)  # (3, 1, 1)
    patch = int(getattr(encoder, "patch_size", 0) or 0)
    if patch <= 0 or x.shape[-1] % patch or x.shape[-2] % patch:
        raise ConfigError(f"encoder {encoder.spec!r} has no patch grid that tiles its input: attribution needs a ViT")
    grid = (x.shape[-2] // patch, x.shape[-1] // patch)

    def drive(pixels: torch.Tensor, masked: torch.Tensor | None = None) -> torch.Tensor:
        return encoder.differentiable_forward(pixels, masked).class_tokens @ w + float(b)

    if method == "occlusion":
        per_patch, value = _occlusion(drive, x, grid)
    elif method == "token_gradient":
        per_patch, value = _token_gradient(encoder, x, w, float(b), grid)
    else:
        alphas = [1.0] if method == "gradient_x_input" else [(k + 0.5) / ig_steps for k in range(ig_steps)]
        per_pixel, value = _path_gradients(drive, x, black, alphas)
        per_patch = per_pixel.reshape(grid[0], patch, grid[1], patch).sum(axis=(1, 3))
    if body is not None:
        share = _patch_share(encoder, body, patch, grid)
        per_patch = np.clip(per_patch, 0.0, None) * np.where(share >= 0.5, share, 0.0)
    heat = _to_original(per_patch, geometry, image.shape)
    return AttributionMap(heat=heat, method=method, drive=value, patch_grid=grid)


def _path_gradients(drive, x: torch.Tensor, black: torch.Tensor, alphas: list[float],
                    batch: int = 8) -> tuple[np.ndarray, float]:
    """``(x - black) * mean_alpha grad s(black + alpha (x - black))``, summed over channels."""
    delta = x - black
    total = torch.zeros_like(x)
    for start in range(0, len(alphas), batch):
        a = torch.tensor(alphas[start : start + batch], dtype=x.dtype, device=x.device)[:, None, None, None]
        points = (black + a * delta).detach().requires_grad_(True)
        (grad,) = torch.autograd.grad(drive(points).sum(), points)
        total += grad.sum(0, keepdim=True)
    with torch.no_grad():
        value = float(drive(x)[0])
    contribution = (delta * total / len(alphas))[0].sum(0)
    return contribution.detach().float().cpu().numpy(), value


def _token_gradient(encoder, x: torch.Tensor, w: torch.Tensor, b: float, grid: tuple[int, int]) -> tuple[np.ndarray, float]:
    # the input asks for gradients so the graph exists even if the weights do not (a frozen model)
    forward = encoder.differentiable_forward(x.detach().requires_grad_(True), hidden_states=True)
    tokens = forward.hidden_states[-2]  # entering the last block
    value = forward.class_tokens @ w + b
    (grad,) = torch.autograd.grad(value.sum(), tokens)
    per_token = (grad * tokens)[0, forward.prefix_tokens :].sum(-1)
    return per_token.detach().float().cpu().numpy().reshape(grid), float(value[0].detach())


@torch.no_grad()
def _occlusion(drive, x: torch.Tensor, grid: tuple[int, int], batch: int = 16) -> tuple[np.ndarray, float]:
    gh, gw = grid
    k, stride = min(OCCLUSION_WINDOW, gh, gw), OCCLUSION_STRIDE
    starts_y = sorted(set(range(0, gh - k + 1, stride)) | {gh - k})
    starts_x = sorted(set(range(0, gw - k + 1, stride)) | {gw - k})
    windows = [(y, xx) for y in starts_y for xx in starts_x]
    value = float(drive(x)[0])
    drops = np.zeros((gh, gw), dtype=np.float64)
    counts = np.zeros((gh, gw), dtype=np.float64)
    for start in range(0, len(windows), batch):
        chunk = windows[start : start + batch]
        masks = torch.zeros(len(chunk), gh, gw, dtype=torch.bool)
        for j, (y, xx) in enumerate(chunk):
            masks[j, y : y + k, xx : xx + k] = True
        scores = drive(x.expand(len(chunk), -1, -1, -1), masks.reshape(len(chunk), -1)).float().cpu().numpy()
        for (y, xx), score in zip(chunk, scores):
            drops[y : y + k, xx : xx + k] += value - float(score)
            counts[y : y + k, xx : xx + k] += 1
    return (drops / np.maximum(counts, 1)).astype(np.float32), value


def _patch_share(encoder, body: np.ndarray, patch: int, grid: tuple[int, int]) -> np.ndarray:
    """Share of each patch inside ``body``: the mask goes through the encoder's own geometry
    (letterbox, resize, crop), so padding counts as outside. That geometry depends only on the
    image's aspect, so a mask at the map's size serves, and a 64-Mpx film costs no full-size copy."""
    at_input = encoder.preprocessor.to_uint8(np.asarray(body, dtype=np.float32)).astype(np.float32) / 255.0
    return at_input.reshape(grid[0], patch, grid[1], patch).mean(axis=(1, 3))


def _to_original(per_patch: np.ndarray, geometry, image_shape: tuple[int, int]) -> np.ndarray:
    """Positive part of a patch-grid map, smoothed by one patch, on the original image's full extent."""
    from PIL import Image
    from scipy.ndimage import gaussian_filter

    positive = np.clip(np.asarray(per_patch, dtype=np.float32), 0.0, None)
    gh, gw = positive.shape
    smooth = gaussian_filter(positive, sigma=1.0, mode="constant")
    in_h, in_w = geometry.input_shape
    at_input = np.asarray(Image.fromarray(smooth, mode="F").resize((in_w, in_h), Image.Resampling.BILINEAR))
    return geometry.to_original(at_input, map_shape(image_shape))


def map_shape(image_shape: tuple[int, ...]) -> tuple[int, int]:
    """The shape of a map of an image: its aspect, longer side :data:`MAP_SIDE`."""
    h, w = image_shape[:2]
    factor = MAP_SIDE / max(h, w)
    return max(1, round(h * factor)), max(1, round(w * factor))
