"""Localisation on radiologist boxes: the pointing game and box IoU (nih-cxr14, ``boxes.csv``).

For every (image, finding) with a radiologist box, the map of the report sentence that states the
finding is scored; when the report has no such sentence, the map of the SAE features that best track
the finding (the top ``--tracking`` features by AUROC against the NIH labels, chosen on images of
patients WITHOUT any box, so the chosen features never saw the test images' labels). The route taken
is counted in the table.

- hit (pointing game, Zhang et al. 2016): the map's maximum lies inside a box of that finding;
- IoU: union of the predicted boxes vs union of the truth boxes, on a 256 x 256 grid; "best box" is
  the largest IoU of any one predicted box with any one truth box;
- prior: a fixed map, the mean of all truth boxes of the OTHER images (leave-one-image-out, so it
  never sees the image's own box): a method that only knows where findings usually are scores this;
- prior in body: the same map restricted to the image's body mask (it knows where this patient is);
- chance in body: the expected hit rate of a uniformly random point in the body mask.

Methods: the attribution variants of :mod:`saerad.localize.attribution` and ``counterfactual``
(the bundle's diffusion model, or ``--diffusion DIR``). One image's trials share one call, as in a
report. Hit rates come with Wilson 95% intervals: with ~25 boxes, differences under ~0.2 are noise.

    OMP_NUM_THREADS=1 python bench/bench_localization.py --bundle runs/bundles/nih \\
        --embeddings runs/bundles/nih.work/embeddings.safetensors --diffusion runs/diffusion/nih-128/diffusion
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see bench_intervention.py: spinning threads thrash

import numpy as np  # noqa: E402
import torch  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("SAERAD_SHARED_DATA", REPO.parent / "shared" / "data"))
GRID = 256
ATTRIBUTION_VARIANTS = ("token_gradient", "gradient_x_input", "integrated_gradients", "occlusion")


def box_mask(boxes, shape=(GRID, GRID)) -> np.ndarray:
    mask = np.zeros(shape, dtype=bool)
    h, w = shape
    for b in boxes:
        x0, y0, x1, y1 = (b["x_min"], b["y_min"], b["x_max"], b["y_max"]) if isinstance(b, dict) else (
            b.x_min, b.y_min, b.x_max, b.y_max)
        mask[int(math.floor(y0 * h)) : int(math.ceil(y1 * h)), int(math.floor(x0 * w)) : int(math.ceil(x1 * w))] = True
    return mask


def inside(point, boxes) -> bool:
    return point is not None and any(b.x_min <= point[0] <= b.x_max and b.y_min <= point[1] <= b.y_max for b in boxes)


def iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 0.0


def wilson(hits: int, n: int, z: float = 1.96) -> tuple[float, float]:
    if n == 0:
        return (float("nan"), float("nan"))
    p = hits / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (centre - half, centre + half)


def tracking_features(bundle, embeddings, studies, boxed_patients: set[str], conditions, top: int) -> dict:
    """Condition -> the ``top`` features with the highest AUROC on images of unboxed patients."""
    from sklearn.metrics import roc_auc_score

    by_id = {s.image_ids[0]: s for s in studies}
    rows = [i for i, image_id in enumerate(embeddings.ids)
            if image_id in by_id and by_id[image_id].patient_id not in boxed_patients]
    with torch.no_grad():
        f = bundle.sae.encode(embeddings.tokens[rows]).numpy()
    out = {}
    for condition in conditions:
        y = np.array([by_id[embeddings.ids[i]].labels.get(condition, 0) for i in rows])
        if y.min() == y.max():
            out[condition] = {"features": [], "auroc": [], "positives": int(y.sum())}
            continue
        scores = np.array([roc_auc_score(y, f[:, j]) if f[:, j].max() > 0 else 0.5 for j in range(f.shape[1])])
        best = [int(j) for j in np.argsort(-scores)[:top]]
        out[condition] = {"features": best, "auroc": [round(float(scores[j]), 3) for j in best],
                          "positives": int(y.sum())}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bundle", required=True, help="bundle directory (SAE, dictionary, optional diffusion model)")
    ap.add_argument("--root", type=Path, default=SHARED / "nih-cxr14")
    ap.add_argument("--embeddings", type=Path, default=None,
                    help="class tokens of the dataset (saerad embed); else the images are encoded here")
    ap.add_argument("--diffusion", type=Path, default=None, help="diffusion model overriding the bundle's")
    ap.add_argument("--methods", nargs="+", default=[*ATTRIBUTION_VARIANTS, "counterfactual"],
                    choices=[*ATTRIBUTION_VARIANTS, "counterfactual"])
    ap.add_argument("--steps", type=int, default=50, help="DDIM steps of counterfactual maps")
    ap.add_argument("--tracking", type=int, default=3, help="features per finding when no sentence states it")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json-out", type=Path, default=None)
    args = ap.parse_args()

    from saerad.bundle import Bundle
    from saerad.datasets.nih_cxr14 import load_boxes, load_nih_cxr14
    from saerad.encoders.store import EmbeddingSet
    from saerad.heatmaps.body import body_mask
    from saerad.heatmaps.regions import peak
    from saerad.imaging import load_xray
    from saerad.localize.report import sentence_maps
    from saerad.pipeline import Reporter
    from saerad.radtext.labeler import label_report

    torch.set_num_threads(args.threads)
    truth = load_boxes(args.root)
    if not truth:
        raise SystemExit(f"no boxes.csv under {args.root}: nothing to score")
    studies = load_nih_cxr14(args.root)
    by_id = {s.image_ids[0]: s for s in studies}
    bundle = Bundle.load(args.bundle)
    reporter = Reporter.from_bundle(args.bundle)
    encoder = reporter.encoder
    if args.embeddings:
        embeddings = EmbeddingSet.load(args.embeddings)
    else:
        ids = [s.image_ids[0] for s in studies]
        embeddings = EmbeddingSet(ids=ids, tokens=encoder.encode_images([load_xray(s.image_paths[0]).pixels
                                                                         for s in studies]))
    boxed_patients = {by_id[i].patient_id for i in truth}
    conditions = sorted({b.condition or b.finding for bs in truth.values() for b in bs})
    tracking = tracking_features(bundle, embeddings, studies, boxed_patients, conditions, args.tracking)

    # Trials: (image, condition) with that condition's boxes; the features each is localised with.
    trials, images = [], {}
    for image_id, boxes in sorted(truth.items()):
        xray = load_xray(by_id[image_id].image_paths[0])
        token = encoder.encode_images([xray.pixels])[0]
        report = reporter.report(xray)
        images[image_id] = (xray, token)
        for condition in sorted({b.condition or b.finding for b in boxes}):
            stated = [s for s in report.findings if label_report(s.text).get(condition) == 1]
            features = sorted({f.id for s in stated for f in s.features if f.activation > 0})
            route = "sentence" if features else "tracking"
            if not features:
                features = tracking[condition]["features"]
            trials.append({"image": image_id, "condition": condition, "route": route, "features": features,
                           "boxes": [b for b in boxes if (b.condition or b.finding) == condition]})
    trials = [t for t in trials if t["features"]]

    # Baselines: leave-one-image-out prior, the same inside the body, chance inside the body.
    masks = {i: box_mask(bs) for i, bs in truth.items()}
    bodies = {i: body_mask(images[i][0].pixels, (GRID, GRID)) for i in truth}
    baseline_hits = {"prior": [], "prior in body": [], "chance in body": []}
    for t in trials:
        prior = np.mean([m.astype(np.float32) for i, m in masks.items() if i != t["image"]], axis=0)
        baseline_hits["prior"].append(inside(peak(prior), t["boxes"]))
        baseline_hits["prior in body"].append(inside(peak(np.where(bodies[t["image"]], prior, 0)), t["boxes"]))
        body = bodies[t["image"]]
        baseline_hits["chance in body"].append(float((box_mask(t["boxes"]) & body).sum() / max(body.sum(), 1)))

    rows, per_trial = [], {}
    for method in args.methods:
        kind = "counterfactual" if method == "counterfactual" else "attribution"
        if kind == "counterfactual" and args.diffusion is None and bundle.diffusion_dir is None:
            rows.append((method, None))
            continue
        hits, ious, best_ious, seconds = [], [], [], []
        results = []
        for image_id in sorted({t["image"] for t in trials}):
            mine = [t for t in trials if t["image"] == image_id]
            xray, token = images[image_id]
            t0 = time.perf_counter()
            if kind == "counterfactual" and args.diffusion is not None:
                from saerad.localize.counterfactual import counterfactual_maps

                found, _ = counterfactual_maps(bundle, encoder, xray.pixels, token, [t["features"] for t in mine],
                                               steps=args.steps, diffusion_dir=args.diffusion)
            else:
                found, _ = sentence_maps(bundle, encoder, xray, token, [t["features"] for t in mine], method=kind,
                                         steps=args.steps, attribution=method if kind == "attribution" else None)
            seconds.append(time.perf_counter() - t0)
            for t, m in zip(mine, found):
                point = peak(m.heat)
                hit = inside(point, t["boxes"])
                truth_mask = box_mask(t["boxes"])
                predicted = box_mask(m.boxes)
                best = max((iou(box_mask([p]), box_mask([b])) for p in m.boxes for b in t["boxes"]), default=0.0)
                hits.append(hit)
                ious.append(iou(predicted, truth_mask))
                best_ious.append(best)
                results.append({"image": image_id, "condition": t["condition"], "route": t["route"],
                                "features": t["features"], "peak": point, "hit": hit, "iou": ious[-1],
                                "best_box_iou": best, "boxes": m.boxes})
        per_trial[method] = results
        rows.append((method, {"hits": int(sum(hits)), "n": len(hits), "iou": float(np.mean(ious)),
                              "best_iou": float(np.mean(best_ious)), "s_per_image": statistics.median(seconds)}))

    n = len(trials)
    routes = {r: sum(t["route"] == r for t in trials) for r in ("sentence", "tracking")}
    print(f"\nbundle {args.bundle}; {n} (image, finding) trials on {len(truth)} images "
          f"({routes['sentence']} from a report sentence, {routes['tracking']} from tracking features); "
          f"{torch.get_num_threads()} torch thread(s)")
    print("tracking features (AUROC on unboxed patients):",
          "; ".join(f"{c}: {v['features']} {v['auroc']}" for c, v in tracking.items()))
    print()
    print("| map | pointing-game hits | hit rate (95% CI) | mean IoU | mean best-box IoU | s / image |")
    print("|---|---|---|---|---|---|")
    for name, values in baseline_hits.items():
        rate = float(np.mean(values))
        if name == "chance in body":
            print(f"| {name} (expected) | - | {rate:.2f} | - | - | - |")
        else:
            lo, hi = wilson(int(sum(values)), n)
            print(f"| {name} | {int(sum(values))}/{n} | {rate:.2f} ({lo:.2f}-{hi:.2f}) | - | - | - |")
    for method, r in rows:
        if r is None:
            print(f"| {method} | no diffusion model | - | - | - | - |")
            continue
        lo, hi = wilson(r["hits"], r["n"])
        print(f"| {method} | {r['hits']}/{r['n']} | {r['hits'] / r['n']:.2f} ({lo:.2f}-{hi:.2f}) | {r['iou']:.3f} | "
              f"{r['best_iou']:.3f} | {r['s_per_image']:.1f} |")
    if args.json_out:
        payload = {"bundle": str(args.bundle), "trials": n, "routes": routes, "tracking": tracking,
                   "baselines": {k: float(np.mean(v)) for k, v in baseline_hits.items()},
                   "methods": {m: r for m, r in rows}, "per_trial": per_trial}
        args.json_out.write_text(json.dumps(payload, indent=2, default=float), encoding="utf-8")


if __name__ == "__main__":
    main()
