"""Gated-SAE quality on real class tokens: covid-cxr, patient-disjoint held-out split.

    python bench/bench_sae_quality.py                       # default grid, CPU
    python bench/bench_sae_quality.py --expansions 16 --lambdas 0.5 1 --steps 3000

Input: ``saerad embed --dataset covid-cxr`` output (default ``runs/covid-cxr/embeddings.safetensors``;
files of augmented views, ids ``<id>#augK``, are added with ``--embeddings`` or picked up from
``runs/covid-cxr/*aug*.safetensors``). Patients come from ``saerad.datasets.load_dataset``; every
view of a held-out patient's images is kept out of training and metrics use the original views only.

Reports explained variance, mean L0, dead fraction and shrinkage on the held-out vectors for a grid
of expansions x lambdas; goal: explained variance >= 0.90 at mean L0 <= 16. For scale, the row
"PCA-16" is the held-out EV of the best 16-dimensional linear code fitted on the training vectors.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from saerad.datasets import load_dataset  # noqa: E402
from saerad.sae.data import ResidentBatches, base_id  # noqa: E402
from saerad.sae.metrics import evaluate_sae  # noqa: E402
from saerad.sae.run import load_embedding_files, make_split  # noqa: E402
from saerad.sae.trainer import SAETrainer, TrainConfig  # noqa: E402

GOAL_EV, GOAL_L0 = 0.90, 16.0


def default_embedding_files() -> list[Path]:
    folder = REPO / "runs" / "covid-cxr"
    main = folder / "embeddings.safetensors"
    extra = sorted(p for p in folder.glob("*aug*.safetensors") if p != main)
    return [main, *extra]


def pca_explained_variance(train: torch.Tensor, val: torch.Tensor, k: int) -> float:
    mean = train.double().mean(0)
    _, _, vh = torch.linalg.svd(train.double() - mean, full_matrices=False)
    basis = vh[:k]
    val_c = val.double() - mean
    resid = val_c - (val_c @ basis.T) @ basis
    return 1.0 - float(resid.pow(2).sum()) / float((val.double() - val.double().mean(0)).pow(2).sum())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--embeddings", type=Path, nargs="*", default=None)
    ap.add_argument("--root", type=Path, default=REPO.parent / "shared" / "data" / "covid-cxr")
    ap.add_argument("--expansions", type=float, nargs="+", default=[8, 16, 64])
    ap.add_argument("--lambdas", type=float, nargs="+", default=[0.5, 1.0, 2.0])
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--batch-size", type=int, default=512)
    ap.add_argument("--lr", type=float, default=TrainConfig.lr)
    ap.add_argument("--val-fraction", type=float, default=0.2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()

    files = args.embeddings or [p for p in default_embedding_files() if p.is_file()]
    if not files:
        sys.exit(f"no embeddings: run `saerad embed --dataset covid-cxr --root {args.root} "
                 f"--out runs/covid-cxr/embeddings.safetensors` first")
    emb = load_embedding_files(files)
    patient_of = {iid: s.patient_id for s in load_dataset("covid-cxr", args.root) for iid in s.image_ids}
    unknown = {base_id(i) for i in emb.ids} - set(patient_of)
    split = make_split(emb.ids, val_fraction=args.val_fraction, seed=args.seed, groups=patient_of)
    train, val = emb.tokens[split.train], emb.tokens[split.val]
    n_aug = sum("#" in emb.ids[i] for i in split.train)
    val_patients = {patient_of.get(base_id(emb.ids[i])) for i in split.val}
    train_patients = {patient_of.get(base_id(emb.ids[i])) for i in split.train}
    assert not (val_patients & train_patients - {None}), "patient leak"

    print("# Gated SAE quality: covid-cxr class tokens, patient-disjoint held-out split\n")
    print(f"files: {', '.join(str(f) for f in files)}; encoder {emb.encoder!r}, d={emb.dim}")
    print(f"train: {len(split.train)} vectors ({n_aug} augmented views) from {len(train_patients)} patients; "
          f"held-out: {len(split.val)} original images from {len(val_patients)} patients"
          + (f"; {len(unknown)} images without a patient id (own group)" if unknown else ""))
    print(f"steps {args.steps}, batch {args.batch_size}, lr {args.lr}, device {args.device}\n")
    print(f"PCA-16 held-out EV (linear reference): {pca_explained_variance(train, val, 16):.3f}\n")

    print("| expansion | m | lambda | held-out EV | held-out L0 | dead (held-out) | shrinkage | train EV | train L0 "
          "| goal | minutes |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|")
    results = []
    for expansion in args.expansions:
        for lam in args.lambdas:
            cfg = TrainConfig(steps=args.steps, batch_size=args.batch_size, lr=args.lr, lam=lam, seed=args.seed)
            start = time.perf_counter()
            trainer = SAETrainer.create(train, int(expansion * emb.dim), cfg, device=args.device)
            trainer.fit(ResidentBatches(train.to(trainer.device), cfg.batch_size, seed=cfg.seed), progress=False)
            sae = trainer.export()
            held, tr = evaluate_sae(sae, val), evaluate_sae(sae, train)
            minutes = (time.perf_counter() - start) / 60
            ok = held.explained_variance >= GOAL_EV and held.l0 <= GOAL_L0
            results.append((expansion, lam, held, ok))
            print(f"| {expansion:g} | {sae.cfg.d_sae} | {lam:g} | {held.explained_variance:.3f} | {held.l0:.1f} | "
                  f"{held.dead_fraction:.2f} | {held.shrinkage:.3f} | {tr.explained_variance:.3f} | {tr.l0:.1f} | "
                  f"{'PASS' if ok else 'MISS'} | {minutes:.1f} |", flush=True)
    within = [r for r in results if r[2].l0 <= GOAL_L0]
    print()
    if within:
        exp, lam, best, ok = max(within, key=lambda r: r[2].explained_variance)
        print(f"best at L0 <= {GOAL_L0:g}: expansion {exp:g}, lambda {lam:g}: EV {best.explained_variance:.3f}, "
              f"L0 {best.l0:.1f} -> goal EV >= {GOAL_EV} at L0 <= {GOAL_L0:g}: {'PASS' if ok else 'MISS'}")
    else:
        print(f"no configuration reached L0 <= {GOAL_L0:g}: goal MISS (raise lambda)")


if __name__ == "__main__":
    main()
