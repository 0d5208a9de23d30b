"""Report quality on covid-cxr (issue 4 "Quality"): SAE reports vs normal template vs retrieval.

Protocol
- Data: ``../shared/data/covid-cxr``; reference text = ``clinical_notes`` (case notes, not radiology
  reports); only images with notes are scored.
- Patient-disjoint K-fold cross-validation (patients shuffled with --seed, fold = rank mod K). In
  each fold the build recipe of ``saerad build`` runs on the training patients only: patient-disjoint
  inner split (SAE on the inner-train images, descriptions scored on the inner held-out images),
  extractive descriptions, default feature selection. Test images get:
  - SAE: the deterministic composer's findings (same selection + composer code as ``Reporter``);
  - normal template: one fixed normal findings text;
  - retrieval: the notes of the most cosine-similar training class token that has notes.
- Metrics over all scored images (each predicted once, by the fold that held it out):
  CheXpert-rule F1 (14 conditions, uncertain = positive; micro and macro) and BLEU-4 / ROUGE-L via
  ``saerad.eval``; mean active features per image; share of described features whose held-out
  description score (AUROC) is above chance.
- Latency: ``Reporter.report(path)`` (decode + encode + SAE + compose, no localisation) on one image
  at a time, after loading and one warm-up, over --latency-images images, for each torch thread
  count of --latency-threads (2 = both cores of the target machine; 1 shows what a machine shared
  with other jobs gives, where 2 threads oversubscribe the cores).

Run: ``python bench/bench_report_quality.py [--bundle runs/bundles/covid] [--embeddings FILE]``
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
GOAL_LATENCY_MS = 300.0


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--root", type=Path, default=REPO.parent / "shared" / "data" / "covid-cxr")
    p.add_argument("--embeddings", type=Path, default=None, help="class tokens of the covid-cxr images")
    p.add_argument("--bundle", type=Path, default=REPO / "runs" / "bundles" / "covid", help="for the latency run")
    p.add_argument("--encoder", default="default")
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--expansion", type=float, default=None, help="default: what `saerad build` picks")
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--lam", type=float, default=None)
    p.add_argument("--top-k", type=int, default=None)
    p.add_argument("--include-unusable", action="store_true",
                   help="write findings from described features whose held-out score is below the bar too")
    p.add_argument("--val-fraction", type=float, default=0.15)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--describer-opt", action="append", default=[], metavar="KEY=VALUE",
                   help="extractive describer option, e.g. max_pvalue=0.05 (repeatable)")
    p.add_argument("--threads", type=int, default=1, help="torch threads for the CV part (1 avoids oversubscription on a shared machine)")
    p.add_argument("--latency-threads", default="2,1", help="comma-separated torch thread counts to time")
    p.add_argument("--latency-images", type=int, default=40)
    p.add_argument("--out", type=Path, default=REPO / "runs" / "bench" / "report_quality.json")
    return p.parse_args()


def find_embeddings(args) -> Path:
    candidates = [args.embeddings, REPO / "runs" / "covid-cxr" / "embeddings.safetensors",
                  Path(f"{args.bundle}.work") / "embeddings.safetensors"]
    for path in candidates:
        if path is not None and Path(path).is_file():
            return Path(path)
    sys.exit("no covid-cxr embeddings found: run `saerad build --dataset covid-cxr ...` or pass --embeddings")


def describer_options(args) -> dict:
    from saerad.build import parse_describer_options

    return parse_describer_options(args.describer_opt)


def patient_folds(studies, k: int, seed: int) -> dict[str, int]:
    patients = sorted({s.patient_id for s in studies})
    order = np.random.default_rng(seed).permutation(len(patients))
    return {patients[j]: rank % k for rank, j in enumerate(order)}


def run_fold(fold, studies, emb, fold_of, args, log):
    from saerad.build import auto_expansion, fit_sae, sae_train_config
    from saerad.datasets.ids import base_id
    from saerad.eval.baselines import retrieval_reports
    from saerad.labeling import build_dictionary
    from saerad.labeling.extractive import ExtractiveDescriber
    from saerad.report.composer import compose
    from saerad.report.select import FeatureSelector
    from saerad.sae.data import split_ids
    from saerad.sae.model import sae_width

    by_image = {i: s for s in studies for i in s.image_ids}
    patient_of = {i: s.patient_id for i, s in by_image.items()}
    rows = [i for i in emb.ids if base_id(i) in by_image]
    train_ids = [i for i in rows if fold_of[patient_of[base_id(i)]] != fold]
    test_ids = [i for i in rows if fold_of[patient_of[base_id(i)]] == fold and base_id(i) == i
                and by_image[i].findings]
    inner = split_ids(train_ids, val_fraction=args.val_fraction, seed=args.seed, groups=patient_of)
    sae_ids = [train_ids[i] for i in inner.train]
    val_ids = [train_ids[i] for i in inner.val]
    n_images = len({base_id(i) for i in rows})
    expansion = args.expansion or auto_expansion(n_images, emb.dim)
    train = emb.select(sae_ids)
    tcfg = sae_train_config(len(sae_ids), steps=args.steps, lam=args.lam, batch_size=None, seed=args.seed)
    t0 = time.perf_counter()
    sae = fit_sae(train.tokens, sae_width(train.dim, expansion), tcfg, progress=False)
    log.info("fold %d: SAE %d -> %d on %d vectors in %.0f s", fold, train.dim, sae_width(train.dim, expansion),
             len(sae_ids), time.perf_counter() - t0)
    describer = ExtractiveDescriber(**describer_options(args))
    dictionary = build_dictionary(sae, train.originals(), studies, describer=describer,
                                  held_out=emb.select(val_ids).originals(), progress=False)
    selector = FeatureSelector.from_parts(dictionary, sae)

    test = emb.select(test_ids)
    with torch.inference_mode():
        acts = sae.encode(test.tokens).numpy()
    sae_reports, n_active, n_used = [], [], []
    for row in acts:
        sel = selector.select(row, top_k=args.top_k, usable_only=not args.include_unusable)
        sae_reports.append(" ".join(s.text for s in compose(sel.chosen).sentences))
        n_active.append(len(sel.active))
        n_used.append(len(sel.chosen))

    # retrieval: notes of the nearest training image (cosine on class tokens), another patient
    pool = [i for i in train_ids if base_id(i) == i and by_image[i].findings]
    retrieval, _ = retrieval_reports(test_ids, [patient_of[i] for i in test_ids], pool,
                                     [patient_of[i] for i in pool], [by_image[i].findings for i in pool], emb)

    scores = [f.description_score for f in dictionary.features if f.description]
    alive = sum(1 for f in dictionary.features if f.frequency > 0)
    return {
        "ids": test_ids,
        "refs": [by_image[i].findings for i in test_ids],
        "sae": sae_reports,
        "retrieval": retrieval,
        "n_active": n_active,
        "n_used": n_used,
        "features": {
            "d_sae": len(dictionary.features),
            "alive": alive,
            "described": len(scores),
            "scored": sum(1 for s in scores if s is not None),
            "above_chance": sum(1 for s in scores if s is not None and s > 0.5),
            "usable": sum(1 for f in dictionary.features if f.usable),
        },
        "expansion": expansion,
        "steps": tcfg.steps,
    }


def score(preds: list[str], refs: list[str]) -> dict[str, float]:
    from saerad.eval.f1 import label_f1
    from saerad.eval.text_metrics import pair_stats, text_metrics
    from saerad.radtext import label_reports

    f1 = label_f1(label_reports(refs), label_reports(preds), uncertain_as=1)
    text = text_metrics(pair_stats(preds, refs), np.zeros((0, len(refs))))
    return {"micro_f1": f1["micro_14"], "macro_f1": f1["macro_14"],
            "bleu4": text["BLEU-4"]["value"], "rouge_l": text["ROUGE-L"]["value"]}


def latency(bundle: Path, images: list[Path], n: int, threads: int) -> dict[str, float] | None:
    from saerad.pipeline import Reporter

    if n <= 0 or not (bundle / "manifest.json").is_file():
        return None
    torch.set_num_threads(threads)
    reporter = Reporter.from_bundle(bundle)
    reporter.report(images[0])  # warm-up
    times = []
    for path in images[:n]:
        t = time.perf_counter()
        reporter.report(path)
        times.append((time.perf_counter() - t) * 1000)
    times.sort()
    return {"p50_ms": statistics.median(times), "p95_ms": times[int(0.95 * (len(times) - 1))], "n": len(times)}


def main() -> None:
    args = parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    log = logging.getLogger("bench")
    sys.path.insert(0, str(REPO))
    from saerad.datasets import load_dataset
    from saerad.encoders.store import EmbeddingSet
    from saerad.eval.baselines import NORMAL_TEMPLATE

    torch.set_num_threads(args.threads)
    studies = load_dataset("covid-cxr", args.root)
    emb = EmbeddingSet.load(find_embeddings(args))
    fold_of = patient_folds(studies, args.folds, args.seed)
    t0 = time.perf_counter()
    folds = [run_fold(k, studies, emb, fold_of, args, log) for k in range(args.folds)]
    cv_seconds = time.perf_counter() - t0
    refs = [r for f in folds for r in f["refs"]]
    systems = {
        "SAE reports (deterministic composer)": [p for f in folds for p in f["sae"]],
        "normal template": [NORMAL_TEMPLATE] * len(refs),
        "retrieval (nearest class token)": [p for f in folds for p in f["retrieval"]],
    }
    results = {name: score(preds, refs) for name, preds in systems.items()}
    feats = {k: sum(f["features"][k] for f in folds) for k in folds[0]["features"]}
    n_active = float(np.mean([x for f in folds for x in f["n_active"]]))
    n_used = float(np.mean([x for f in folds for x in f["n_used"]]))
    empty = float(np.mean([not p for p in systems["SAE reports (deterministic composer)"]]))
    images = [s.primary_image for s in studies if s.primary_image is not None]
    threads = [int(t) for t in str(args.latency_threads).split(",") if t.strip()]
    lat = {t: latency(args.bundle, images, args.latency_images, t) for t in threads}

    sae = results["SAE reports (deterministic composer)"]
    beats = all(sae["macro_f1"] > r["macro_f1"] for name, r in results.items() if not name.startswith("SAE"))
    print(f"\n## Report quality, covid-cxr ({args.folds}-fold patient-disjoint CV, {len(refs)} images with notes)\n")
    print("| system | CheXpert-rule micro F1-14 | CheXpert-rule macro F1-14 | BLEU-4 | ROUGE-L |")
    print("|---|---|---|---|---|")
    for name, r in results.items():
        print(f"| {name} | {r['micro_f1']:.3f} | {r['macro_f1']:.3f} | {r['bleu4']:.4f} | {r['rouge_l']:.3f} |")
    print("\n| measure | value | goal | status |")
    print("|---|---|---|---|")
    print(f"| SAE macro F1 beats both baselines | {sae['macro_f1']:.3f} vs "
          f"{max(r['macro_f1'] for n, r in results.items() if not n.startswith('SAE')):.3f} | > both | "
          f"{'PASS' if beats else 'MISS'} |")
    print(f"| mean active features per image | {n_active:.1f} | (SAE-Rad: ~15) | - |")
    print(f"| mean features used in findings per image | {n_used:.1f} | - | - |")
    print(f"| SAE reports with no findings | {empty:.1%} | - | - |")
    print(f"| described features scored above chance (AUROC > 0.5) | {feats['above_chance']}/{feats['scored']} scored"
          f" ({feats['above_chance'] / max(1, feats['scored']):.1%}); {feats['described']} described of "
          f"{feats['alive']} alive, {feats['d_sae']} total | - | - |")
    print(f"| usable features (score >= the dictionary's bar) | {feats['usable']}/{feats['d_sae']} | - | - |")
    for t, row in lat.items():
        if row is None:
            why = "not measured (--latency-images 0)" if args.latency_images <= 0 else f"no bundle at {args.bundle}"
            print(f"| report latency p50, 1 image, {t} thread(s) | {why} | <= 300 ms | - |")
        else:
            status = "PASS" if row["p50_ms"] <= GOAL_LATENCY_MS else "MISS"
            print(f"| report latency p50 (p95), 1 image, {t} torch thread(s), n={row['n']} | {row['p50_ms']:.0f} ms "
                  f"({row['p95_ms']:.0f} ms) | <= 300 ms | {status} |")
    print(f"\nmachine load average during the run: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    print(f"\nexpansion x{folds[0]['expansion']}, {folds[0]['steps']} SAE steps per fold, describer options "
          f"{describer_options(args) or 'default'}, {'all described' if args.include_unusable else 'usable'} features; CV took {cv_seconds:.0f} s; latency bundle {args.bundle}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "results": results, "features": feats, "mean_active": n_active, "mean_used": n_used,
        "empty_share": empty, "latency": lat, "folds": args.folds, "n": len(refs),
        "expansion": folds[0]["expansion"], "steps": folds[0]["steps"], "cv_seconds": cv_seconds,
        "describer_options": describer_options(args), "include_unusable": args.include_unusable,
        "val_fraction": args.val_fraction,
    }, indent=2))


if __name__ == "__main__":
    main()
