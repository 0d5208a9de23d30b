"""Report quality on nih-cxr14: SAE reports vs normal template vs retrieval vs a supervised probe.

Protocol (issue "Findings that hold up")
- Data: ``../shared/data/nih-cxr14`` (dev part). References are label-derived: one sentence per NIH
  label, mapped to the CheXpert conditions (:mod:`saerad.datasets.nih_cxr14`).
- Patient-disjoint K-fold cross-validation (patients shuffled with --seed, fold = rank mod K). For
  each fold ``saerad build`` itself runs with that fold's patients as the test set
  (:func:`saerad.datasets.split.fold_policy`): SAE and feature statistics on the training
  patients, descriptions scored on the held-out patients, finding rules fitted and cross-validated
  over both (:mod:`saerad.features.rules`), from the class tokens in --embeddings. Every test image
  then gets
  - SAE: the findings text of ``Reporter.report_tokens`` on that fold's bundle (the product path);
  - normal template: one fixed normal findings text;
  - retrieval: the reference text of the most cosine-similar training image of another patient;
  - probe (the supervised anchor): per condition a logistic regression on the raw class tokens of
    the training images (class-balanced, threshold of best out-of-fold F1 on the training
    patients), predicting each condition independently; scored from its labels, not from text.
- Metrics over all images (each predicted once, by the fold that held it out): CheXpert-rule F1
  (uncertain as positive) per condition, macro over the conditions with >= 20 positives plus No
  Finding; the share of abnormal images whose report has a finding sentence and of "No Finding"
  images whose report is the normal statement; per-condition F1 within the ``Pneumonia`` source
  folder (the confound control of the dataset's README).
- The finding rules and usable features of --bundle (the shipped one by default): condition,
  out-of-fold AUROC, positives, voters.
- Latency: ``Reporter.report(path)`` on one image at a time after one warm-up, for each torch
  thread count of --latency-threads, over --latency-images held-out images.

Run: ``OMP_NUM_THREADS=1 python bench/bench_report_quality.py --embeddings runs/nih-cxr14/embeddings.safetensors``
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
GOAL_LATENCY_MS = 300.0
GOAL_SHARE = 0.70
GOAL_MARGIN = 0.05
GOAL_PROBE_FRACTION = 0.90


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--root", type=Path, default=REPO.parent / "shared" / "data" / "nih-cxr14")
    p.add_argument("--embeddings", type=Path, required=True, help="class tokens of the nih-cxr14 images (saerad embed)")
    p.add_argument("--bundle", type=Path, default=None, help="bundle for the rule table and latency (default: embedded)")
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--work", type=Path, default=REPO / "runs" / "bench" / "report-cv", help="fold bundles (resumable)")
    p.add_argument("--arch", default=None, help="SAE architecture of the fold builds (default: the product's)")
    p.add_argument("--target-l0", type=float, default=None, help="SAE target L0 of the fold builds (default: the product's)")
    p.add_argument("--threads", type=int, default=1, help="torch threads for the CV part")
    p.add_argument("--latency-threads", default="2,1", help="comma-separated torch thread counts to time")
    p.add_argument("--latency-images", type=int, default=40)
    p.add_argument("--out", type=Path, default=REPO / "runs" / "bench" / "report_quality.json")
    return p.parse_args()


def run_fold(
    fold: int, folds: dict, studies, emb, *, root: Path, embeddings: Path, work: Path, **build_options
) -> dict[str, dict[str, str]]:
    """Build the fold's bundle (``work/fold<k>``) with the product's build and report its test images.

    ``build_options``: other :class:`saerad.build.BuildConfig` fields (the frontier benchmark sets the
    SAE architecture and target L0); everything else is the product default.
    """
    from saerad.build import BuildConfig, build
    from saerad.datasets.split import fold_policy, partition
    from saerad.eval.baselines import NORMAL_TEMPLATE
    from saerad.pipeline import Reporter

    policy = fold_policy(folds, fold)
    out = work / f"fold{fold}"
    build(BuildConfig(dataset="nih-cxr14", root=root, out=out, embeddings=embeddings, policy=policy,
                      include_report_text=False, progress=False, name=f"cv-fold{fold}", **build_options))
    parts = partition(studies, policy)
    test = parts.test
    reporter = Reporter.from_bundle(out, device="cpu")
    reports = reporter.report_tokens(emb.select([s.primary_image_id for s in test]).tokens)
    retrieved = retrieval_fold(parts, emb)
    return {
        s.study_id: {"sae": r.findings_text(), "status": r.status, "normal-template": NORMAL_TEMPLATE,
                     "retrieval": retrieved[s.study_id]}
        for s, r in zip(test, reports, strict=True)
    }


def retrieval_fold(parts, emb) -> dict[str, str]:
    """The retrieval baseline on one fold: each test image gets the report of its nearest fitting image."""
    from saerad.eval.baselines import retrieval_reports

    test, pool = parts.test, parts.fitting()
    texts, _ = retrieval_reports(
        [s.primary_image_id for s in test], [s.patient_id for s in test],
        [s.primary_image_id for s in pool], [s.patient_id for s in pool], [s.findings for s in pool], emb,
    )
    return {s.study_id: text for s, text in zip(test, texts, strict=True)}


def probe_fold(fold: int, folds: dict, studies, emb) -> dict[str, np.ndarray]:
    """The supervised anchor: per-condition logistic probes on the raw tokens of the fold's training images."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GroupKFold

    from saerad.datasets.split import fold_policy, partition
    from saerad.features.rules import best_f1_threshold
    from saerad.radtext.conditions import CONDITIONS
    from saerad.radtext.labeler import label_reports

    parts = partition(studies, fold_policy(folds, fold))
    train, test = parts.fitting(), parts.test
    x = emb.select([s.primary_image_id for s in train]).tokens.numpy()
    x_test = emb.select([s.primary_image_id for s in test]).tokens.numpy()
    y_all = label_reports([s.findings for s in train])
    groups = np.array([s.patient_id for s in train])
    out = np.zeros((len(test), len(CONDITIONS)))
    for j in range(len(CONDITIONS)):
        y = np.isin(y_all[:, j], (1, -1))
        if y.sum() < 10 or (~y).sum() < 10:
            continue
        make = lambda: LogisticRegression(C=0.1, class_weight="balanced", max_iter=3000)  # noqa: E731
        oof = np.zeros(len(y))
        for tr, te in GroupKFold(3).split(x, y, groups):
            oof[te] = make().fit(x[tr], y[tr]).decision_function(x[te])
        out[:, j] = make().fit(x, y).decision_function(x_test) >= best_f1_threshold(oof, y)
    return {s.study_id: out[i] for i, s in enumerate(test)}


def f1_per_condition(ref: np.ndarray, pred: np.ndarray) -> np.ndarray:
    ref, pred = np.isin(ref, (1, -1)), np.isin(pred, (1, -1))
    tp = (ref & pred).sum(0)
    denom = ref.sum(0) + pred.sum(0)
    return np.where(denom > 0, 2 * tp / np.maximum(denom, 1), 0.0)


def macro_f1(ref: np.ndarray, pred: np.ndarray, conditions: list[str]) -> float:
    """Macro CheXpert-rule F1 over ``conditions`` (labels as ``label_reports`` gives them)."""
    from saerad.radtext.conditions import CONDITIONS

    return float(f1_per_condition(ref, pred)[[CONDITIONS.index(c) for c in conditions]].mean())


def latency(bundle: Path | None, images: list[Path], threads: list[int]) -> dict[int, float]:
    from saerad.pipeline import Reporter

    out = {}
    for n in threads:
        torch.set_num_threads(n)
        reporter = Reporter.from_bundle(bundle, device="cpu")
        reporter.report(images[0])
        times = []
        for path in images:
            t0 = time.perf_counter()
            reporter.report(path)
            times.append((time.perf_counter() - t0) * 1000)
        out[n] = statistics.median(times)
    return out


def main() -> None:
    args = parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(args.threads)
    from saerad.bundle import Bundle
    from saerad.datasets import load_dataset
    from saerad.datasets.split import cv_folds
    from saerad.encoders.store import EmbeddingSet
    from saerad.eval.evaluate import has_finding, reported_conditions
    from saerad.radtext.conditions import CONDITIONS, NO_FINDING
    from saerad.radtext.labeler import label_reports

    if not args.root.is_dir():
        sys.exit(f"nih-cxr14 not found at {args.root}")
    studies = load_dataset("nih-cxr14", args.root)
    emb = EmbeddingSet.load(args.embeddings).originals()
    folds = cv_folds([s.patient_id for s in studies], args.folds, args.seed)
    rows: dict[str, dict] = {}
    probe: dict[str, np.ndarray] = {}
    for fold in range(args.folds):
        t0 = time.perf_counter()
        sae_options = {"sae_architecture": args.arch, "sae_target_l0": args.target_l0}
        rows.update(run_fold(fold, folds, studies, emb, root=args.root, embeddings=args.embeddings, work=args.work,
                             **{k: v for k, v in sae_options.items() if v is not None}))
        probe.update(probe_fold(fold, folds, studies, emb))
        print(f"fold {fold}: {time.perf_counter() - t0:.0f} s", flush=True)

    ids = [s.study_id for s in studies]
    by_id = {s.study_id: s for s in studies}
    ref = label_reports([by_id[i].findings for i in ids])
    systems = {name: label_reports([rows[i][name] for i in ids]) for name in ("sae", "normal-template", "retrieval")}
    systems["probe"] = np.stack([probe[i] for i in ids])
    reported = reported_conditions(ref)
    cols = [CONDITIONS.index(c) for c in reported]
    in_folder = np.array([by_id[i].extra.get("source_folder") == "Pneumonia" for i in ids])
    nf = CONDITIONS.index(NO_FINDING)
    normal_images = ref[:, nf] == 1
    result: dict = {"conditions": reported, "n_images": len(ids), "folds": args.folds, "systems": {}}
    print(f"\n{len(ids)} images, {args.folds}-fold patient CV; CheXpert-rule F1 (uncertain = positive)\n")
    print("| system | macro | " + " | ".join(reported) + " | with finding | Edema (PF) | Effusion (PF) |")
    print("|---" * (len(reported) + 5) + "|")
    for name, pred in systems.items():
        per = f1_per_condition(ref, pred)
        within = f1_per_condition(ref[in_folder], pred[in_folder])
        entry = {
            "macro": macro_f1(ref, pred, reported),
            "per_condition": {c: float(per[CONDITIONS.index(c)]) for c in reported},
            "within_pneumonia_folder": {c: float(within[CONDITIONS.index(c)]) for c in CONDITIONS
                                        if ref[in_folder][:, CONDITIONS.index(c)].any()},
            "share_with_finding": float(has_finding(pred).mean()),
        }
        result["systems"][name] = entry
        print(f"| {name} | {entry['macro']:.3f} | " + " | ".join(f"{per[j]:.3f}" for j in cols)
              + f" | {entry['share_with_finding']:.2f} | {within[CONDITIONS.index('Edema')]:.3f}"
              f" | {within[CONDITIONS.index('Pleural Effusion')]:.3f} |")

    status = np.array([rows[i]["status"] for i in ids])
    abnormal_share = float(has_finding(systems["sae"])[~normal_images].mean())
    normal_share = float((status[normal_images] == "normal").mean())
    sae, tmpl, retr, prb = (result["systems"][n]["macro"] for n in ("sae", "normal-template", "retrieval", "probe"))
    wf = {n: result["systems"][n]["within_pneumonia_folder"] for n in ("sae", "retrieval")}
    checks = {
        "abnormal images with >= 1 finding sentence": (abnormal_share, abnormal_share >= GOAL_SHARE, ">= 0.70"),
        "No Finding images with the normal statement": (normal_share, normal_share >= GOAL_SHARE, ">= 0.70"),
        "SAE macro - max(template, retrieval)": (sae - max(tmpl, retr), sae - max(tmpl, retr) >= GOAL_MARGIN, ">= 0.05"),
        "SAE macro / probe macro": (sae / prb if prb else 0.0, prb > 0 and sae >= GOAL_PROBE_FRACTION * prb, ">= 0.90"),
        "within Pneumonia folder: Edema F1 SAE - retrieval": (
            wf["sae"]["Edema"] - wf["retrieval"]["Edema"], wf["sae"]["Edema"] > wf["retrieval"]["Edema"], "> 0"),
        "within Pneumonia folder: Effusion F1 SAE - retrieval": (
            wf["sae"]["Pleural Effusion"] - wf["retrieval"]["Pleural Effusion"],
            wf["sae"]["Pleural Effusion"] > wf["retrieval"]["Pleural Effusion"], "> 0"),
    }
    print("\n| check | measured | goal | |\n|---|---|---|---|")
    for name, (value, ok, goal) in checks.items():
        print(f"| {name} | {value:.3f} | {goal} | {'PASS' if ok else 'MISS'} |")
    result["checks"] = {k: {"value": v, "pass": ok, "goal": g} for k, (v, ok, g) in checks.items()}

    bundle = Bundle.load(args.bundle)
    print(f"\nFinding rules of bundle {bundle.manifest.name} v{bundle.manifest.version}:\n")
    print("| condition | usable | out-of-fold AUROC | positives | voters |\n|---|---|---|---|---|")
    for r in bundle.dictionary.rules:
        auc = "-" if r.held_out_auroc is None else f"{r.held_out_auroc:.3f}"
        print(f"| {r.condition} | {'yes' if r.usable else 'no'} | {auc} | {r.positives} | {len(r.weights)} |")
    from saerad.report.select import FeatureSelector

    selector = FeatureSelector.from_parts(bundle.dictionary, bundle.sae)
    usable = [f for f in bundle.dictionary.features if f.usable and f.description]
    alone = [f for f in usable if selector.speaks_alone[f.id]]
    print(f"\n{len(usable)} usable single-feature descriptions; {len(usable) - len(alone)} state a condition "
          f"that has a usable rule (they vote there), {len(alone)} speak alone:")
    for f in alone:
        print(f"  #{f.id}: {f.description} (held-out AUROC {f.description_score})")

    from saerad.datasets.split import partition

    test_images = [s.primary_image for s in partition(studies).test[: args.latency_images]]  # unseen by the bundle
    lat = latency(args.bundle, test_images, [int(t) for t in args.latency_threads.split(",")])
    for n, ms in lat.items():
        print(f"latency p50, {n} torch thread(s): {ms:.0f} ms ({'PASS' if ms <= GOAL_LATENCY_MS else 'MISS'} <= 300 ms)")
    result["latency_p50_ms"] = lat
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
