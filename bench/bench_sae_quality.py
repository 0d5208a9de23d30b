"""Gated-SAE quality on real class tokens: covid-cxr, patient-disjoint held-out split.

    python bench/bench_sae_quality.py                       # default grid, CPU
    python bench/bench_sae_quality.py --expansions 16 --lambdas 0.5 1 --steps 3000
    python bench/bench_sae_quality.py --expansions 0.5 --target-l0 14 15   # lambda found by the controller

Input: ``saerad embed --dataset covid-cxr`` output (default ``runs/covid-cxr/embeddings.safetensors``;
files of augmented views, ids ``<id>#augK``, are added with ``--embeddings`` or picked up from
``runs/covid-cxr/*aug*.safetensors``). Patients come from ``saerad.datasets.load_dataset``; every
view of a held-out patient's images is kept out of training and metrics use the original views only.

The held-out patients are drawn by :func:`saerad.datasets.split.embedding_roles` (a hash of the
patient id, salted by the seed), as ``saerad train-sae`` draws them.

Reports explained variance, mean L0, dead fraction and shrinkage on the held-out vectors for a grid
of expansions x lambdas; goal: explained variance >= 0.90 at mean L0 <= 16. For scale, the row
"PCA-16" is the held-out EV of the best 16-dimensional linear code fitted on the training vectors.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from saerad.datasets import load_dataset  # noqa: E402
from saerad.datasets.ids import base_id  # noqa: E402
from saerad.datasets.split import HELD_OUT, TRAIN, embedding_roles, vector_rows  # noqa: E402
from saerad.sae.data import ResidentBatches  # noqa: E402
from saerad.sae.metrics import evaluate_sae  # noqa: E402
from saerad.sae.model import sae_width  # noqa: E402
from saerad.sae.run import load_embedding_files  # noqa: E402
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
    ap.add_argument("--expansions", type=float, nargs="+", default=[0.5, 1, 2, 8])
    ap.add_argument("--lambdas", type=float, nargs="+", default=[0.8, 1.0, 1.5])
    ap.add_argument("--target-l0", type=float, nargs="+", default=None,
                    help="rows per target training L0 (controller; --lambdas[0] is the start) instead of per lambda")
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--batch-size", type=int, default=512)
    ap.add_argument("--lr", type=float, default=TrainConfig.lr)
    ap.add_argument("--val-fraction", type=float, default=0.2)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0], help="split + init seeds; rows show the mean")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()

    files = args.embeddings or [p for p in default_embedding_files() if p.is_file()]
    if not files:
        sys.exit(f"no embeddings: run `saerad embed --dataset covid-cxr --root {args.root} "
                 f"--out runs/covid-cxr/embeddings.safetensors` first")
    emb = load_embedding_files(files)
    patient_of = {iid: s.patient_id for s in load_dataset("covid-cxr", args.root) for iid in s.image_ids}
    unknown = {base_id(i) for i in emb.ids} - set(patient_of)

    print("# Gated SAE quality: covid-cxr class tokens, patient-disjoint held-out split\n")
    print(f"files: {', '.join(str(f) for f in files)}; encoder {emb.encoder!r}, d={emb.dim}"
          + (f"; {len(unknown)} images without a patient id (own group)" if unknown else ""))
    splits = {}
    for seed in args.seeds:
        roles = embedding_roles(emb.ids, held_out_fraction=args.val_fraction, salt=str(seed) if seed else "",
                                groups=patient_of)
        rows = vector_rows(emb.ids, roles)
        val_patients = {patient_of.get(base_id(emb.ids[i])) for i in rows[HELD_OUT]}
        train_patients = {patient_of.get(base_id(emb.ids[i])) for i in rows[TRAIN]}
        assert not (val_patients & train_patients - {None}), "patient leak"
        n_aug = sum("#" in emb.ids[i] for i in rows[TRAIN])
        train, val = emb.tokens[rows[TRAIN]], emb.tokens[rows[HELD_OUT]]
        splits[seed] = (train, val)
        print(f"seed {seed}: train {len(rows[TRAIN])} vectors ({n_aug} augmented views) from {len(train_patients)} "
              f"patients; held-out {len(rows[HELD_OUT])} original images from {len(val_patients)} patients; "
              f"PCA-16 held-out EV (linear reference) {pca_explained_variance(train, val, 16):.3f}")
    print(f"\nsteps {args.steps}, batch {args.batch_size}, lr {args.lr}, device {args.device}; "
          f"values are means over seeds {args.seeds}\n")

    print(f"| expansion | m | {'target L0 (final lambda)' if args.target_l0 else 'lambda'} | held-out EV | held-out L0 | dead (held-out) | shrinkage | train EV | train L0 "
          "| goal | minutes |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|")
    results = []
    settings = [(args.lambdas[0], t) for t in args.target_l0] if args.target_l0 else [(lam, None) for lam in args.lambdas]
    for expansion in args.expansions:
        for lam, target in settings:
            start = time.perf_counter()
            runs, final_lams = [], []
            for seed, (train, val) in splits.items():
                cfg = TrainConfig(steps=args.steps, batch_size=args.batch_size, lr=args.lr, lam=lam, seed=seed,
                                  target_l0=target)
                trainer = SAETrainer.create(train, sae_width(emb.dim, expansion), cfg, device=args.device)
                trainer.fit(ResidentBatches(train.to(trainer.device), cfg.batch_size, seed=seed), progress=False)
                sae = trainer.export()
                runs.append((evaluate_sae(sae, val), evaluate_sae(sae, train)))
                final_lams.append(trainer.lam_at(cfg.steps))
            minutes = (time.perf_counter() - start) / 60

            def mean(attr: str, which: int, runs=runs) -> float:
                return statistics.fmean(getattr(r[which], attr) for r in runs)

            ev, l0 = mean("explained_variance", 0), mean("l0", 0)
            ok = ev >= GOAL_EV and l0 <= GOAL_L0
            spread = f" ± {statistics.stdev(r[0].explained_variance for r in runs):.3f}" if len(runs) > 1 else ""
            setting = f"{target:g} ({statistics.fmean(final_lams):.2f})" if target else f"{lam:g}"
            results.append((expansion, setting, ev, l0, ok))
            print(f"| {expansion:g} | {sae_width(emb.dim, expansion)} | {setting} | {ev:.4f}{spread} | {l0:.1f} | "
                  f"{mean('dead_fraction', 0):.2f} | {mean('shrinkage', 0):.3f} | {mean('explained_variance', 1):.3f} | "
                  f"{mean('l0', 1):.1f} | {'PASS' if ok else 'MISS'} | {minutes:.1f} |", flush=True)
    within = [r for r in results if r[3] <= GOAL_L0]
    print()
    if within:
        exp, setting, ev, l0, ok = max(within, key=lambda r: r[2])
        print(f"best at L0 <= {GOAL_L0:g}: expansion {exp:g}, {'target L0' if args.target_l0 else 'lambda'} {setting}: EV {ev:.4f}, L0 {l0:.1f} "
              f"-> goal EV >= {GOAL_EV} at L0 <= {GOAL_L0:g}: {'PASS' if ok else 'MISS'}")
    else:
        print(f"no configuration reached L0 <= {GOAL_L0:g}: goal MISS (raise lambda)")


if __name__ == "__main__":
    main()
