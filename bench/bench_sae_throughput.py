"""Gated-SAE training throughput: the eager three-matmul reference step vs the lean steps.

One run, same SAE state and batch for every variant; a full step = loss + gradients + Adam update.

    python bench/bench_sae_throughput.py                    # GPU section (if CUDA) + CPU section
    python bench/bench_sae_throughput.py --section gpu --device cpu --batch-size 64 --steps 2
                                                            # the GPU code path (bf16) smoke-run on CPU

GPU section: d=768, m=49,152, batch 4096, bf16. Targets: best lean step >= 1.0 M samples/s and >= 5x
the reference. "roofline" is 14·d·m FLOP/sample (the cost model of
docs/method.md#gated-sparse-autoencoder) at the nominal H100 bf16 GEMM rate (789 TFLOP/s -> ~1.5 M
samples/s); the GEMM rate measured in this run is printed too.
CPU section: d=384, m=3,072, float32, as a ratio to the reference.

The SAE is put in a trained-like state (gate thresholds giving ~15 active latents per row), which is
when the sparse step applies; before timing, every lean variant's loss and gradients are checked
against the autograd reference in float32.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from saerad.sae.model import GatedSAE, GatedSAEConfig  # noqa: E402
from saerad.sae.steps import lean_step  # noqa: E402

H100_BF16_FLOPS = 789e12
TARGET_SAMPLES_PER_S = 1.0e6
TARGET_RATIO = 5.0
LAM = 2.0


def reference_losses(sae: GatedSAE, x: torch.Tensor, lam: float) -> dict[str, torch.Tensor]:
    """The formulation common in SAE libraries: separate gate and magnitude matmuls, the gate
    pre-activation recomputed for the auxiliary loss. Same loss as ``GatedSAE.losses``."""
    x_cent = x - sae.b_dec
    mag_pre = x_cent @ (sae.W_enc * sae.r_mag.exp()) + sae.b_mag
    gate_pre = x_cent @ sae.W_enc + sae.b_gate
    f = (gate_pre > 0) * torch.relu(mag_pre)
    x_hat = f @ sae.W_dec + sae.b_dec
    pi_gate = x_cent @ sae.W_enc + sae.b_gate
    a = torch.relu(pi_gate)
    x_aux = a @ sae.W_dec.detach() + sae.b_dec.detach()
    recon = (x_hat - x).pow(2).sum(-1).mean()
    sparsity = (a * sae.W_dec.detach().norm(dim=1)).sum(-1).mean()
    aux = (x_aux - x).pow(2).sum(-1).mean()
    return {"total": recon + lam * sparsity + aux, "recon": recon, "sparsity": sparsity, "aux": aux}


def trained_like_sae(d: int, m: int, target_l0: float, device: torch.device) -> GatedSAE:
    """Random decoder, W_enc = W_dec^T, gate thresholds at the (1 - L0/m) Gaussian quantile."""
    gen = torch.Generator().manual_seed(0)
    sae = GatedSAE(GatedSAEConfig(d, m)).init_weights(dec_norm=1.0, generator=gen)
    with torch.no_grad():
        q = math.sqrt(2) * torch.erfinv(torch.tensor(1 - 2 * target_l0 / m)).item()  # N(0,1) quantile
        sae.b_gate.copy_(-q * sae.W_enc.norm(dim=0))
        sae.b_mag.fill_(0.05)
    return sae.to(device)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def make_step(kind: str, sae: GatedSAE, device: torch.device, dtype: torch.dtype):
    opt = torch.optim.Adam(sae.parameters(), lr=1e-7, fused=device.type == "cuda")
    if kind.startswith("reference"):
        autocast = kind.endswith("bf16")

        def step(x):
            opt.zero_grad(set_to_none=True)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
                loss = reference_losses(sae, x, LAM)["total"]
            loss.backward()
            opt.step()

        return step
    compile_ = "compiled" in kind
    sparse = 64.0 if "sparse" in kind else None

    def step(x):
        lean_step(sae, x, LAM, compute_dtype=dtype, sparse_max_l0=sparse, compile=compile_)
        opt.step()

    return step


def time_variant(kind, sae, x, device, dtype, warmup, steps) -> float:
    """Median seconds per step (after ``warmup`` steps, which absorb compilation)."""
    step = make_step(kind, sae, device, dtype)
    for _ in range(warmup):
        step(x)
    sync(device)
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step(x)
        sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def check_against_reference(sae: GatedSAE, x: torch.Tensor) -> dict[str, float]:
    """Max relative gradient error of the lean dense and sparse steps vs autograd, float32."""
    for p in sae.parameters():
        p.grad = None
    reference_losses(sae, x, LAM)["total"].backward()
    ref = {n: p.grad.clone() for n, p in sae.named_parameters()}
    errors = {}
    for name, sparse in (("lean dense", None), ("lean sparse", 1e9)):
        out = lean_step(sae, x, LAM, compute_dtype=torch.float32, sparse_max_l0=sparse)
        errors[name] = max(
            float((p.grad - ref[n]).abs().max() / ref[n].abs().max().clamp_min(1e-30)) for n, p in sae.named_parameters()
        )
        assert out.sparse == (sparse is not None)
    for p in sae.parameters():
        p.grad = None
    return errors


def gemm_flops(device: torch.device, d: int, m: int, batch: int, dtype: torch.dtype) -> float:
    a = torch.randn(batch, d, device=device, dtype=dtype)
    b = torch.randn(d, m, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    sync(device)
    n = 20 if device.type == "cuda" else 2
    start = time.perf_counter()
    for _ in range(n):
        a @ b
    sync(device)
    return 2 * batch * d * m * n / (time.perf_counter() - start)


def run_section(title, device, d, m, batch, dtype, variants, warmup, steps, gpu_targets) -> None:
    print(f"\n## {title}: d={d}, m={m:,}, batch={batch}, device={device}, compute={str(dtype).split('.')[-1]}\n")
    sae = trained_like_sae(d, m, 15.0, device)
    x = torch.randn(batch, d, device=device)
    with torch.no_grad():
        l0 = float((sae.encode(x) > 0).sum()) / batch
    check = check_against_reference(sae, x[: min(batch, 512)])
    print(f"state: L0 = {l0:.1f} active latents/row; gradient check vs autograd (fp32, max rel err): "
          + ", ".join(f"{k} {v:.1e}" for k, v in check.items()))
    ok = all(v < 1e-3 for v in check.values())
    print(f"gradient check: {'PASS' if ok else 'MISS'}\n")
    flop_per_sample = 14 * d * m
    measured = gemm_flops(device, d, m, batch, dtype)
    roofline_measured = measured / flop_per_sample
    print(f"GEMM rate measured here ({str(dtype).split('.')[-1]}, {batch}x{d} @ {d}x{m}): {measured / 1e9:,.0f} GFLOP/s"
          f" -> dense roofline {roofline_measured:,.0f} samples/s (14·d·m FLOP/sample)\n")
    rows = []
    for kind in variants:
        try:
            sec = time_variant(kind, sae, x, device, dtype, warmup, steps)
        except Exception as exc:  # noqa: BLE001 - a bench row reports failure, the others still run
            print(f"{kind}: FAILED ({type(exc).__name__}: {exc})")
            continue
        rows.append((kind, batch / sec, sec))
    if not rows:
        return
    ref = next((r[1] for r in rows if r[0] == "reference fp32"), rows[0][1])
    best_ref = max((r[1] for r in rows if r[0].startswith("reference")), default=ref)
    nominal = H100_BF16_FLOPS / flop_per_sample
    h100 = " of H100 roofline (1.5 M/s) |" if gpu_targets else ""
    print(f"| step | ms/step | samples/s | x reference fp32 | x best reference | of measured roofline |{h100}")
    print("|---|---:|---:|---:|---:|---:|" + ("---:|" if gpu_targets else ""))
    for kind, rate, sec in rows:
        h100 = f" {rate / nominal:.2f} |" if gpu_targets else ""
        print(f"| {kind} | {sec * 1e3:.1f} | {rate:,.0f} | {rate / ref:.2f}x | {rate / best_ref:.2f}x | "
              f"{rate / roofline_measured:.2f} |{h100}")
    best_kind, best, _ = max((r for r in rows if r[0].startswith("lean")), key=lambda r: r[1], default=rows[0])
    print()
    if gpu_targets:
        print(f"target >= {TARGET_SAMPLES_PER_S / 1e6:.1f} M samples/s: {best / 1e6:.3f} M ({best_kind}) "
              f"{'PASS' if best >= TARGET_SAMPLES_PER_S else 'MISS'}")
        for name, base in (("reference fp32", ref), ("best reference", best_ref)):
            ratio = best / base
            print(f"target >= {TARGET_RATIO:.0f}x {name}: {ratio:.2f}x {'PASS' if ratio >= TARGET_RATIO else 'MISS'}")
    else:
        print(f"best lean step: {best / ref:.2f}x the fp32 reference ({best_kind})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--section", choices=["all", "gpu", "cpu"], default="all")
    ap.add_argument("--device", default="cuda", help="device of the GPU section (cpu: smoke-run of the GPU path)")
    ap.add_argument("--batch-size", type=int, default=None, help="override the batch of the chosen section(s)")
    ap.add_argument("--steps", type=int, default=None, help="timed steps per variant")
    ap.add_argument("--no-compile", action="store_true", help="skip the torch.compile variant in the GPU section")
    ap.add_argument("--cpu-threads", type=int, default=None)
    args = ap.parse_args()
    if args.cpu_threads:
        torch.set_num_threads(args.cpu_threads)
    print("# Gated SAE training throughput (full step: loss + gradients + Adam)")
    print(f"torch {torch.__version__}, CPU threads {torch.get_num_threads()}")

    if args.section in ("all", "gpu"):
        device = torch.device(args.device)
        if device.type == "cuda" and not torch.cuda.is_available():
            print("\n## GPU section: d=768, m=49,152, batch 4096\n\nskipped: no CUDA")
        else:
            if device.type == "cuda":  # fp32 matmuls at PyTorch's default precision (TF32 off)
                print(f"GPU: {torch.cuda.get_device_name(device)}")
            variants = ["reference fp32", "reference bf16", "lean bf16", "lean sparse bf16"]
            if not args.no_compile:
                variants.insert(3, "lean compiled bf16")
            run_section("GPU section", device, 768, 49_152, args.batch_size or 4096, torch.bfloat16, variants,
                        warmup=3 if device.type == "cuda" else 1, steps=args.steps or 20, gpu_targets=True)
    if args.section in ("all", "cpu"):
        run_section("CPU section", torch.device("cpu"), 384, 3072, args.batch_size or 2048, torch.float32,
                    ["reference fp32", "lean fp32", "lean sparse fp32"], warmup=1, steps=args.steps or 5,
                    gpu_targets=False)


if __name__ == "__main__":
    main()
