"""SAE architectures at the frontier: held-out EV, dead latents and report F1 against L0.

Protocol (issue "Sparse autoencoders at the frontier")
- Architectures: every one registered in ``saerad.sae.architectures`` (or --archs); L0 points --l0
  (default 8 16 32 64): the target L0 of ``saerad build`` (BatchTopK and Matryoshka: their k;
  gated and JumpReLU: the aim of the lambda controller). Everything else is the product default
  (``saerad.sae.run.default_train_config``; the automatic width gives 192 latents at d = 384).
- nih-cxr14: K-fold patient cross-validation (--folds, default 3; the report benchmark uses 5) with
  ``bench_report_quality.run_fold``: per fold, ``saerad build`` on the other folds' patients (SAE and
  statistics on its training patients, descriptions scored and the SAE measured on its held-out
  patients, finding rules), then ``Reporter.report_tokens`` on the fold's images. Per point: macro
  CheXpert-rule F1 over all images (each reported by the fold that held it out; the conditions with
  >= 20 positives plus No Finding, as in bench_report_quality), the per-fold spread, and from each
  fold's bundle the SAE's held-out explained variance, L0 and dead fraction, the share of usable
  features (described, alive, held-out score above chance) and the usable finding rules. Retrieval
  and the supervised probe on the same folds are the reference lines.
- covid-cxr: one patient-disjoint split (``saerad.datasets.split.partition``: train / held-out);
  ``train_sae`` with the same defaults; EV, L0 and dead fraction on the held-out patients. Its notes
  do not name what the images show, so it gets no report F1.
- Output: a markdown table, --out (JSON, written after every point) and --plot (PNG: EV and F1
  against the measured held-out L0, one line per architecture). Fold bundles and covid runs are
  kept under --work: a rerun skips what is current (an interrupted sweep resumes where it stopped).

Cost: about one CPU minute per fold build (6,000 SAE steps), so the default sweep (4 x 4 points, 3
folds, plus covid-cxr) takes about an hour on one core.

Run: ``OMP_NUM_THREADS=1 python bench/bench_sae_frontier.py --nih-embeddings runs/nih-cxr14/embeddings.safetensors
--covid-embeddings runs/covid-cxr/embeddings.safetensors``
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
from typing import Any

import numpy as np
import torch
from bench_report_quality import REPO, macro_f1, probe_fold, retrieval_fold, run_fold

DATA = Path(os.environ.get("SAERAD_SHARED_DATA", REPO.parent / "shared" / "data"))


def parse_args() -> argparse.Namespace:
    from saerad.sae.architectures import ARCHITECTURES

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--nih-root", type=Path, default=DATA / "nih-cxr14")
    p.add_argument("--covid-root", type=Path, default=DATA / "covid-cxr")
    p.add_argument("--nih-embeddings", type=Path, required=True, help="saerad embed output of nih-cxr14")
    p.add_argument("--covid-embeddings", type=Path, default=None, help="saerad embed output of covid-cxr (none: skip)")
    p.add_argument("--archs", nargs="+", default=list(ARCHITECTURES), choices=list(ARCHITECTURES))
    p.add_argument("--l0", nargs="+", type=float, default=[8.0, 16.0, 32.0, 64.0], help="target L0 points")
    p.add_argument("--folds", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--work", type=Path, default=REPO / "runs" / "bench" / "frontier")
    p.add_argument("--out", type=Path, default=REPO / "runs" / "bench" / "sae_frontier.json")
    p.add_argument("--plot", type=Path, default=REPO / "docs" / "sae-frontier.png")
    return p.parse_args()


def point_name(arch: str, l0: float) -> str:
    return f"{arch}-l0-{l0:g}"


# ---------------------------------------------------------------------------------------- nih-cxr14
def nih_point(arch: str, l0: float, studies, emb, folds: dict, n_folds: int, args) -> dict[str, Any]:
    """Report F1 and SAE/dictionary numbers of one (architecture, L0) point over the CV folds."""
    from saerad.bundle import Bundle
    from saerad.radtext.labeler import label_reports

    work = args.work / "nih" / point_name(arch, l0)
    texts: dict[str, str] = {}
    per_fold = []
    for fold in range(n_folds):
        rows = run_fold(fold, folds, studies, emb, root=args.nih_root, embeddings=args.nih_embeddings, work=work,
                        sae_architecture=arch, sae_target_l0=l0)
        texts.update({k: v["sae"] for k, v in rows.items()})
        bundle = Bundle.load(work / f"fold{fold}")
        sae_run = json.loads((work / f"fold{fold}.work" / "sae" / "metrics.json").read_text())  # the build's SAE stage
        held = sae_run["held_out"]
        features = bundle.dictionary.features
        per_fold.append({
            "study_ids": sorted(rows),
            "explained_variance": held["explained_variance"], "l0": held["l0"], "dead_fraction": held["dead_fraction"],
            "train_dead_fraction": sae_run["train"]["dead_fraction"],
            "usable_features": sum(bool(f.usable and f.description) for f in features) / len(features),
            "usable_rules": sum(r.usable for r in bundle.dictionary.rules),
        })
    ids = [s.study_id for s in studies]
    by_id = {s.study_id: s for s in studies}
    ref = label_reports([by_id[i].findings for i in ids])
    pred = label_reports([texts[i] for i in ids])
    fold_f1 = []
    for entry in per_fold:
        rows = [ids.index(i) for i in entry.pop("study_ids")]
        fold_f1.append(macro_f1(ref[rows], pred[rows], args.conditions))
    return {
        "macro_f1": macro_f1(ref, pred, args.conditions),
        "fold_macro_f1": fold_f1,
        "folds": per_fold,
        **{key: statistics.fmean(f[key] for f in per_fold)
           for key in ("explained_variance", "l0", "dead_fraction", "train_dead_fraction", "usable_features",
                       "usable_rules")},
    }


def baselines(studies, emb, folds: dict, n_folds: int, args) -> dict[str, float]:
    """Retrieval and the supervised probe on the same folds (they do not depend on the SAE)."""
    from saerad.datasets.split import fold_policy, partition
    from saerad.radtext.labeler import label_reports

    ids = [s.study_id for s in studies]
    by_id = {s.study_id: s for s in studies}
    retrieved, probe = {}, {}
    for fold in range(n_folds):
        retrieved.update(retrieval_fold(partition(studies, fold_policy(folds, fold)), emb))
        probe.update(probe_fold(fold, folds, studies, emb))
    ref = label_reports([by_id[i].findings for i in ids])
    return {
        "retrieval": macro_f1(ref, label_reports([retrieved[i] for i in ids]), args.conditions),
        "probe": macro_f1(ref, np.stack([probe[i] for i in ids]), args.conditions),
    }


# ---------------------------------------------------------------------------------------- covid-cxr
def covid_point(arch: str, l0: float, args) -> dict[str, Any]:
    from saerad.datasets import load_dataset
    from saerad.datasets.split import HELD_OUT, TRAIN, partition, vector_rows
    from saerad.encoders.store import EmbeddingSet
    from saerad.sae.run import default_train_config, train_sae

    studies = [s for s in load_dataset("covid-cxr", args.covid_root) if s.image_paths]
    split = partition(studies)
    emb = EmbeddingSet.load(args.covid_embeddings)
    rows = vector_rows(emb.ids, split.role_of_image())
    train = emb.tokens[rows[TRAIN]]
    cfg = default_train_config(len(train), architecture=arch, target_l0=l0)
    _, metrics = train_sae(train, emb.tokens[rows[HELD_OUT]], args.work / "covid" / point_name(arch, l0),
                           n_images=sum(len(s.image_ids) for s in split.train), cfg=cfg, progress=False)
    held = metrics["held_out"]
    return {key: held[key] for key in ("explained_variance", "l0", "dead_fraction")} | {
        "train_dead_fraction": metrics["train"]["dead_fraction"], "vectors": metrics["vectors"]}


# ---------------------------------------------------------------------------------------- the plot
COLOURS = {"gated": (31, 119, 180), "batchtopk": (214, 39, 40), "jumprelu": (44, 160, 44), "matryoshka": (148, 103, 189)}


def plot_png(path: Path, panels: list[dict[str, Any]]) -> None:
    """Line panels drawn with Pillow (no plotting library in the dependencies): each panel has a
    title, axis labels, ``series`` {name: [(x, y), ...]} on a log2 x axis, optional ``hlines``."""
    from PIL import Image, ImageDraw

    cols, scale = 2, 2  # drawn at twice the size, then downsampled: smooth lines
    pw, ph = 620, 440
    rows = (len(panels) + cols - 1) // cols
    img = Image.new("RGB", (cols * pw * scale, rows * ph * scale), "white")
    draw = ImageDraw.Draw(img)
    for n, panel in enumerate(panels):
        ox, oy = (n % cols) * pw * scale, (n // cols) * ph * scale
        _draw_panel(draw, panel, (ox, oy, ox + pw * scale, oy + ph * scale), scale)
    img = img.resize((cols * pw, rows * ph), Image.LANCZOS)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, optimize=True)


def _draw_panel(draw, panel: dict[str, Any], box: tuple[int, int, int, int], scale: int) -> None:
    from PIL import ImageFont

    font, small = ImageFont.load_default(size=15 * scale), ImageFont.load_default(size=13 * scale)
    ox, oy, ex, ey = box
    left, right, top, bottom = ox + 80 * scale, ex - 20 * scale, oy + 62 * scale, ey - 60 * scale
    xs = [x for s in panel["series"].values() for x, _ in s]
    ys = [y for s in panel["series"].values() for _, y in s] + list(panel.get("hlines", {}).values())
    x0, x1 = np.log2(min(xs)) - 0.2, np.log2(max(xs)) + 0.2
    pad = 0.08 * ((max(ys) - min(ys)) or 1.0)
    y0, y1 = min(ys) - pad, max(ys) + pad

    def to_px(x: float, y: float) -> tuple[float, float]:
        return (left + (np.log2(x) - x0) / (x1 - x0) * (right - left), bottom - (y - y0) / (y1 - y0) * (bottom - top))

    draw.text(((ox + ex) / 2, oy + 12 * scale), panel["title"], fill="black", font=font, anchor="mt")
    for tick in np.linspace(y0 + pad, y1 - pad, 5):
        _, py = to_px(2.0 ** x0, tick)
        draw.line([left, py, right, py], fill=(230, 230, 230), width=scale)
        draw.line([left - 6 * scale, py, left, py], fill="black", width=scale)
        draw.text((left - 9 * scale, py), f"{tick:.2f}", fill="black", font=small, anchor="rm")
    for tick in 2.0 ** np.arange(np.ceil(x0), np.floor(x1) + 1):
        px, _ = to_px(tick, y0)
        draw.line([px, bottom, px, bottom + 6 * scale], fill="black", width=scale)
        draw.text((px, bottom + 9 * scale), f"{tick:g}", fill="black", font=small, anchor="mt")
    draw.rectangle([left, top, right, bottom], outline="black", width=scale)
    draw.text(((left + right) / 2, bottom + 30 * scale), panel["xlabel"], fill="black", font=small, anchor="mt")
    draw.text((ox + 8 * scale, (top + bottom) / 2), panel["ylabel"], fill="black", font=small, anchor="lm")
    for label, y in panel.get("hlines", {}).items():
        _, py = to_px(2.0 ** x0, y)
        for start in np.arange(left, right, 12 * scale):
            draw.line([start, py, min(start + 6 * scale, right), py], fill=(110, 110, 110), width=scale)
        draw.text((right - 4 * scale, py - 3 * scale), label, fill=(90, 90, 90), font=small, anchor="rd")
    legend_x = left
    for name, series in panel["series"].items():
        colour = COLOURS.get(name, (0, 0, 0))
        pts = [to_px(x, y) for x, y in sorted(series)]
        if len(pts) > 1:
            draw.line(pts, fill=colour, width=3 * scale, joint="curve")
        for px, py in pts:
            draw.ellipse([px - 5 * scale, py - 5 * scale, px + 5 * scale, py + 5 * scale], fill=colour)
        legend_y = top - 12 * scale  # one row between the title and the frame
        draw.line([legend_x, legend_y, legend_x + 24 * scale, legend_y], fill=colour, width=3 * scale)
        draw.text((legend_x + 30 * scale, legend_y), name, fill="black", font=small, anchor="lm")
        legend_x += 30 * scale + draw.textlength(name, font=small) + 22 * scale


def panels_of(result: dict[str, Any]) -> list[dict[str, Any]]:
    def series(dataset: str, key: str) -> dict[str, list[tuple[float, float]]]:
        out: dict[str, list[tuple[float, float]]] = {}
        for p in result["points"]:
            if dataset in p:
                out.setdefault(p["arch"], []).append((p[dataset]["l0"], p[dataset][key]))
        return out

    x = "active features per held-out image (L0, log scale)"
    panels = [{"title": "nih-cxr14: explained variance (held-out patients)", "xlabel": x, "ylabel": "EV",
               "series": series("nih", "explained_variance")}]
    if any("covid" in p for p in result["points"]):
        panels.append({"title": "covid-cxr: explained variance (held-out patients)", "xlabel": x, "ylabel": "EV",
                       "series": series("covid", "explained_variance")})
    panels.append({"title": f"nih-cxr14: report macro F1 ({result['folds']}-fold patient CV)", "xlabel": x,
                   "ylabel": "F1", "series": series("nih", "macro_f1"),
                   "hlines": {f"{k} {v:.3f}": v for k, v in result["baselines"].items()}})
    panels.append({"title": "nih-cxr14: share of usable features", "xlabel": x, "ylabel": "share",
                   "series": series("nih", "usable_features")})
    return panels


# ---------------------------------------------------------------------------------------- main
def table(result: dict[str, Any]) -> str:
    lines = ["| architecture | target L0 | nih L0 | nih EV | nih dead | covid L0 | covid EV | covid dead | macro F1 "
             "(folds) | usable features | usable rules |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for p in result["points"]:
        n, c = p["nih"], p.get("covid")
        cov = f"{c['l0']:.1f} | {c['explained_variance']:.3f} | {c['dead_fraction']:.3f}" if c else "- | - | -"
        spread = ", ".join(f"{f:.3f}" for f in n["fold_macro_f1"])
        lines.append(f"| {p['arch']} | {p['target_l0']:g} | {n['l0']:.1f} | {n['explained_variance']:.3f} | "
                     f"{n['dead_fraction']:.3f} | {cov} | **{n['macro_f1']:.3f}** ({spread}) | "
                     f"{n['usable_features']:.2f} | {n['usable_rules']:.1f} |")
    return "\n".join(lines)


def main() -> None:
    args = parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(1)
    from saerad.datasets import load_dataset
    from saerad.datasets.split import cv_folds
    from saerad.encoders.store import EmbeddingSet
    from saerad.eval.evaluate import reported_conditions
    from saerad.radtext.labeler import label_reports

    if not args.nih_root.is_dir():
        sys.exit(f"nih-cxr14 not found at {args.nih_root}")
    if args.covid_embeddings is not None and not args.covid_root.is_dir():
        sys.exit(f"covid-cxr not found at {args.covid_root}")
    studies = load_dataset("nih-cxr14", args.nih_root)
    emb = EmbeddingSet.load(args.nih_embeddings).originals()
    folds = cv_folds([s.patient_id for s in studies], args.folds, args.seed)
    args.conditions = reported_conditions(label_reports([s.findings for s in studies]))
    settings = {"folds": args.folds, "seed": args.seed, "l0": args.l0, "archs": args.archs}
    result: dict[str, Any] = {**settings, "images": len(studies), "conditions": args.conditions, "points": []}
    t0 = time.perf_counter()
    result["baselines"] = baselines(studies, emb, folds, args.folds, args)
    print(f"baselines on the same folds: {result['baselines']}", flush=True)
    for l0 in args.l0:
        for arch in args.archs:
            start = time.perf_counter()
            point = {"arch": arch, "target_l0": l0, "nih": nih_point(arch, l0, studies, emb, folds, args.folds, args)}
            if args.covid_embeddings is not None:
                point["covid"] = covid_point(arch, l0, args)
            point["seconds"] = round(time.perf_counter() - start, 1)
            result["points"].append(point)
            n = point["nih"]
            print(f"{arch} L0 {l0:g}: F1 {n['macro_f1']:.3f}, nih EV {n['explained_variance']:.3f} at L0 {n['l0']:.1f}, "
                  f"dead {n['dead_fraction']:.3f} ({point.get('seconds', 0):.0f} s)", flush=True)
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(result, indent=1))
    print(f"\n{len(studies)} nih-cxr14 images, {args.folds}-fold patient CV; held-out numbers are means over the "
          f"folds' held-out patients; covid-cxr: one patient-disjoint split ({time.perf_counter() - t0:.0f} s)\n")
    print(table(result))
    best = max(result["points"], key=lambda p: (round(p["nih"]["macro_f1"], 3), p["nih"]["explained_variance"]))
    print(f"\nbest report macro F1: {best['arch']} at target L0 {best['target_l0']:g} ({best['nih']['macro_f1']:.3f}); "
          f"retrieval {result['baselines']['retrieval']:.3f}, probe {result['baselines']['probe']:.3f}")
    plot_png(args.plot, panels_of(result))
    print(f"plot: {args.plot}")


if __name__ == "__main__":
    main()
