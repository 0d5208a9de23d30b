"""Fast training steps for :class:`~saerad.sae.model.GatedSAE`: hand-written forward + backward.

Why by hand: an autograd step in the usual three-matmul formulation spends 22·d·m FLOP per sample
(separate gate and magnitude matmuls, the gate pre-activation recomputed for the auxiliary loss) and
materialises a dozen (B, m) temporaries. The loss of :meth:`GatedSAE.losses` needs only five GEMMs
(14·d·m FLOP/sample, the cost model of docs/method.md#gated-sparse-autoencoder):

    z   = (x - b_dec) W_enc                      2Bdm   (shared by gate and magnitude)
    [x_hat; x_aux] = [f; a] W_dec                4Bdm   (one GEMM for both decodes)
    [g_f; g_a]     = [G; G_aux] W_dec^T          4Bdm
    grad W_dec     = f^T G                       2Bdm   (aux decoder is detached: no second term)
    grad W_enc     = (x - b_dec)^T g_z           2Bdm

Sparse step: every gradient of the loss is zero outside the gate's support {pi_gate > 0} (f and
ReLU(pi_gate) share it, and the Heaviside gate passes no gradient). Once training is sparse (~15
active latents per row) only the first GEMM must stay dense; with the support as a CSR matrix the
decodes and both weight gradients become SpMMs and g_f/g_a an SDDMM (``torch.sparse``), i.e.
O(nnz·d) work instead of O(B·m·d). This is exact, not an approximation: the dense and sparse steps
agree to rounding (tests check both against autograd).

Both steps fill ``param.grad`` of every SAE parameter and return the named loss terms.
:func:`autograd_step` is the readable step of any architecture, through its own
``training_forward``: the reference the lean steps are tested against, and the training step of the
architectures without a hand-written one.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass

import torch

from saerad.sae.base import SparseAutoencoder
from saerad.sae.model import GatedSAE


@dataclass
class StepResult:
    """Loss terms (detached scalars), the batch's mean L0, which latents fired, which path ran."""

    losses: dict[str, torch.Tensor]
    l0: float
    fired: torch.Tensor  # (d_sae,) bool
    sparse: bool


def _gate_forward(
    z: torch.Tensor, mask: torch.Tensor, b_gate: torch.Tensor, er: torch.Tensor, b_mag: torch.Tensor
) -> torch.Tensor:
    """``[f; ReLU(pi_gate)]`` stacked (2B, m) so both decodes are one GEMM."""
    f = torch.relu(torch.addcmul(b_mag, z, er)) * mask
    a = torch.relu(z + b_gate)
    return torch.cat([f, a])


def _gate_backward(
    g_fa: torch.Tensor, fa: torch.Tensor, mask: torch.Tensor, z: torch.Tensor, er: torch.Tensor, lam_n: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """From d/d[f; a] to d/dz plus the per-latent sums that give the bias and r_mag gradients."""
    batch = z.shape[0]
    g_u = g_fa[:batch] * (fa[:batch] > 0)  # through ReLU(u) * gate: nonzero where f > 0
    g_pi = (g_fa[batch:] + lam_n) * mask  # through ReLU(pi_gate) (+ the sparsity weight)
    g_z = torch.addcmul(g_pi, g_u, er)
    acc = torch.promote_types(z.dtype, torch.float32)  # sums over the batch never in bf16
    return g_z, g_u.sum(0, dtype=acc), g_pi.sum(0, dtype=acc), (g_u * z).sum(0, dtype=acc)


_KERNELS: dict[bool, tuple[Callable, Callable]] = {}


def gate_kernels(compile: bool = False) -> tuple[Callable, Callable]:
    """The elementwise parts of the dense step, optionally fused by ``torch.compile``.

    Elementwise traffic over (B, m) tensors, not the GEMMs, is what an unfused step waits on.
    """
    if compile not in _KERNELS:
        if compile:
            _KERNELS[True] = (
                torch.compile(_gate_forward, dynamic=False),
                torch.compile(_gate_backward, dynamic=False),
            )
        else:
            _KERNELS[False] = (_gate_forward, _gate_backward)
    return _KERNELS[compile]


@torch.no_grad()
def lean_step(
    sae: GatedSAE,
    x: torch.Tensor,
    lam: float,
    *,
    compute_dtype: torch.dtype | None = None,
    sparse_max_l0: float | None = None,
    compile: bool = False,
    dead: torch.Tensor | None = None,
) -> StepResult:
    """Gradients of ``sae.losses(x, lam)['total']`` into ``param.grad``, without autograd.

    ``compute_dtype`` (e.g. bf16 on GPU) is used for the GEMMs and the (B, m) tensors; parameters,
    gradients and the (B, d) residuals stay in the parameters' dtype. The sparse path runs when the
    batch's mean L0 is at most ``sparse_max_l0`` (None: always dense). ``dead`` is accepted for the
    common step signature and unused: the gated loss has no dead-latent term.
    """
    p = sae
    cd = compute_dtype or p.W_enc.dtype
    xc = x.to(p.W_enc.dtype) - p.b_dec
    z = xc.to(cd) @ p.W_enc.to(cd)
    mask = z > (-p.b_gate).to(cd)
    nnz = int(mask.sum())
    l0 = nnz / x.shape[0]
    er = p.r_mag.exp()
    dec_norm = p.W_dec.norm(dim=1)
    if sparse_max_l0 is not None and l0 <= sparse_max_l0:
        losses, fired = _sparse_backward(p, xc, z, mask, er, dec_norm, lam)
        return StepResult(losses, l0, fired, True)
    losses, fired = _dense_backward(p, xc, z, mask, er, dec_norm, lam, cd, compile)
    return StepResult(losses, l0, fired, False)


def _dense_backward(p, xc, z, mask, er, dec_norm, lam, cd, compile):
    fwd, bwd = gate_kernels(compile)
    batch = xc.shape[0]
    w_dec = p.W_dec.to(cd)
    fa = fwd(z, mask, p.b_gate.to(cd), er.to(cd), p.b_mag.to(cd))
    recons = (fa @ w_dec).to(xc.dtype)
    err = recons[:batch] - xc  # x_hat - x, since x_hat = f W_dec + b_dec and xc = x - b_dec
    err_aux = recons[batch:] - xc
    losses = _loss_dict(err, err_aux, (fa[batch:] @ dec_norm.to(cd)).to(xc.dtype).mean(), lam)
    grad_out = torch.cat([err, err_aux]).mul_(2.0 / batch)  # d total / d [x_hat; x_aux]
    grad_c = grad_out.to(cd)
    g_fa = grad_c @ w_dec.T
    g_z, g_b_mag, g_b_gate, g_uz = bwd(g_fa, fa, mask, z, er.to(cd), (lam / batch) * dec_norm.to(cd))
    del g_fa
    _set_grads(
        p,
        W_dec=fa[:batch].T @ grad_c[:batch],
        W_enc=xc.to(cd).T @ g_z,
        b_dec=grad_out[:batch].sum(0) - p.W_enc @ g_z.sum(0, dtype=xc.dtype),
        b_gate=g_b_gate,
        b_mag=g_b_mag,
        r_mag=er * g_uz,
    )
    return losses, mask.any(0)


def _csr(crow: torch.Tensor, col: torch.Tensor, values: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    with warnings.catch_warnings():  # "CSR support is in beta": the kernels used here are stable
        warnings.simplefilter("ignore", UserWarning)
        return torch.sparse_csr_tensor(crow, col, values, size, check_invariants=False)


def _crow(row_counts: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.pad(row_counts.cumsum(0), (1, 0))


def _sparse_backward(p, xc, z, mask, er, dec_norm, lam):
    """The step over the nnz active (row, latent) pairs with CSR kernels (SpMM and SDDMM)."""
    batch, m = z.shape
    dtype = xc.dtype
    rows, cols = mask.nonzero(as_tuple=True)  # row-major order: a CSR layout of the batch
    nnz = rows.numel()
    z_s = z[rows, cols].to(dtype)
    er_s, n_s = er[cols], dec_norm[cols]
    a_s = torch.relu(z_s + p.b_gate[cols])
    f_s = torch.relu(torch.addcmul(p.b_mag[cols], z_s, er_s))

    crow = _crow(torch.bincount(rows, minlength=batch))
    # [f; a] as one (2B, m) CSR matrix with the pattern stacked twice: one SpMM decodes both
    fa = _csr(torch.cat([crow, crow[1:] + nnz]), torch.cat([cols, cols]), torch.cat([f_s, a_s]), (2 * batch, m))
    recons = fa @ p.W_dec
    err, err_aux = recons[:batch] - xc, recons[batch:] - xc
    losses = _loss_dict(err, err_aux, (a_s * n_s).sum() / batch, lam)
    grad_out = torch.cat([err, err_aux]).mul_(2.0 / batch)
    # SDDMM: d/d[f; a] only at the active pairs, = (grad_out W_dec^T) sampled on the pattern
    g_fa = torch.sparse.sampled_addmm(fa, grad_out, p.W_dec.T, beta=0.0).values()
    g_u = g_fa[:nnz] * (f_s > 0)
    g_pi = g_fa[nnz:] + (lam / batch) * n_s
    g_z = torch.addcmul(g_pi, g_u, er_s)

    # weight gradients: (pattern^T as CSR, latents x rows) @ dense
    order = torch.argsort(cols, stable=True)
    crow_t, rows_t = _crow(torch.bincount(cols, minlength=m)), rows[order]
    grad_w_dec = _csr(crow_t, rows_t, f_s[order], (m, batch)) @ grad_out[:batch]
    grad_w_enc_t = _csr(crow_t, rows_t, g_z[order], (m, batch)) @ xc

    def per_latent(values: torch.Tensor) -> torch.Tensor:
        return torch.zeros(m, dtype=dtype, device=xc.device).index_add_(0, cols, values)

    _set_grads(
        p,
        W_dec=grad_w_dec,
        W_enc=grad_w_enc_t.T,
        b_dec=grad_out[:batch].sum(0) - p.W_enc @ per_latent(g_z),
        b_gate=per_latent(g_pi),
        b_mag=per_latent(g_u),
        r_mag=er * per_latent(g_u * z_s),
    )
    fired = torch.zeros(m, dtype=torch.bool, device=xc.device)
    fired[cols] = True
    return losses, fired


def _loss_dict(err, err_aux, sparsity, lam) -> dict[str, torch.Tensor]:
    recon = err.pow(2).sum(1).mean()
    aux = err_aux.pow(2).sum(1).mean()
    return {"total": recon + lam * sparsity + aux, "recon": recon, "sparsity": sparsity, "aux": aux}


def _set_grads(sae: GatedSAE, **grads: torch.Tensor) -> None:
    for name, grad in grads.items():
        param = getattr(sae, name)
        param.grad = grad.to(param.dtype).contiguous()


def autograd_step(
    sae: SparseAutoencoder,
    x: torch.Tensor,
    coef: float,
    *,
    compute_dtype: torch.dtype | None = None,
    sparse_max_l0: float | None = None,
    compile: bool = False,
    dead: torch.Tensor | None = None,
) -> StepResult:
    """Autograd through ``sae.training_forward``, then ``sae.observe`` on the batch's codes.

    ``compute_dtype`` other than the parameters' runs the forward under ``torch.autocast``;
    ``sparse_max_l0`` and ``compile`` are accepted for the common step signature (no such paths).
    """
    for param in sae.parameters():
        param.grad = None
    low = compute_dtype is not None and compute_dtype != sae.W_enc.dtype
    with torch.autocast(x.device.type, dtype=compute_dtype, enabled=low):
        losses, codes = sae.training_forward(x, coef, dead)
    losses["total"].backward()
    with torch.no_grad():
        active = codes.detach() > 0
        sae.observe(codes.detach())
    return StepResult(
        {k: v.detach() for k, v in losses.items()}, float(active.sum()) / x.shape[0], active.any(0), False
    )
