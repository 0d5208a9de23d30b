"""Counterfactual checks of the diffusion model on held-out images of a dataset (issues 5 and 14).

Held-out = the test patients of :mod:`saerad.datasets.split`, which ``saerad train-diffusion``
leaves out, so the diffusion model never saw these images. Maps are restricted to the body
(:mod:`saerad.heatmaps.body`) as in reports.

Trials per image (one inversion, one sampling batch per image):
- remove: the ``--remove`` active features with the largest contribution ``f_i * ||W_dec[i]||``;
- add: ``--add`` features inactive on the image, active on 2-50% of training images, with the
  largest edit size ``q99_i * ||W_dec[i]||`` (q99 from the dictionary, else from the embeddings).

Checks (targets from issue 5):
- composition: SSIM(reconstruction, input) at the model resolution (128 px), mean >= 0.90;
- effectiveness: re-encoded target activation moves the intended way vs the re-encoded
  reconstruction in >= 90% of >= 50 trials;
- selectivity: median share of the target in the total |delta f| >= 0.5;
- latency: one image, 4 features localised (encode + inversion + batch of 5 + maps), 50 DDIM steps:
  128 px default model on 2 CPU threads <= 60 s; 256 px on CUDA <= 2 s (when CUDA exists; random
  weights of the "small" architecture at 256 px: latency does not depend on the weights).

    python bench/bench_intervention.py --diffusion runs/diffusion/covid-128/diffusion \\
        --bundle runs/bundles/covid --embeddings runs/covid-cxr/embeddings.safetensors
    python bench/bench_intervention.py --dataset nih-cxr14 --bundle runs/bundles/nih \\
        --diffusion runs/diffusion/nih-128/diffusion --embeddings runs/bundles/nih.work/embeddings.safetensors
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

# OpenMP threads that spin while waiting thrash on a shared CPU: measured here, 4 features localised
# took 200 s with 2 threads (another process busy on one core) and 11 s with passive waiting.
# Must be set before torch loads its OpenMP runtime; an explicit setting by the caller wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from saerad.diffusion.data import image_index  # noqa: E402
from saerad.diffusion.intervene import Edit, intervene  # noqa: E402
from saerad.diffusion.model import load_diffusion, read_metadata  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def find_sae_parts(args):
    """(sae, dictionary or None, source) from --sae, --bundle, or the known run directories."""
    from saerad.bundle import Bundle
    from saerad.sae.architectures import load_sae

    if args.sae:
        return load_sae(args.sae).eval(), None, str(args.sae)
    candidates = [args.bundle] if args.bundle else [REPO / "runs/bundles/covid", None]
    for candidate in candidates:
        try:
            bundle = Bundle.load(candidate)
        except Exception as exc:  # noqa: BLE001 - try the next candidate, say why
            print(f"(bundle {candidate or 'default'} not usable: {exc})")
            continue
        return bundle.sae.eval(), bundle.dictionary, str(bundle.path)
    raise SystemExit("no SAE found: pass --bundle or --sae")


def quantile_levels(sae, tokens: torch.Tensor, dictionary, q: str = "0.99"):
    """Per-feature (q99 level, training frequency): from the dictionary when it has them."""
    with torch.no_grad():
        f = sae.encode(tokens).numpy()
    active = f > 0
    freq = active.mean(0)
    levels = np.zeros(f.shape[1])
    for i in range(f.shape[1]):
        stats = None
        if dictionary is not None:
            try:
                stats = dictionary.get(i)
            except Exception:  # noqa: BLE001
                stats = None
        if stats is not None and stats.quantiles.get(q):
            levels[i] = stats.quantiles[q]
        elif active[:, i].any():
            levels[i] = np.quantile(f[active[:, i], i], float(q))
    return levels, freq


def choose_edits(codes: np.ndarray, dec_norm: np.ndarray, levels: np.ndarray, freq: np.ndarray,
                 n_remove: int, n_add: int, min_freq: float) -> list[Edit]:
    contribution = codes * dec_norm
    remove = [int(i) for i in np.argsort(-contribution)[:n_remove] if codes[i] > 0]
    candidates = np.where((codes == 0) & (freq >= min_freq) & (freq <= 0.5) & (levels > 0))[0]
    add = candidates[np.argsort(-(levels[candidates] * dec_norm[candidates]))][:n_add]
    return [Edit((i,), "remove") for i in remove] + [Edit((int(i),), "add") for i in add]


def latency(model, sae, encoder, image01, steps: int, n_features: int, repeats: int) -> float:
    codes = sae.encode(encoder.encode_images([image01]))[0]
    top = [int(i) for i in torch.argsort(-codes)[:n_features]]
    edits = [Edit((i,), "remove") for i in top]
    best = float("inf")
    for _ in range(repeats):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        intervene(model, sae, encoder, image01, edits, steps=steps, measure=False)
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--diffusion", type=Path, default=REPO / "runs/diffusion/covid-128/diffusion")
    ap.add_argument("--bundle", type=Path, default=None, help="bundle with SAE + dictionary")
    ap.add_argument("--sae", type=Path, default=None, help="SAE directory (instead of a bundle)")
    ap.add_argument("--embeddings", type=Path, default=None, help="class tokens of the dataset (for add levels)")
    ap.add_argument("--dataset", default="covid-cxr", help="covid-cxr | nih-cxr14 | folder | ...")
    ap.add_argument("--root", type=Path, default=None,
                    help="dataset folder (default: $SAERAD_SHARED_DATA/DATASET, else ../shared/data/DATASET)")
    ap.add_argument("--images", type=int, default=20, help="held-out images to use")
    ap.add_argument("--remove", type=int, default=2)
    ap.add_argument("--add", type=int, default=1)
    ap.add_argument("--min-freq", type=float, default=0.02, help="add: training frequency of candidates")
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--edit-guidance", type=float, default=1.0,
                    help="amplify each edit's effect on the denoiser (1 = plain sampling under the edited token)")
    ap.add_argument("--threads", type=int, default=1, help="CPU threads for the quality trials")
    ap.add_argument("--latency-threads", type=int, default=2, help="CPU threads for the latency check")
    ap.add_argument("--latency-repeats", type=int, default=2)
    ap.add_argument("--skip-quality", action="store_true")
    ap.add_argument("--json-out", type=Path, default=None)
    args = ap.parse_args()

    from saerad.encoders import load_encoder
    from saerad.encoders.store import EmbeddingSet
    from saerad.imaging import load_xray

    torch.set_num_threads(args.threads)
    model = load_diffusion(args.diffusion)
    meta = read_metadata(args.diffusion)
    sae, dictionary, sae_source = find_sae_parts(args)
    encoder = load_encoder("default")
    root = args.root or Path(os.environ.get("SAERAD_SHARED_DATA", REPO.parent / "shared" / "data")) / args.dataset
    index = image_index(args.dataset, root)
    held = sorted(i for i, (_, _, role) in index.items() if role == "test")
    rng = np.random.default_rng(0)
    chosen = [held[k] for k in sorted(rng.choice(len(held), size=min(args.images, len(held)), replace=False))]
    results: dict = {"dataset": args.dataset, "diffusion": str(args.diffusion), "diffusion_meta": meta, "sae": sae_source,
                     "held_out_images": len(held), "images": len(chosen), "steps": args.steps}
    rows = []

    if not args.skip_quality:
        if args.embeddings and args.embeddings.is_file():
            emb = EmbeddingSet.load(args.embeddings)
            train_ids = [i for i in emb.ids if "#aug" not in i and i in index and index[i][2] != "test"]
            ref_tokens = emb.select(train_ids).tokens
        else:  # encode the training images (slow on CPU, ~30 s)
            train_ids = [i for i, (_, _, role) in index.items() if role != "test"]
            ref_tokens = encoder.encode_images([load_xray(index[i][0]).pixels for i in train_ids])
        levels, freq = quantile_levels(sae, ref_tokens, dictionary)
        dec_norm = sae.W_dec.detach().norm(dim=1).numpy()
        ssims, psnrs, trials = [], [], []
        t0 = time.perf_counter()
        for n, image_id in enumerate(chosen):
            pixels = load_xray(index[image_id][0]).pixels
            token = encoder.encode_images([pixels])[0]
            with torch.no_grad():
                codes = sae.encode(token[None])[0].numpy()
            edits = choose_edits(codes, dec_norm, levels, freq, args.remove, args.add, args.min_freq)
            result = intervene(model, sae, encoder, pixels, edits, add_level=lambda i: float(levels[i]),
                               steps=args.steps, token=token, edit_guidance=args.edit_guidance)
            ssims.append(result.metrics["composition"]["ssim"])
            psnrs.append(result.metrics["composition"]["psnr"])
            for e in result.metrics["edits"]:
                trials.append({"image": n, **{k: e[k] for k in ("edit", "mode", "before", "after", "moved", "share",
                                                                 "boxes", "map_peak")}})
            print(f"[{n + 1}/{len(chosen)}] ssim {ssims[-1]:.3f} moved "
                  f"{sum(t['moved'] for t in trials)}/{len(trials)}  ({time.perf_counter() - t0:.0f} s)", flush=True)
        eff = float(np.mean([t["moved"] for t in trials])) if trials else float("nan")
        by_mode = {m: float(np.mean([t["moved"] for t in trials if t["mode"] == m]))
                   for m in ("remove", "add") if any(t["mode"] == m for t in trials)}
        sel = float(statistics.median([t["share"] for t in trials])) if trials else float("nan")
        results.update(ssim_mean=float(np.mean(ssims)), ssim_min=float(np.min(ssims)), psnr_mean=float(np.mean(psnrs)),
                       effectiveness=eff, effectiveness_by_mode=by_mode, selectivity_median=sel, trials=trials,
                       with_boxes=float(np.mean([t["boxes"] > 0 for t in trials])) if trials else float("nan"))
        rows += [
            ("composition: mean SSIM(rec, input), 128 px", f"{np.mean(ssims):.3f} (min {np.min(ssims):.3f}, "
             f"PSNR {np.mean(psnrs):.1f} dB, n={len(ssims)})", ">= 0.90", np.mean(ssims) >= 0.90),
            ("effectiveness: target moved as intended", f"{eff:.1%} of {len(trials)} trials "
             f"({', '.join(f'{k} {v:.0%}' for k, v in by_mode.items())})", ">= 90% over >= 50",
             eff >= 0.90 and len(trials) >= 50),
            ("selectivity: median target share of |delta f|", f"{sel:.3f}", ">= 0.5", sel >= 0.5),
        ]

    # Latency, 128 px default model on CPU threads.
    sample = load_xray(index[chosen[0]][0]).pixels
    torch.set_num_threads(args.latency_threads)
    cpu_s = latency(model, sae, encoder, sample, args.steps, 4, args.latency_repeats)
    load = os.getloadavg()[0]
    results.update(latency_cpu_s=cpu_s, cpu_threads=args.latency_threads, load_average=load)
    rows.append((f"latency: 4 features localised, {model.resolution} px, {args.latency_threads} CPU threads",
                 f"{cpu_s:.1f} s (1-min load average {load:.1f} on {os.cpu_count()} cores)", "<= 60 s", cpu_s <= 60))
    if torch.cuda.is_available():
        from saerad.diffusion.model import TokenConditionedUNet

        big = TokenConditionedUNet.from_architecture(str(meta.get("architecture", "small")), token_dim=encoder.dim,
                                                     resolution=256).cuda().eval()
        gpu_encoder = load_encoder("default", device="cuda")
        gpu_s = latency(big, sae.cuda(), gpu_encoder, sample, args.steps, 4, 3)
        sae.cpu()
        results["latency_cuda_s"] = gpu_s
        rows.append(("latency: 4 features localised, 256 px, CUDA", f"{gpu_s:.2f} s ({torch.cuda.get_device_name()})",
                     "<= 2 s", gpu_s <= 2.0))
    else:
        rows.append(("latency: 4 features localised, 256 px, CUDA", "not measured: no CUDA device", "<= 2 s", None))

    print()
    print(f"{args.dataset}; diffusion model: {args.diffusion} ({meta.get('steps', '?')} steps, {meta.get('device', '?')}, "
          f"final loss {meta.get('final_loss', float('nan')):.4f}); SAE: {sae_source}; "
          f"{len(chosen)} of {len(held)} held-out images; {args.steps} DDIM steps; edit guidance {args.edit_guidance}")
    print()
    print("| check | measured | target | result |")
    print("|---|---|---|---|")
    for name, value, target, ok in rows:
        verdict = "BLOCKED" if ok is None else ("PASS" if ok else "MISS")
        print(f"| {name} | {value} | {target} | {verdict} |")
    if args.json_out:
        args.json_out.write_text(json.dumps(results, indent=2, default=float), encoding="utf-8")


if __name__ == "__main__":
    main()
