"""SAE training throughput: every registered architecture's training step vs the three-matmul reference.

One run, one batch; a full step = loss + gradients + Adam update. Architectures come from
``saerad.sae.architectures.ARCHITECTURES``, so a newly registered one is measured without edits here.

    python bench/bench_sae_throughput.py                    # GPU section (if CUDA) + CPU section
    python bench/bench_sae_throughput.py --section gpu --device cpu --batch-size 64 --steps 2
                                                            # the GPU code path (bf16) smoke-run on CPU

GPU section: d=768, m=49,152 (Rad-DINO scale), batch 4096, bf16. Targets for gated: >= 1.0 M
samples/s and >= 5x the reference. "of roofline" is the rate over what the architecture's dense cost
model (gated: 14·d·m FLOP/sample, docs/method.md#gated-sparse-autoencoder; the autograd steps of
BatchTopK, JumpReLU and Matryoshka: 10·d·m) allows at the GEMM rate
measured in the same run on the same shape (4096 x 768 @ 768 x 49,152). The GPU script (bench/gpu/run.py) runs this section too.
CPU section: d=384, m=3,072, float32, as a ratio to the reference.

Each model is put in a trained-like state (about 15 active latents per row), which is when sparse
steps apply; before timing, each architecture's dense and sparse steps are checked against autograd
through its own ``losses`` in float32. Architectures trained by autograd (no sparse or compiled path)
get one row.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from saerad.sae.architectures import ARCHITECTURES, GATED, SAEArchitecture  # noqa: E402
from saerad.sae.model import GatedSAE  # noqa: E402
from saerad.sae.steps import autograd_step  # noqa: E402

TARGET_SAMPLES_PER_S = 1.0e6
TARGET_RATIO = 5.0
LAM = 2.0
TARGET_L0 = 15.0
GRADIENT_TOLERANCE = 1e-3


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


def benchmark_model(arch: SAEArchitecture, d: int, m: int, device: torch.device) -> torch.nn.Module:
    return arch.benchmark_state(arch.build(d, m), TARGET_L0, torch.Generator().manual_seed(0)).to(device)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).split(".")[-1]


def reference_step(sae: GatedSAE, device: torch.device, autocast: bool) -> Callable[[torch.Tensor], Any]:
    opt = torch.optim.Adam(sae.parameters(), lr=1e-7, fused=device.type == "cuda")

    def step(x):
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
            loss = reference_losses(sae, x, LAM)["total"]
        loss.backward()
        opt.step()

    return step


def lean_step_fn(arch: SAEArchitecture, sae, device, dtype, *, sparse: bool, compile: bool):
    """The trainer's step for ``arch`` (fused Adam on CUDA); returns the last StepResult too."""
    opt = torch.optim.Adam(sae.parameters(), lr=1e-7, fused=device.type == "cuda")
    last: dict[str, Any] = {}

    def step(x):
        last["result"] = arch.train_step(sae, x, LAM, compute_dtype=dtype, sparse_max_l0=64.0 if sparse else None,
                                         compile=compile)
        opt.step()

    return step, last


def time_step(step, x, device, warmup: int, steps: int) -> float:
    """Median seconds per step (after ``warmup`` steps, which absorb compilation)."""
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


def gradient_errors(arch: SAEArchitecture, sae, x: torch.Tensor) -> dict[str, float]:
    """Max relative gradient error of the dense and sparse steps vs autograd on ``losses``, float32."""
    for p in sae.parameters():
        p.grad = None
    sae.losses(x, LAM)["total"].backward()
    ref = {n: p.grad.clone() for n, p in sae.named_parameters()}
    errors = {}
    for name, sparse in (("dense", None), ("sparse", 1e9)):
        out = arch.train_step(sae, x, LAM, compute_dtype=torch.float32, sparse_max_l0=sparse)
        if sparse is not None and not out.sparse:
            continue  # no sparse path in this architecture
        errors[name] = max(
            float((p.grad - ref[n]).abs().max() / ref[n].abs().max().clamp_min(1e-30)) for n, p in sae.named_parameters()
        )
    for p in sae.parameters():
        p.grad = None
    return errors


def gemm_flops(device: torch.device, d: int, m: int, batch: int, dtype: torch.dtype, repeats: int) -> float:
    """FLOP/s of the step's largest GEMM shape (batch x d @ d x m), on random data."""
    a = torch.randn(batch, d, device=device, dtype=dtype)
    b = torch.randn(d, m, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    sync(device)
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    sync(device)
    return 2 * batch * d * m * repeats / (time.perf_counter() - start)


def measure(
    device: torch.device, d: int, m: int, batch: int, dtype: torch.dtype, *, warmup: int, steps: int,
    compile: bool = False, references: tuple[str, ...] = ("fp32", "bf16"),
    on_update: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Every architecture's steps and the reference, one shape; ``on_update`` sees the partial result
    after each row (a caller with a time limit keeps what was measured before it hit the limit)."""
    result: dict[str, Any] = {"device": str(device), "d": d, "m": m, "batch": batch, "dtype": dtype_name(dtype),
                              "architectures": list(ARCHITECTURES), "rows": [], "gradient_check": {}}

    def update() -> None:
        if on_update is not None:
            on_update(result)

    gemm = gemm_flops(device, d, m, batch, dtype, repeats=20 if device.type == "cuda" else 2)
    result["gemm_flops"] = gemm
    update()
    x = torch.randn(batch, d, generator=torch.Generator().manual_seed(1)).to(device)
    models = {}
    for name, arch in ARCHITECTURES.items():
        sae = benchmark_model(arch, d, m, device)
        with torch.no_grad():
            result.setdefault("l0", {})[name] = float((sae.encode(x) > 0).sum()) / batch
        errors = gradient_errors(arch, sae, x[: min(batch, 512)])
        result["gradient_check"][name] = {"max_rel_error": errors, "pass": all(v < GRADIENT_TOLERANCE for v in errors.values())}
        models[name] = sae
    update()

    def add_row(step_name: str, arch: SAEArchitecture, fn, **extra: Any) -> None:
        try:
            sec = time_step(fn, x, device, warmup, steps)
        except Exception as exc:  # noqa: BLE001 - a bench row reports failure, the others still run
            result["rows"].append({"step": step_name, "arch": arch.name, "error": f"{type(exc).__name__}: {exc}"})
        else:
            rate = batch / sec
            roofline = gemm / arch.step_flops(d, m)
            result["rows"].append({"step": step_name, "arch": arch.name, "ms_per_step": sec * 1e3,
                                   "samples_per_s": rate, "of_roofline": rate / roofline, **extra})
        update()

    for precision in references:
        add_row(f"reference {precision}", GATED, reference_step(models[GATED.name], device, autocast=precision == "bf16"))
    variants = [("dense", False, False), ("sparse", True, False)] + ([("compiled", False, True)] if compile else [])
    for kind, sparse, compiled in variants:  # compiled last: its compilation is the slowest part
        for name, arch in ARCHITECTURES.items():
            by_autograd = arch.train_step is autograd_step
            if by_autograd and (sparse or compiled):  # no such paths: the same step as dense
                continue
            fn, last = lean_step_fn(arch, models[name], device, dtype, sparse=sparse, compile=compiled)
            add_row(f"{name} {'autograd' if by_autograd else 'lean'} {kind} {dtype_name(dtype)}", arch, fn)
            ran_sparse = getattr(last.get("result"), "sparse", None)
            if sparse and ran_sparse is False:  # the architecture has no sparse path: same as dense
                result["rows"].pop()
                update()
    _summarise(result)
    update()
    return result


def _summarise(result: dict[str, Any]) -> None:
    timed = [r for r in result["rows"] if "samples_per_s" in r]
    ref = next((r["samples_per_s"] for r in timed if r["step"] == "reference fp32"), None)
    best_ref = max((r["samples_per_s"] for r in timed if r["step"].startswith("reference")), default=None)
    for row in timed:
        row["x_reference_fp32"] = row["samples_per_s"] / ref if ref else None
        row["x_best_reference"] = row["samples_per_s"] / best_ref if best_ref else None
    best = {}
    for row in timed:
        if not row["step"].startswith("reference") and row["samples_per_s"] > best.get(row["arch"], {}).get("samples_per_s", 0):
            best[row["arch"]] = row
    result["best"] = {arch: {"step": r["step"], "samples_per_s": r["samples_per_s"], "x_reference_fp32": r["x_reference_fp32"],
                             "x_best_reference": r["x_best_reference"]} for arch, r in best.items()}


def gated_targets(result: dict[str, Any]) -> list[tuple[str, str, bool]]:
    """(target, measured, met) for the gated SAE at the GPU shape."""
    best = result.get("best", {}).get(GATED.name)
    if not best:
        return [(f">= {TARGET_SAMPLES_PER_S / 1e6:.1f} M samples/s", "no gated row", False)]
    out = [(f">= {TARGET_SAMPLES_PER_S / 1e6:.1f} M samples/s", f"{best['samples_per_s'] / 1e6:.3f} M ({best['step']})",
            best["samples_per_s"] >= TARGET_SAMPLES_PER_S)]
    for label, key in (("reference fp32", "x_reference_fp32"), ("best reference", "x_best_reference")):
        if best.get(key):
            out.append((f">= {TARGET_RATIO:.0f}x {label}", f"{best[key]:.2f}x", best[key] >= TARGET_RATIO))
    return out


def _times(ratio: float | None) -> str:
    return f"{ratio:.2f}x" if ratio else "-"


def format_result(result: dict[str, Any], *, targets: bool) -> str:
    lines = [f"d={result['d']}, m={result['m']:,}, batch={result['batch']}, device={result['device']}, "
             f"compute={result['dtype']}"]
    if "l0" in result:
        lines.append("state: L0 " + ", ".join(f"{a} {v:.1f}" for a, v in result["l0"].items()) + " active latents/row")
    for arch, check in result.get("gradient_check", {}).items():
        errs = ", ".join(f"{k} {v:.1e}" for k, v in check["max_rel_error"].items())
        lines.append(f"gradient check {arch} vs autograd (fp32, max rel err): {errs} {'PASS' if check['pass'] else 'MISS'}")
    if "gemm_flops" in result:
        lines.append(f"GEMM rate measured here ({result['dtype']}, {result['batch']}x{result['d']} @ "
                     f"{result['d']}x{result['m']}): {result['gemm_flops'] / 1e12:,.2f} TFLOP/s")
    lines += ["", "| step | ms/step | samples/s | x reference fp32 | x best reference | of roofline |",
              "|---|---:|---:|---:|---:|---:|"]
    for row in result["rows"]:
        if "error" in row:
            lines.append(f"| {row['step']} | FAILED: {row['error'][:120]} | | | | |")
            continue
        lines.append(f"| {row['step']} | {row['ms_per_step']:.2f} | {row['samples_per_s']:,.0f} | "
                     f"{_times(row.get('x_reference_fp32'))} | {_times(row.get('x_best_reference'))} | "
                     f"{row['of_roofline']:.2f} |")
    if targets:
        lines.append("")
        lines += [f"target {t}: {v} {'PASS' if ok else 'MISS'}" for t, v, ok in gated_targets(result)]
    return "\n".join(lines)


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
    print("# SAE training throughput (full step: loss + gradients + Adam)")
    print(f"torch {torch.__version__}, CPU threads {torch.get_num_threads()}, architectures: {', '.join(ARCHITECTURES)}")

    if args.section in ("all", "gpu"):
        device = torch.device(args.device)
        print("\n## GPU section\n")
        if device.type == "cuda" and not torch.cuda.is_available():
            print("d=768, m=49,152, batch 4096: skipped: no CUDA")
        else:
            if device.type == "cuda":
                print(f"GPU: {torch.cuda.get_device_name(device)}")
            result = measure(device, 768, 49_152, args.batch_size or 4096, torch.bfloat16,
                             warmup=3 if device.type == "cuda" else 1, steps=args.steps or 20,
                             compile=not args.no_compile and device.type == "cuda")
            print(format_result(result, targets=True))
    if args.section in ("all", "cpu"):
        print("\n## CPU section\n")
        result = measure(torch.device("cpu"), 384, 3072, args.batch_size or 2048, torch.float32, warmup=1,
                         steps=args.steps or 5, references=("fp32",))
        print(format_result(result, targets=False))


if __name__ == "__main__":
    main()
