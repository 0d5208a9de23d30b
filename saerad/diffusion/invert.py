"""Deterministic DDIM inversion and sampling, with the loops written out.

Inversion runs x0 -> x_T under the UNEDITED class token with :class:`DDIMInverseScheduler`;
sampling runs x_T -> x0 with :class:`DDIMScheduler` (eta = 0, so no noise is injected). Both use
``clip_sample=False`` and the same ``leading`` timestep grid, so the noise levels visited by the
inversion are exactly those the sampler walks back through: with a model that is smooth in x, the
round trip returns the input up to the usual DDIM first-order error. Guidance is 1 for both (the
conditional model alone), as required for a faithful reconstruction.
"""

from __future__ import annotations

import functools

import torch

from saerad.diffusion.model import TokenConditionedUNet, make_schedulers


def _tokens_for(tokens: torch.Tensor, batch: int) -> torch.Tensor:
    if tokens.ndim == 1:
        tokens = tokens[None]
    if tokens.shape[0] == 1 and batch > 1:
        tokens = tokens.expand(batch, -1)
    if tokens.shape[0] != batch:
        raise ValueError(f"{tokens.shape[0]} tokens for a batch of {batch} images")
    return tokens


@functools.lru_cache(maxsize=1)
def cpu_has_native_bf16() -> bool:
    """AVX512-BF16 / AMX: there bf16 convolutions run ~1.3-1.6x faster than fp32; elsewhere slower."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def _autocast(device: torch.device):
    """bf16 on CUDA, and on CPUs with native bf16 (the CPU preset trains in it too); the composition
    check of bench/bench_intervention.py measures what it does to reconstructions."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return torch.autocast("cpu", dtype=torch.bfloat16, enabled=device.type == "cpu" and cpu_has_native_bf16())


@torch.no_grad()
def ddim_invert(
    model: TokenConditionedUNet,
    x0: torch.Tensor,
    tokens: torch.Tensor,
    *,
    steps: int = 50,
    guidance: float = 1.0,
    progress=None,
) -> torch.Tensor:
    """x0 (B, 1, R, R) in [-1, 1] -> the latent x_T whose DDIM sample under ``tokens`` is x0."""
    _, inverse = make_schedulers(model)
    inverse.set_timesteps(steps, device=x0.device)
    tokens = _tokens_for(tokens.to(x0.device), x0.shape[0])
    x = x0.float()
    for t in inverse.timesteps:
        with _autocast(x.device):
            eps = model.guided_eps(x, t, tokens, guidance).float()
        x = inverse.step(eps, int(t), x).prev_sample
        if progress is not None:
            progress()
    return x


@torch.no_grad()
def ddim_sample(
    model: TokenConditionedUNet,
    x_T: torch.Tensor,
    tokens: torch.Tensor,
    *,
    steps: int = 50,
    guidance: float = 1.0,
    anchor: torch.Tensor | None = None,
    edit_guidance: float = 1.0,
    progress=None,
) -> torch.Tensor:
    """x_T (B, 1, R, R) -> x0 in model units (not clipped), conditioned on ``tokens`` (B, d).

    With an ``anchor`` token (the unedited one) and ``edit_guidance`` g != 1, each row follows
    ``eps(x, anchor) + g (eps(x, token) - eps(x, anchor))``: the edit's effect on the denoiser is
    amplified along the same trajectory, while a row whose token IS the anchor (the reconstruction)
    is untouched. Costs one extra denoiser row per row.
    """
    sampler, _ = make_schedulers(model)
    sampler.set_timesteps(steps, device=x_T.device)
    tokens = _tokens_for(tokens.to(x_T.device), x_T.shape[0])
    steer = anchor is not None and edit_guidance != 1.0
    if steer:
        anchors = _tokens_for(anchor.to(x_T.device), x_T.shape[0])
    x = x_T.float()
    for t in sampler.timesteps:
        with _autocast(x.device):
            if steer:
                eps_edit, eps_anchor = model(torch.cat([x, x]), t, torch.cat([tokens, anchors])).float().chunk(2)
                eps = eps_anchor + edit_guidance * (eps_edit - eps_anchor)
            else:
                eps = model.guided_eps(x, t, tokens, guidance).float()
        x = sampler.step(eps, int(t), x, eta=0.0).prev_sample
        if progress is not None:
            progress()
    return x

