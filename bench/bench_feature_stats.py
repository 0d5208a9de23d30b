"""Throughput and memory of the streaming feature statistics (saerad.features.stats).

Random class tokens through a random gated SAE whose gates are set for ~``--l0`` active features per
image (the regime of a trained SAE), at the paper's width (768 x 64 = 49,152 features). Prints a
Markdown table: images/s of ``sae.encode`` alone and of encode + statistics, peak RSS, and whether
the quantiles stayed exact. The target is that the statistics add little to the encode cost and that
memory does not grow with N (it is bounded by d_sae x top_k plus the non-zeros).

    python bench/bench_feature_stats.py --n 16384            # CPU, a few minutes on 2 cores
    python bench/bench_feature_stats.py --n 377000 --device cuda
"""

from __future__ import annotations

import argparse
import resource
import time

import torch

from saerad.features.stats import compute_activation_stats
from saerad.sae.model import GatedSAE, GatedSAEConfig


def make_sae(d_in: int, d_sae: int, l0: float, device: str) -> GatedSAE:
    from scipy.stats import norm

    g = torch.Generator().manual_seed(0)
    sae = GatedSAE(GatedSAEConfig(d_in=d_in, d_sae=d_sae)).init_weights(generator=g)
    with torch.no_grad():
        sae.W_enc.mul_(10.0)  # unit-norm encoder columns: z ~ N(0, |x|^2 / d_in) per feature
        sae.b_gate.fill_(-float(norm.isf(l0 / d_sae)))  # P(z > -b_gate) = l0 / d_sae for x ~ N(0, I)
    return sae.to(device)


def encode_only(sae, x, batch_size):
    with torch.inference_mode():
        for start in range(0, len(x), batch_size):
            f = sae.encode(x[start : start + batch_size].to(next(sae.parameters()).device))
            float(f[0, 0])  # synchronise


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=16384)
    ap.add_argument("--d-in", type=int, default=768)
    ap.add_argument("--expansion", type=int, default=64)
    ap.add_argument("--l0", type=float, default=15.0)
    ap.add_argument("--batch-size", type=int, default=4096)
    ap.add_argument("--top-k", type=int, default=16)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    d_sae = args.d_in * args.expansion
    sae = make_sae(args.d_in, d_sae, args.l0, args.device)
    x = torch.randn(args.n, args.d_in, generator=torch.Generator().manual_seed(1))

    t0 = time.perf_counter()
    encode_only(sae, x, args.batch_size)
    t_encode = time.perf_counter() - t0
    t0 = time.perf_counter()
    stats = compute_activation_stats(sae, x, top_k=args.top_k, batch_size=args.batch_size)
    t_stats = time.perf_counter() - t0
    rss_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6

    l0 = stats.count.sum() / stats.n
    overhead = t_stats / t_encode - 1
    print("| N | d_sae | device | mean L0 | encode only (img/s) | encode + stats (img/s) | stats overhead | peak RSS (GB) | exact quantiles |")
    print("|---|---|---|---|---|---|---|---|---|")
    print(
        f"| {args.n} | {d_sae} | {args.device} | {l0:.1f} | {args.n / t_encode:,.0f} | {args.n / t_stats:,.0f} | "
        f"{overhead:+.0%} | {rss_gb:.2f} | {stats.exact_quantiles} |"
    )
    verdict = "PASS" if overhead <= 0.5 else "MISS"
    print(f"\ntarget: statistics add <= 50% to the encode time: {verdict} ({overhead:+.0%})")


if __name__ == "__main__":
    main()
